"""Fixtures for training tests: a tiny line dataset in the real manifest format, a tmp store.

The dataset is printed text drawn with Pillow's built-in font (no system fonts, no network),
so it is quick to learn: the tests check the training machinery, not handwriting accuracy.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import lightning as L
import pytest
from PIL import Image, ImageDraw, ImageFont

from quill.data.manifest import Manifest, Sample, file_sha256

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO_ROOT / "configs" / "tiny.yaml"
WORDS = (
    *("the", "of", "and", "Kew", "plants", "letter", "garden", "seeds", "March", "1892"),
    *("Hooker", "sent", "my", "dear", "friend", "grasses", "India", "Stapf", "work", "hard"),
    *("blows", "with", "African", "these", "come", "to"),
)


def render_line(text: str, path: Path, size: int = 24) -> None:
    """Dark text on light paper, as a PNG a real reader would load."""
    font = ImageFont.load_default(size=size)
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font)
    image = Image.new("RGB", (right - left + 16, bottom - top + 16), (250, 248, 240))
    ImageDraw.Draw(image).text((8 - left, 8 - top), text, font=font, fill=(20, 20, 40))
    image.save(path)


def make_line_dataset(root: Path, counts: dict[str, int], seed: int = 0) -> Manifest:
    """A dataset folder with ``counts[split]`` one-to-three-word lines per split."""
    rng = random.Random(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    samples = []
    for split, count in counts.items():
        for i in range(count):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
            name = f"images/{split}_{i:03d}.png"
            render_line(text, root / name)
            samples.append(
                Sample(name, text, split, "tiny", file_sha256(root / name), group=f"{split}{i}")
            )
    manifest = Manifest(root, samples)
    manifest.save()
    return manifest


@pytest.fixture(scope="session")
def tiny_lines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 train, 8 val, 8 test printed lines."""
    root = tmp_path_factory.mktemp("tiny_lines")
    make_line_dataset(root, {"train": 24, "val": 8, "test": 8})
    return root


@pytest.fixture(scope="session")
def new_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite store as MLflow creates it, with nothing in it yet: made once, so
    that each test's copy skips the seconds of MLflow's schema migrations."""
    from mlflow import MlflowClient

    database = tmp_path_factory.mktemp("new-store") / "mlflow.db"
    MlflowClient(f"sqlite:///{database}").search_experiments(max_results=1)
    return database


@pytest.fixture
def tracking_uri(tmp_path: Path, new_store: Path) -> str:
    """A fresh MLflow SQLite store in tmp_path (artifacts beside it), a copy of
    :func:`new_store`."""
    database = tmp_path / "mlruns" / "mlflow.db"
    database.parent.mkdir()
    shutil.copyfile(new_store, database)
    return f"sqlite:///{database}"


@pytest.fixture(scope="session")
def shared_tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MLflow store for tests that only add runs (creating a store costs seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlruns') / 'mlflow.db'}"


def load_batch(root: Path, split: str, height: int, limit: int | None = None) -> dict:
    """The batch dict every DataModule yields, built straight from a dataset folder."""
    import torch

    from quill.preprocess import PreprocessConfig, batch_images, preprocess
    from quill.vocab import Tokenizer

    manifest = Manifest.load(root)
    samples = manifest.split(split)[:limit]
    config = PreprocessConfig(height=height)
    images, widths = batch_images([preprocess(manifest.path_of(s), config) for s in samples])
    tokenizer = Tokenizer()
    ids = [tokenizer.encode(s.text) for s in samples]
    targets = torch.zeros(len(ids), max(map(len, ids)), dtype=torch.long)
    for i, row in enumerate(ids):
        targets[i, : len(row)] = torch.tensor(row)
    return {
        "images": torch.from_numpy(images),
        "widths": torch.from_numpy(widths),
        "targets": targets,
        "target_lengths": torch.tensor([len(row) for row in ids]),
        "texts": [s.text for s in samples],
        "image_paths": [str(manifest.path_of(s)) for s in samples],
    }


def make_paragraph_dataset(root: Path, counts: dict[str, int], seed: int = 0) -> Manifest:
    """A dataset folder of two-line paragraphs (text lines joined by a newline)."""
    rng = random.Random(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    font = ImageFont.load_default(size=20)
    samples = []
    for split, count in counts.items():
        for i in range(count):
            lines = [" ".join(rng.choice(WORDS) for _ in range(2)) for _ in range(2)]
            image = Image.new("RGB", (260, 80), (250, 248, 240))
            draw = ImageDraw.Draw(image)
            for row, line in enumerate(lines):
                draw.text((10, 10 + 32 * row), line, font=font, fill=(20, 20, 40))
            name = f"images/{split}_{i:03d}.png"
            image.save(root / name)
            samples.append(
                Sample(
                    name,
                    "\n".join(lines),
                    split,
                    "tiny",
                    file_sha256(root / name),
                    group=f"{split}{i}",
                    kind="paragraph",
                )
            )
    manifest = Manifest(root, samples)
    manifest.save()
    return manifest


@pytest.fixture(scope="session")
def tiny_paragraphs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny_paragraphs")
    make_paragraph_dataset(root, {"train": 8, "val": 4, "test": 4})
    return root


def quiet_trainer(root: Path, max_steps: int) -> L.Trainer:
    """A Lightning trainer for ``max_steps`` on the CPU that writes and prints nothing and
    skips validation: for fixtures that need a model trained a little."""
    return L.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=str(root),
    )
