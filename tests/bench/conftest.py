"""Fixtures for the benchmark tests: a real staged model and small datasets in real formats.

The staged model is a randomly initialised ``ctc_line`` network put through the real staging
path (checkpoint -> ONNX + TorchScript export -> parity check -> ``quill-model.json``): it
reads garbage, but every runtime the bench compares loads and runs it exactly as it would a
trained model. The datasets hold printed lines that Tesseract and RapidOCR read perfectly, so
a peer test can tell a working peer from a broken wrapper.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont, ImageOps

from quill.bench.peers import load_peer
from quill.bench.systems import System, SystemUnavailable
from quill.data.manifest import Manifest, Sample, file_sha256

#: (text, page, inverted) of the printed test lines.
LINES = [
    ("The quick brown fox", "page-a", False),
    ("jumps over 12 lazy dogs.", "page-a", False),
    ("Kew Gardens, London", "page-b", False),
    ("My dear Dyer", "page-b", True),
]


def render_line(text: str, inverted: bool = False) -> bytes:
    """A PNG of ``text`` in Pillow's bundled font: dark on light, or light on dark."""
    font = ImageFont.load_default(size=36)
    left, top, right, bottom = font.getbbox(text)
    image = Image.new("L", (right + 40, bottom + 30), 255)
    ImageDraw.Draw(image).text((20, 12), text, font=font, fill=0)
    if inverted:
        image = ImageOps.invert(image)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def write_printed_dataset(root: Path, split: str = "test") -> Manifest:
    """A Quill dataset folder (PNG files + manifest.jsonl) of the printed ``LINES``."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    samples = []
    for index, (text, page, inverted) in enumerate(LINES):
        path = root / "images" / f"line-{index}.png"
        path.write_bytes(render_line(text, inverted))
        samples.append(
            Sample(
                image=f"images/line-{index}.png",
                text=text,
                split=split,  # type: ignore[arg-type]
                source="printed",
                sha256=file_sha256(path),
                group=page,
                meta={"inverted": inverted},
            )
        )
    manifest = Manifest(root, samples)
    manifest.save()
    return manifest


@pytest.fixture(scope="session")
def printed_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("printed")
    write_printed_dataset(root)
    return root


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A staged random ``ctc_line`` model (a few seconds to export)."""
    import torch

    from quill.models import build_model
    from quill.preprocess import PreprocessConfig
    from quill.staging.stage import stage_checkpoint
    from quill.training.checkpoint import CheckpointSource, write_checkpoint
    from quill.vocab import Tokenizer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("model")
    tokenizer = Tokenizer()
    model = build_model("ctc_line", len(tokenizer), hidden=32, channels=(8, 16, 16, 32), layers=1)
    checkpoint = write_checkpoint(
        root / "tiny.ckpt", model, "ctc_line", tokenizer, PreprocessConfig(height=64)
    )
    return stage_checkpoint(CheckpointSource(checkpoint), root / "staged", "tiny").path


def peer_or_skip(name: str) -> System:
    """Start peer ``name``, or skip the test saying why it cannot run here."""
    try:
        return load_peer(name)
    except SystemUnavailable as exc:
        pytest.skip(f"peer {name} not installed here ({exc})")


@pytest.fixture(scope="session")
def tesseract() -> System:
    return peer_or_skip("tesseract")


@pytest.fixture(scope="session")
def rapidocr() -> System:
    return peer_or_skip("rapidocr")
