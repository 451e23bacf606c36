"""A tiny staged model that really reads a few fixed words, trained in seconds on the CPU.

Tests and container smoke checks need a model whose answer depends on its input (a random
network answers the same few characters for everything) without waiting for a training run.
This one memorises the rendered :data:`SMOKE_WORDS` with plain PyTorch and CTC loss, then goes
through the real checkpoint -> export -> parity -> staged directory path.
"""

from __future__ import annotations

import fcntl
import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from quill.model_files import METADATA_FILE
from quill.preprocess import PreprocessConfig, batch_images, preprocess
from quill.staged_model import StagedModel
from quill.staging.parity import render_line
from quill.staging.stage import stage_checkpoint
from quill.training.checkpoint import CheckpointSource, write_checkpoint
from quill.vocab import Tokenizer

SMOKE_WORDS = ("hello", "quill", "Kew", "ink")
#: Noisy renderings of each word trained on beside the clean one.
NOISY_RENDERINGS = 6
#: A Transformer encoder: it memorises in ~60 steps where a BiLSTM sits on the CTC
#: all-blank plateau for hundreds.
SMOKE_CONFIG = {
    "channels": [16, 32, 48, 64],
    "encoder": "transformer",
    "hidden": 64,
    "layers": 1,
    "dropout": 0.0,
}


def train_smoke_model(words: tuple[str, ...] = SMOKE_WORDS, steps: int = 300, seed: int = 0):  # noqa: ANN201
    """Overfit a small CTC line model on ``words`` rendered once each; returns the model."""
    import torch

    torch.manual_seed(seed)
    tokenizer = Tokenizer()
    config = PreprocessConfig()
    from quill.models import build_model

    model = build_model("ctc_line", len(tokenizer), **SMOKE_CONFIG)
    lines = [preprocess(render_line(w), config) for w in words]
    # The padded batch and every word alone: a model that only ever saw one padded batch
    # reads a word alone (different width, no padding) differently. Then the words on noisy
    # paper: a little noise moves the ink crop by a few pixels, and a model that learnt one
    # rendering only misreads the moved word.
    noisy = [
        preprocess(on_noisy_paper(render_line(w), seed), config)
        for seed in range(NOISY_RENDERINGS)
        for w in words
    ]
    batches = [batch_images(lines), *(batch_images([line]) for line in lines), batch_images(noisy)]
    labels = [list(words), *([w] for w in words), list(words) * NOISY_RENDERINGS]
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    ctc = torch.nn.CTCLoss(blank=tokenizer.blank_id, zero_infinity=True)
    model.train()
    for _ in range(steps):
        loss = sum(
            _ctc_loss(model, ctc, tokenizer, images, widths, texts)
            for (images, widths), texts in zip(batches, labels, strict=True)
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if loss.item() < 0.05 * len(batches):
            break
    return model.eval(), tokenizer, config


def on_noisy_paper(image: Image.Image, seed: int) -> Image.Image:
    """``image`` with Gaussian paper noise (sigma 3 grey levels), as a scanner adds it."""
    rng = np.random.default_rng(seed)
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 3, (image.height, image.width, 1))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def _ctc_loss(model, ctc, tokenizer, images, widths, texts):  # noqa: ANN001, ANN202
    import torch

    log_probs = model(torch.from_numpy(images))  # (B, T, C)
    targets = torch.tensor([i for text in texts for i in tokenizer.encode(text)])
    return ctc(
        log_probs.transpose(0, 1),  # (T, B, C) as CTCLoss wants
        targets,
        model.output_lengths(torch.from_numpy(widths)),
        torch.tensor([len(text) for text in texts]),
    )


def stage_smoke_model(out_dir: Path, name: str = "smoke", steps: int = 300) -> StagedModel:
    """Train the smoke model and stage it to ``out_dir`` through the real staging path."""
    model, tokenizer, config = train_smoke_model(steps=steps)
    checkpoint = write_checkpoint(
        out_dir.parent / f"{name}.ckpt",
        model,
        "ctc_line",
        tokenizer,
        config,
        dataset_version="smoke-words",
        config={"data": "rendered words: " + ", ".join(SMOKE_WORDS)},
    )
    rendered = [render_line(w) for w in SMOKE_WORDS]
    return stage_checkpoint(CheckpointSource(checkpoint), out_dir, name, samples=rendered)


def smoke_images() -> dict[str, np.ndarray]:
    """The smoke words rendered as RGB arrays, keyed by the text they show."""
    return {w: np.asarray(render_line(w)) for w in SMOKE_WORDS}


def cached_smoke_model(cache_root: Path) -> Path:
    """The staged smoke model under ``cache_root``, built if this code has not built it yet.

    The folder is named by a hash of every source file that shapes the result (models,
    runtimes, staging, the staged folder's format, preprocessing, vocabulary) and the torch
    version, so an edit rebuilds it.
    """
    import torch

    import quill

    package = Path(quill.__file__).parent
    digest = hashlib.sha256(torch.__version__.encode())
    sources = [
        *sorted((package / "models").glob("*.py")),
        *sorted((package / "runtimes").glob("*.py")),
        *sorted((package / "staging").glob("*.py")),
        *sorted((package / "preprocess").glob("*.py")),
        package / "staged_model.py",
        package / "model_files.py",
        package / "vocab.py",
    ]
    for source in sources:
        digest.update(source.read_bytes())
    target = cache_root / f"smoke-{digest.hexdigest()[:16]}" / "model"
    target.parent.mkdir(parents=True, exist_ok=True)
    # Test sessions of several packages may ask at once: one builds, the others wait.
    with (target.parent / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / METADATA_FILE).is_file():
            stage_smoke_model(target)
    return target
