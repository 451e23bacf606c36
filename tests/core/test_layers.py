"""Every import between Quill's packages follows quill.layers.LAYERS.

The test reads every module's syntax tree rather than what happens to be imported at run
time, so an import inside a function or only for type checking counts as much as one at the
top. A failure names the file and line of each import that runs against the order.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import quill
from quill.layers import LAYERS, floor_of, may_import

SOURCE = Path(quill.__file__).parent
MODULES = sorted(SOURCE.rglob("*.py"))
#: Compiled modules (C, with a ``.pyi`` of their types): on a floor too, importing nothing.
COMPILED = sorted(SOURCE.glob("*.pyi"))

#: Imports that run against the order and cannot move yet: ``(file, imported module)`` ->
#: why. Empty: every backward import of issue 14 was removed by moving code down (runtimes
#: below staging and inference, the promotion gate into staging, the checkpoint format into
#: training). The list may only shrink: an entry that no longer matches an import fails.
ALLOWED: dict[tuple[str, str], str] = {}


def top_level(path: Path) -> str:
    """The top-level package or module of a file: ``staging`` for staging/cli.py."""
    return path.relative_to(SOURCE).parts[0].removesuffix(".py")


def package_of(path: Path) -> str:
    """The dotted package a file's relative imports start from."""
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts if path.name == "__init__.py" else parts[:-1])


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


def quill_target(name: str) -> str | None:
    """The top-level package of a ``quill.X...`` import (None for ``quill`` itself or another
    library)."""
    parts = name.split(".")
    return parts[1] if parts[0] == "quill" and len(parts) > 1 else None


def violations() -> list[tuple[str, int, str, str]]:
    """(file, line, importer package, imported module) of every import against the order."""
    found = []
    for path in MODULES:
        own = top_level(path)
        if own == "__init__":
            continue
        for line, name in imported_modules(path, package_of(path)):
            target = quill_target(name)
            if target is None or target == "__init__":
                continue
            if target not in {n for floor in LAYERS for n in floor}:
                continue  # ``from quill import name``: a name of quill itself, not a package
            where = (str(path.relative_to(SOURCE.parent)), line)
            if not may_import(own, target) and where not in {f[:2] for f in found}:
                found.append((*where, own, name))  # ``from X import a, b``: X, once
    return found


def test_every_package_and_module_is_on_exactly_one_floor() -> None:
    listed = [name for floor in LAYERS for name in floor]
    assert len(listed) == len(set(listed)), "a name is on two floors"
    present = {top_level(path) for path in MODULES} - {"__init__"}
    present |= {path.stem for path in COMPILED}
    assert present == set(listed), (
        f"not in quill.layers.LAYERS: {sorted(present - set(listed))}; "
        f"listed but not in src/quill: {sorted(set(listed) - present)}"
    )


def test_no_import_runs_against_the_layers() -> None:
    found = violations()
    backward = [
        f"{file}:{line}: quill.{own} (floor {floor_of(own)}) imports {name} "
        f"(floor {floor_of(quill_target(name) or '')})"
        for file, line, own, name in found
        if (file, name) not in ALLOWED
    ]
    assert not backward, (
        "imports against quill.layers.LAYERS (a package imports only its own floor's code and "
        "lower floors; move the code down rather than the import):\n" + "\n".join(backward)
    )


def test_the_allow_list_only_names_imports_that_still_exist() -> None:
    current = {(file, name) for file, _, _, name in violations()}
    stale = sorted(set(ALLOWED) - current)
    assert not stale, f"remove these from ALLOWED, they no longer run backward: {stale}"
    assert all(reason.strip() for reason in ALLOWED.values())


def test_the_reader_sees_lazy_relative_type_checking_and_from_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "import os\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from quill.serving import api\n"
        "def f():\n    from quill import staging\n"
        "from ..inference import recognizer\n"
        "from .checkpoint import load_checkpoint\n"
    )
    found = imported_modules(module, "quill.training")
    assert (4, "quill.serving") in found
    assert (6, "quill.staging") in found
    assert (7, "quill.inference.recognizer") in found
    assert (8, "quill.training.checkpoint") in found
    targets = {quill_target(name) for _, name in found} - {None}
    assert sorted(t for t in targets if not may_import("training", t)) == [
        "inference",
        "serving",
        "staging",
    ]


@pytest.mark.parametrize(
    ("importer", "imported", "allowed"),
    [
        ("training", "staging", False),  # the checkpoint format is training's own
        ("staging", "inference", False),  # parity runs quill.runtimes, not inference
        ("inference", "staging", True),
        ("runtimes", "staging", False),
        ("staging", "monitoring", False),  # the promotion gate is staging's
        ("monitoring", "annotation", False),  # the Label Studio export is annotation's
        ("serving", "monitoring", True),
        ("models", "data", False),  # one floor: independent
        ("evaluation", "vocab", True),
    ],
)
def test_the_order_says_what_issue_14_asked(importer: str, imported: str, allowed: bool) -> None:
    assert may_import(importer, imported) is allowed


# -- quill.evaluation: the bottom scorer every layer may use (was tests/evaluation/test_layer.py)


def test_evaluation_imports_only_the_vocabulary_numpy_and_the_standard_library() -> None:
    found = [
        name
        for path in MODULES
        if top_level(path) == "evaluation"
        for _, name in imported_modules(path, package_of(path))
    ]
    assert {quill_target(n) for n in found} - {None} <= {"evaluation", "vocab"}, found
    libraries = {name.split(".")[0] for name in found} - set(sys.stdlib_module_names)
    assert libraries <= {"numpy", "quill"}, libraries


def test_importing_evaluation_loads_no_tensor_library() -> None:
    code = (
        "import sys, quill.evaluation; "
        "print(sorted(m for m in ('torch', 'torchmetrics', 'lightning') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_readme_and_the_architecture_page_state_the_order_in_code() -> None:
    """The docs repeat the order for readers; they must say what LAYERS says."""
    docs = SOURCE.parents[1]
    readme = " ".join((docs / "README.md").read_text(encoding="utf-8").split())
    assert " → ".join(", ".join(floor) for floor in LAYERS) in readme
    page = (docs / "docs" / "architecture.md").read_text(encoding="utf-8")
    for index, floor in enumerate(LAYERS):
        assert f"| {index} | {', '.join(f'`{name}`' for name in floor)} |" in page
