"""Fixtures of the inference tests: a copy of the smoke model to change, and val lines it reads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from quill.data.manifest import Manifest, Sample, file_sha256
from quill.staging.parity import render_line
from quill.staging.smoke import SMOKE_WORDS


@pytest.fixture
def model_copy(smoke_model: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(smoke_model, tmp_path / "model"))


@pytest.fixture
def val_lines(tmp_path: Path) -> Path:
    root = tmp_path / "lines"
    (root / "images").mkdir(parents=True)
    samples = []
    for index, word in enumerate(SMOKE_WORDS * 2):
        image = root / "images" / f"{index}.png"
        render_line(word).save(image)
        split = "val" if index < len(SMOKE_WORDS) else "train"
        samples.append(Sample(f"images/{index}.png", word, split, "test", file_sha256(image)))
    Manifest(root, samples).save()
    return root
