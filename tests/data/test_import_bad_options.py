"""``quill data import`` refuses split shares that cannot be honoured and unknown --kinds,
for every format (the folder reader ignored a misspelt kind), with exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from quill.cli import app
from quill.data.manifest import assign_splits, check_split_fractions
from quill.errors import EXIT_ERROR

runner = CliRunner()


def _import_folder(src: Path, out: Path, *options: str) -> tuple[int, str]:
    result = runner.invoke(app, ["data", "import", "folder", str(src), "--out", str(out), *options])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--val-fraction", "1.5"), "--val-fraction"),
        (("--test-fraction", "-0.1"), "--test-fraction"),
        (("--val-fraction", "-0.5", "--test-fraction", "0.9"), "--val-fraction"),
        (("--val-fraction", "0.6", "--test-fraction", "0.5"), "add up to 1.1"),
    ],
)
def test_split_shares_out_of_range_exit_2_and_import_nothing(
    folder_dataset: Path, tmp_path: Path, options: tuple[str, ...], message: str
) -> None:
    code, output = _import_folder(folder_dataset, tmp_path / "out", *options)
    assert code == EXIT_ERROR, output
    assert message in output and not (tmp_path / "out").exists()


def test_shares_adding_up_to_exactly_1_are_allowed(folder_dataset: Path, tmp_path: Path) -> None:
    code, output = _import_folder(
        folder_dataset, tmp_path / "out", "--val-fraction", "0.7", "--test-fraction", "0.3"
    )
    assert code == 0, output


def test_an_unknown_kind_is_refused_for_the_folder_format_too(
    folder_dataset: Path, tmp_path: Path
) -> None:
    code, output = _import_folder(folder_dataset, tmp_path / "out", "--kinds", "line,words")
    assert code == EXIT_ERROR, output
    assert "words" in output and "line, paragraph" in output
    assert not (tmp_path / "out").exists()


def test_assign_splits_refuses_shares_it_cannot_honour() -> None:
    check_split_fractions(0.0, 1.0)
    with pytest.raises(ValueError, match="between 0 and 1"):
        assign_splits(["a", "b"], val_fraction=1.5)
    with pytest.raises(ValueError, match="add up to"):
        assign_splits(["a", "b"], val_fraction=0.5, test_fraction=0.6)
