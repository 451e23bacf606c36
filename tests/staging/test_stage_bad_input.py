"""``quill stage`` with a file that is no checkpoint, or ``--samples`` that give no readable
image: one line naming the file or pattern, exit 2, nothing written."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from quill.cli import app
from quill.errors import EXIT_ERROR
from quill.models import build_model
from quill.preprocess import PreprocessConfig
from quill.training.checkpoint import write_checkpoint
from quill.vocab import Tokenizer

TINY = {"channels": [8, 16, 16, 16], "hidden": 32, "layers": 1, "dropout": 0.0}


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    tokenizer = Tokenizer()
    model = build_model("ctc_line", len(tokenizer), **TINY)
    return write_checkpoint(
        tmp_path / "tiny.ckpt", model, "ctc_line", tokenizer, PreprocessConfig()
    )


def _stage(checkpoint: Path, out: Path, *options: str) -> tuple[int, str]:
    args = ["stage", str(checkpoint), "--out", str(out), "--no-register", *options]
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


# torch warns that a plain pickle is not the protocol it writes before refusing it
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize(
    "content",
    [b"hello\n", bytes(range(256)) * 4, pickle.dumps([1, 2, 3])],
    ids=["text", "random-bytes", "pickled-list"],
)
def test_a_file_that_is_no_checkpoint_is_named_and_exits_2(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "text.ckpt"
    path.write_bytes(content)
    code, output = _stage(path, tmp_path / "out")
    assert code == EXIT_ERROR, output
    assert "text.ckpt is not a readable PyTorch checkpoint" in output
    assert "Traceback" not in output and not (tmp_path / "out").exists()


def test_a_zip_that_is_no_checkpoint_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "archive.ckpt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "hello")
    code, output = _stage(path, tmp_path / "out")
    assert code == EXIT_ERROR and "archive.ckpt" in output, output


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("trunc.jpg", b"\xff\xd8\xff\xe0", "trunc.jpg"),
        ("zero.jpg", b"", "zero.jpg is empty (0 bytes)"),
    ],
)
def test_an_unreadable_sample_image_is_named_and_exits_2(
    checkpoint: Path, tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    sample = tmp_path / name
    sample.write_bytes(content)
    code, output = _stage(checkpoint, tmp_path / "out", "--samples", str(sample))
    assert code == EXIT_ERROR, output
    assert message in output and "--samples" in output and "Traceback" not in output
    assert not (tmp_path / "out").exists()


def test_a_samples_glob_matching_nothing_is_named_and_exits_2(tmp_path: Path) -> None:
    pattern = str(tmp_path / "nomatch" / "*.png")
    code, output = _stage(tmp_path / "absent.ckpt", tmp_path / "out", "--samples", pattern)
    assert code == EXIT_ERROR, output
    assert "no file matches" in output and "nomatch" in output


def test_an_empty_samples_folder_is_an_error_not_the_built_in_samples(tmp_path: Path) -> None:
    empty = tmp_path / "emptydir"
    empty.mkdir()
    code, output = _stage(tmp_path / "absent.ckpt", tmp_path / "out", "--samples", str(empty))
    assert code == EXIT_ERROR, output
    assert "emptydir" in output and "no images" in output
