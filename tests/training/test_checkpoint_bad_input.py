"""``load_checkpoint`` names the file for anything that is not a Quill checkpoint, whatever
torch's reader raised on it (a text file made its weights-only unpickler raise KeyError)."""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from quill.training.checkpoint import CheckpointError, load_checkpoint


def _text(path: Path) -> None:
    path.write_text("hello\n")


def _random_bytes(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 8)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _zip_of_something_else(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not a checkpoint")


def _pickled_list(path: Path) -> None:
    path.write_bytes(pickle.dumps([1, 2, 3]))


def _torch_saved_list(path: Path) -> None:
    torch.save([torch.zeros(1)], path)


def _hyper_parameters_not_a_mapping(path: Path) -> None:
    torch.save({"hyper_parameters": 5, "state_dict": {}}, path)


def _hyper_parameters_of_no_network(path: Path) -> None:
    hyper = {"model_name": "no_such_net", "model_config": {}, "tokenizer": {}, "preprocess": {}}
    torch.save({"hyper_parameters": hyper, "state_dict": {}}, path)


# torch warns that a plain pickle is not the protocol it writes before refusing it
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize(
    "write",
    [
        _text,
        _random_bytes,
        _empty,
        _zip_of_something_else,
        _pickled_list,
        _torch_saved_list,
        _hyper_parameters_not_a_mapping,
        _hyper_parameters_of_no_network,
    ],
)
def test_a_file_that_is_no_checkpoint_raises_checkpoint_error_naming_it(
    tmp_path: Path, write: Callable[[Path], None]
) -> None:
    path = tmp_path / "not-a-checkpoint.ckpt"
    write(path)
    with pytest.raises(CheckpointError, match="not-a-checkpoint.ckpt") as caught:
        load_checkpoint(path)
    assert "\n" not in str(caught.value)  # one line: torch's advice paragraphs are dropped
    assert "weights_only" not in str(caught.value)
