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


def test_the_command_table_names_what_each_module_registers():
    from quill.cli import COMMAND_MODULES, COMMANDS, build_app

    for module in COMMAND_MODULES:
        app = build_app([module])
        registered = {c.name or c.callback.__name__ for c in app.registered_commands}
        registered |= {g.name or g.typer_instance.info.name for g in app.registered_groups}
        assert registered == {name for name, owner in COMMANDS.items() if owner == module}


def test_a_command_imports_only_its_own_module():
    """`quill stage --help` loads the staging commands alone, and still runs as `stage` (a
    one-command app must not turn into that command)."""
    code = (
        "import sys; sys.argv = ['quill', 'stage', '--help']; from quill.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    print('EXIT', exit.code)\n"
        "print('CLIS', sorted(m for m in sys.modules if m.startswith('quill.') and "
        "m.endswith('.cli')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "quill stage" in out.stdout and "EXIT 0" in out.stdout
    assert "CLIS ['quill.cli', 'quill.staging.cli']" in out.stdout


def test_unknown_commands_and_bare_help_see_every_command():
    from typer.testing import CliRunner

    from quill.cli import COMMAND_MODULES, build_app, modules_for

    assert modules_for([]) == modules_for(["--help"]) == modules_for(["nosuch"]) == COMMAND_MODULES
    result = CliRunner().invoke(build_app(modules_for(["nosuch"])), ["nosuch"])
    assert result.exit_code == 2 and "No such command" in result.output
