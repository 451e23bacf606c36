"""Training sits below staging and everything after it: it never imports them.

The checkpoint format belongs to training (``quill.training.checkpoint``); staging reads it
from there. An import back up (even one inside a function, even one only for type checking)
would make a cycle between the layers again, so this test reads every module's syntax tree
rather than what happens to be imported at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import quill

TRAINING = Path(quill.__file__).parent / "training"
#: The layers to the right of training in DESIGN.md's flow.
ABOVE_TRAINING = (
    "quill.staging",
    "quill.inference",
    "quill.serving",
    "quill.monitoring",
    "quill.annotation",
    "quill.bench",
)


def imported_modules(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, dotted name) of every module ``path`` imports, anywhere in the file; for
    ``from X import Y`` both ``X`` and ``X.Y`` (Y may be a submodule); relative imports are
    resolved against ``package``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def is_above(module: str) -> bool:
    return any(module == layer or module.startswith(f"{layer}.") for layer in ABOVE_TRAINING)


def test_the_reader_sees_lazy_relative_and_from_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "import os\n"
        "def f():\n    from quill import staging\n"
        "from ..inference import recognizer\n"
        "from .checkpoint import load_checkpoint\n"
    )
    found = imported_modules(module, "quill.training")
    assert (3, "quill.staging") in found
    assert (4, "quill.inference.recognizer") in found
    assert (5, "quill.training.checkpoint") in found
    assert sorted(name for _, name in found if is_above(name)) == [
        "quill.inference",
        "quill.inference.recognizer",
        "quill.staging",
    ]


@pytest.mark.parametrize(
    "path", sorted(TRAINING.rglob("*.py")), ids=lambda p: str(p.relative_to(TRAINING))
)
def test_training_imports_no_layer_above_it(path: Path) -> None:
    package = "quill.training" + "".join(
        f".{part}" for part in path.relative_to(TRAINING).parent.parts
    )
    upward = [
        f"{path.relative_to(TRAINING.parent)}:{line} -> {name}"
        for line, name in imported_modules(path, package)
        if is_above(name)
    ]
    assert not upward, "training must not import the layers after it:\n" + "\n".join(upward)
