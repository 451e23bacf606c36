"""quill.evaluation sits at the bottom: every layer may import it, so it imports no layer."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "quill" / "evaluation"
ALLOWED = ("quill.evaluation", "quill.vocab")


def test_evaluation_imports_only_itself_vocab_numpy_and_the_standard_library() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            found += [(path.name, name) for name in names]
    quill = [(file, name) for file, name in found if name.split(".")[0] == "quill"]
    assert all(name.startswith(ALLOWED) for _, name in quill), quill
    third_party = {name.split(".")[0] for _, name in found} - set(sys.stdlib_module_names)
    assert third_party <= {"numpy", "quill"}, third_party


def test_importing_it_loads_no_tensor_library() -> None:
    code = (
        "import sys, quill.evaluation; "
        "print(sorted(m for m in ('torch', 'torchmetrics', 'lightning') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
