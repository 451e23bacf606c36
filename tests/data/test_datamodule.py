"""HTRDataModule: batch format, weighted mixing, per-source evaluation, reporting, versions."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from quill.data.datamodule import HTRDataModule, default_num_workers
from quill.data.manifest import Manifest, Sample
from quill.data.paragraphs import make_paragraphs
from quill.preprocess import PreprocessConfig, preprocess
from quill.vocab import Tokenizer

SYNTH = {
    "train": [f"synthetic {i}" for i in range(8)],
    "val": ["synth val"],
    "test": ["synth test"],
}
REAL = {"train": ["real one", "real two"], "val": ["real val", "more real"], "test": ["t"]}


@pytest.fixture
def sources(make_line_dataset) -> list[dict]:
    synth = make_line_dataset("synth", SYNTH)
    real = make_line_dataset("real", REAL)
    return [{"path": synth.root, "weight": 0.7}, {"path": real.root, "weight": 0.3}]


def _module(sources, **options) -> HTRDataModule:
    options = {"num_workers": 0, "batch_size": 4, "augment": False, **options}
    module = HTRDataModule(sources, **options)
    module.setup("fit")
    return module


def test_batch_has_the_shared_format_and_decodes_back(sources):
    torch.manual_seed(0)
    module = _module(sources, augment=True)
    batch = next(iter(module.train_dataloader()))
    images, widths = batch["images"], batch["widths"]
    assert images.dtype == torch.float32 and images.shape[:3] == (4, 1, 64)
    assert images.shape[3] % 8 == 0 and int(widths.max()) == images.shape[3]
    for row, width in enumerate(widths.tolist()):
        assert width % 8 == 0 and images[row, 0, :, :width].max() > 0.5
        assert float(images[row, 0, :, width:].abs().sum()) == 0.0  # padding is paper
    tokenizer = Tokenizer()
    for row, text in enumerate(batch["texts"]):
        length = int(batch["target_lengths"][row])
        assert length == len(text)
        assert tokenizer.decode(batch["targets"][row, :length].tolist()) == text
        assert batch["targets"][row, length:].eq(0).all()
    assert set(batch["sources"]) <= {"synth", "real"}
    assert all(Path(p).is_file() for p in batch["image_paths"])


def test_training_mix_follows_the_weights(sources):
    module = _module(sources, epoch_size=4000)
    items = module.train_items
    drawn = Counter(items[i].source for i in module.train_sampler())
    assert sum(drawn.values()) == 4000
    # 8 synthetic and 2 real lines, yet 70/30 by weight (3 sigma ~ 0.022).
    assert drawn["synth"] / 4000 == pytest.approx(0.7, abs=0.025)
    assert len(module.train_dataloader()) == 1000


def test_zero_weight_source_is_not_trained_on_but_still_evaluated(sources):
    sources[1]["weight"] = 0.0
    module = _module(sources, epoch_size=200)
    assert {module.train_items[i].source for i in module.train_sampler()} == {"synth"}
    batches = list(module.val_dataloader())
    assert Counter(s for b in batches for s in b["sources"]) == {"synth": 1, "real": 2}
    assert module.val_sources == {"synth": "seen", "real": "seen"}


def test_evaluation_is_unaugmented_and_per_source(sources):
    module = _module(sources, augment=True)
    first = next(iter(module.val_dataloader()))
    second = next(iter(module.val_dataloader()))
    assert torch.equal(first["images"], second["images"])  # one fixed order, no augmentation
    pairs = sorted(zip(first["sources"], first["texts"], strict=True))
    assert pairs == [("real", "more real"), ("real", "real val"), ("synth", "synth val")]
    test = next(iter(module.test_dataloader()))
    assert test["texts"] == ["synth test", "t"]


def test_training_samples_are_augmented_per_sample_without_the_cache(sources):
    module = _module(sources, augment=True, cache=False)
    dataset = module.train_dataloader().dataset
    torch.manual_seed(1)
    views = [dataset[0]["image"] for _ in range(4)]
    assert any(v.shape != views[0].shape or not np.array_equal(v, views[0]) for v in views[1:])
    plain = _module(sources, augment=False, cache=False).train_dataloader().dataset
    assert np.array_equal(plain[0]["image"], plain[0]["image"])


def test_cached_training_batches_are_augmented_in_the_loader(sources):
    module = _module(sources, augment=True)
    loader = module.train_dataloader()
    samples = [loader.dataset[i] for i in range(4)]
    assert all(s["image"].dtype == np.uint8 for s in samples)  # cached maps, not decoded files
    torch.manual_seed(1)
    first, second = loader.collate_fn(samples), loader.collate_fn(samples)
    assert first["images"].shape != second["images"].shape or not torch.equal(
        first["images"], second["images"]
    )
    plain = _module(sources, augment=False).train_dataloader()
    assert torch.equal(plain.collate_fn(samples)["images"], plain.collate_fn(samples)["images"])


def test_unaugmented_cached_batch_is_what_preprocessing_gives(sources):
    module = _module(sources, augment=False)
    batch = next(iter(module.val_dataloader()))
    config = module.preprocess_config
    for row, path in enumerate(batch["image_paths"]):
        expected = preprocess(path, config)  # (H, W) float, what inference computes
        width = int(batch["widths"][row])
        assert width == expected.shape[1]
        got = batch["images"][row, 0, :, :width].numpy()
        assert np.abs(got - expected).max() <= 0.5 / 255 + 1e-6  # uint8 rounding only


def test_cache_is_reused_and_rebuilt_when_the_data_changes(sources, make_line_dataset):
    module = _module(sources)
    cache_files = sorted((Path(sources[1]["path"]) / ".ink-cache").glob("*.npy"))
    assert len(cache_files) == 1
    stamp = cache_files[0].stat().st_mtime_ns
    _module(sources)
    assert cache_files[0].stat().st_mtime_ns == stamp  # same version: read, not rebuilt
    make_line_dataset("real", {**REAL, "train": ["real one", "real 2"]})
    rebuilt = _module(sources)
    now = sorted((Path(sources[1]["path"]) / ".ink-cache").glob("*.npy"))
    assert len(now) == 1 and now != cache_files  # a new key; the stale cache is gone
    assert {i.text for i in rebuilt.train_items} >= {"real 2"}
    assert module.dataset_version != rebuilt.dataset_version


def test_cached_training_batches_can_be_augmented_on_the_device(sources):
    module = _module(sources, augment=True, augment_on="device")
    batch = next(iter(module.train_dataloader()))
    assert batch["augment"] is True
    before = batch["images"].clone()
    after = module.on_after_batch_transfer(batch, 0)
    assert "augment" not in after and after["images"].shape[2] == before.shape[2]
    assert after["images"].shape != before.shape or not torch.equal(after["images"], before)


def test_max_width_is_respected(make_line_dataset):
    long = make_line_dataset("long", {"train": ["x"], "val": ["a very long line " * 6, "short"]})
    config = PreprocessConfig(height=32, max_width=128)
    module = _module([long.root], preprocess_config=config, batch_size=2)
    batch = next(iter(module.val_dataloader()))
    assert batch["images"].shape[2:] == (32, 128)
    assert sorted(batch["widths"].tolist())[-1] == 128


def test_lightning_trainer_runs_on_the_module(sources):
    import lightning.pytorch as pl

    class Probe(pl.LightningModule):
        """Counts what Lightning feeds it; one weight so an optimiser has something to do."""

        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(()))
            self.seen: Counter = Counter()

        def training_step(self, batch, _):
            self.seen["train"] += len(batch["texts"])
            return (batch["images"].mean() - self.weight) ** 2

        def validation_step(self, batch, _):
            self.seen.update(batch["sources"])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    probe = Probe()
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(probe, datamodule=_module(sources, epoch_size=8))
    assert probe.seen == {"train": 8, "synth": 1, "real": 2}


def test_unusable_samples_are_reported_and_left_out(sources, caplog):
    real = Manifest.load(sources[1]["path"])
    extra = [
        Sample("images/real-train-0.png", "crème brûlée", "train", "real", "x", "g1"),
        Sample("images/gone.png", "missing file", "train", "real", "y", "g2"),
        Sample("images/real-train-1.png", "a paragraph", "train", "real", "z", "g3", "paragraph"),
    ]
    Manifest(real.root, [*real.samples, *extra]).save()
    gone = (real.root / "images/gone.png").resolve()
    with caplog.at_level(logging.WARNING, logger="quill.data.datamodule"):
        module = _module(sources)
        uncached = _module(sources, cache=False)
    reasons = {skip.where: skip.reason for skip in module.skipped}
    assert reasons == {
        "real:images/real-train-0.png": (
            "characters outside the vocabulary: 'è', 'û', 'é' in 'crème brûlée'"
        ),
        "real:images/gone.png": f"unreadable image: no such image file: {gone}",
    }
    reasons = {skip.where: skip.reason for skip in uncached.skipped}
    assert reasons["real:images/gone.png"] == f"image file missing: {gone}"
    assert "left out 2 samples" in caplog.text
    assert len(module.train_items) == 10  # the paragraph sample belongs to another task


def test_unreadable_image_is_logged_and_replaced(sources, caplog):
    module = _module(sources, cache=False)
    items = module.train_items
    Path(items[0].path).write_bytes(b"truncated")
    dataset = module.train_dataloader().dataset
    with caplog.at_level(logging.WARNING, logger="quill.data.datamodule"):
        sample = dataset[0]
    assert sample["text"] == items[1].text
    assert items[0].path in caplog.text


def test_dataset_version_tracks_data_and_weights(sources, make_line_dataset):
    base = HTRDataModule(sources, num_workers=0).dataset_version
    assert HTRDataModule(sources, num_workers=0).dataset_version == base
    reweighted = [dict(sources[0], weight=0.5), sources[1]]
    assert HTRDataModule(reweighted, num_workers=0).dataset_version != base
    make_line_dataset("real", {**REAL, "train": ["real one", "real 2"]})
    assert HTRDataModule(sources, num_workers=0).dataset_version != base


def test_paragraph_task(make_line_dataset, tmp_path: Path):
    lines = make_line_dataset("lines", {"train": [f"line {i}" for i in range(6)]})
    make_paragraphs(lines.root, tmp_path / "para", 3, seed=0, workers=1)
    config = PreprocessConfig(kind="paragraph", paragraph_height=96, paragraph_width=128)
    module = _module([tmp_path / "para"], task="paragraph", preprocess_config=config, augment=True)
    batch = next(iter(module.train_dataloader()))
    assert batch["images"].shape == (3, 1, 96, 128)
    newline = Tokenizer().encode("\n")[0]
    assert all((batch["targets"][i] == newline).any() for i in range(3))
    with pytest.raises(ValueError, match="kind='line'"):
        HTRDataModule([tmp_path / "para"], task="line", preprocess_config=config)


def test_worker_processes_and_bad_configs(sources, tmp_path: Path):
    assert 0 <= default_num_workers() <= 4
    module = _module(sources, num_workers=1, epoch_size=8)
    batches = list(module.train_dataloader())
    assert [len(b["texts"]) for b in batches] == [4, 4]
    with pytest.raises(FileNotFoundError, match="no dataset at .*nowhere"):
        HTRDataModule([tmp_path / "nowhere"], num_workers=0).setup("fit")
    with pytest.raises(ValueError, match="weight must be >= 0"):
        HTRDataModule([{"path": tmp_path, "weight": -1}])
    with pytest.raises(ValueError, match="names must differ"):
        HTRDataModule([tmp_path / "a" / "x", tmp_path / "b" / "x"])


def test_an_augmentation_that_shrinks_a_tiny_line_too_far_falls_back_to_the_original(
    tmp_path: Path,
) -> None:
    """A one-letter crop 8 px wide, shrunk to a third, is below the 4-px minimum side: the
    sample is still served (unaugmented) instead of stopping the training run."""
    from PIL import Image

    from quill.data.augment import AugmentConfig, Augmenter
    from quill.data.datamodule import HTRDataset, Item
    from quill.preprocess import ImageError, preprocess

    path = tmp_path / "i.png"
    image = Image.new("L", (8, 40), 255)
    image.paste(0, (3, 10, 5, 30))
    image.save(path)
    config = PreprocessConfig(kind="line", height=32)
    geometric = ("slant", "rotate", "elastic", "baseline_wave", "stroke_width", "perspective")
    appearance = ("recolour", "invert", "contrast", "blur", "noise")
    only_downscale = AugmentConfig(
        **dict.fromkeys(geometric + appearance, 0.0), downscale=1.0, downscale_range=(0.34, 0.35)
    )
    augmenter = Augmenter(only_downscale, config)
    with pytest.raises(ImageError, match="each side needs at least"):
        preprocess(augmenter(image, np.random.default_rng(0)), config)
    dataset = HTRDataset([Item(str(path), "i", (3,), "real")], config, augmenter)
    assert np.array_equal(dataset[0]["image"], preprocess(image, config))
