"""`quill --help` must stay instant: no layer may import heavy libraries at module level."""

import subprocess
import sys

HEAVY = ("torch", "lightning", "mlflow", "gradio", "onnxruntime", "optuna", "sqlalchemy")


def test_help_lists_commands_without_heavy_imports():
    code = (
        "import sys; from typer.testing import CliRunner; from quill.cli import app; "
        "result = CliRunner().invoke(app, ['--help']); print(result.output); "
        f"print('HEAVY:', [m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "data" in out.stdout
    assert "HEAVY: []" in out.stdout, out.stdout
