"""The GPU recipe, tiny and real: pack a run, unpack it without its images, plan, slim down.

Issue 13: "Test the packing and the budgeting, tiny, in the suite." Everything here runs the
real components (DataModule, ink caches, Lightning, the checkpoint loader) on a few
printed lines and the 54 k-parameter tiny model.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from quill.preprocess import PreprocessConfig
from quill.training import gpu_recipe
from quill.training.checkpoint import load_checkpoint
from quill.training.config import resolve_config
from quill.training.gpu_recipe import (
    ARCHIVE_LIMIT,
    BUDGET_SHARE,
    CHECKPOINT_KEYS,
    RecipeError,
    dequantise,
    measure_rate,
    pack,
    plan_epochs,
    quantise,
    unpack,
    weights_only,
)
from quill.training.train import build_datamodule, create_run_parts
from quill.vocab import Tokenizer

from .conftest import TINY_CONFIG, make_line_dataset, quiet_trainer

#: The largest error 4-bit ink may have: half a level (17 / 2), in [0, 1] units.
QUANTISATION_ERROR = 8.5 / 255


def write_config(
    path: Path, sources: list[dict], init_from: Path | None = None, **data: object
) -> Path:
    """A run config over tiny.yaml with these sources, data options and initial weights."""
    config: dict = {"extends": str(TINY_CONFIG), "data": {"sources": sources, **data}}
    if init_from:
        config["model"] = {"init_from": str(init_from)}
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _datamodule(config: dict):
    return build_datamodule(
        config,
        Tokenizer.named(config["model"]["vocabulary"]),
        PreprocessConfig.from_dict(config["data"]["preprocess"]),
    )


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A real Lightning checkpoint of the tiny model after two steps (optimizer state and
    all), and a batch to run it on."""
    root = tmp_path_factory.mktemp("checkpoint")
    make_line_dataset(root / "lines", {"train": 8}, seed=3)
    config = resolve_config(write_config(root / "run.yaml", [{"path": str(root / "lines")}]))
    datamodule, module, _ = create_run_parts(config)
    trainer = quiet_trainer(root, max_steps=2)
    trainer.fit(module, datamodule=datamodule)
    path = root / "tiny.ckpt"
    trainer.save_checkpoint(path)
    return path, next(iter(datamodule.train_dataloader()))


# -- pack and unpack -----------------------------------------------------------------------


def test_pack_then_unpack_serves_every_line_from_the_cache_without_the_images(
    tmp_path: Path, tiny_checkpoint: tuple[Path, dict]
) -> None:
    here = tmp_path / "here"
    alpha = make_line_dataset(here / "alpha", {"train": 6, "val": 2, "test": 2}, seed=1)
    beta = make_line_dataset(here / "beta", {"train": 4, "val": 2, "test": 2}, seed=2)
    sources = [
        {"path": str(alpha.root), "name": "alpha", "weight": 0.6, "role": "seen"},
        {"path": str(beta.root), "name": "beta", "weight": 0.4, "role": "unseen"},
    ]
    config_path = write_config(
        here / "run.yaml", sources, epoch_size=16, init_from=tiny_checkpoint[0]
    )
    archive = tmp_path / "gpu" / "run.tar"
    report = pack(config_path, [], archive)

    assert archive.is_file() and report.archive == archive
    assert report.bytes == archive.stat().st_size < ARCHIVE_LIMIT
    assert report.lines == {"alpha": 8, "beta": 6}  # train + val; test lines stay home
    assert set(report.parts) == {"alpha", "beta", "init weights", "config"}
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        packed = yaml.safe_load(tar.extractfile("config.yaml").read())  # type: ignore[union-attr]
        init = torch.load(
            io.BytesIO(tar.extractfile("init/tiny.ckpt").read()),  # type: ignore[union-attr]
            weights_only=True,
        )
    members = ("manifest.jsonl.xz", "ink-index.json.xz", "ink-q4.xz")
    expected = {f"sources/{n}/{m}" for n in ("alpha", "beta") for m in members}
    assert names == {"config.yaml", "init/tiny.ckpt", *expected}  # no image file travels
    assert [s["path"] for s in packed["data"]["sources"]] == ["sources/alpha", "sources/beta"]
    assert [s["role"] for s in packed["data"]["sources"]] == ["seen", "unseen"]
    assert packed["model"]["init_from"] == "init/tiny.ckpt"
    assert packed["data"]["cache_dir"] is None and packed["tracking"]["logger"] == "csv"
    assert packed["tracking"]["system_metrics"] is False
    # the warm start travels as fp16 weights only
    assert set(init) <= set(CHECKPOINT_KEYS) and "optimizer_states" not in init
    weights = [v for v in init["state_dict"].values() if v.is_floating_point()]
    assert weights and all(v.dtype == torch.float16 for v in weights)

    # what the model saw here, read from the ink caches pack built
    original = _datamodule(resolve_config(config_path))
    original_val = next(iter(original.val_dataloader()))
    assert len(original.split_items("test")) == 4

    there = tmp_path / "there"
    unpacked_path = unpack(archive, there)
    shutil.rmtree(alpha.root)  # the images (and the caches) are gone
    shutil.rmtree(beta.root)
    config = resolve_config(unpacked_path)
    assert [Path(s["path"]) for s in config["data"]["sources"]] == [
        (there / "sources" / n).resolve() for n in ("alpha", "beta")
    ]
    assert Path(config["model"]["init_from"]).is_file()
    assert Path(config["output_dir"]) == (there / "outputs").resolve()

    datamodule = _datamodule(config)
    assert datamodule.skipped == []
    assert {s.spec.name: s.spec.role for s in datamodule.data} == {
        "alpha": "seen",
        "beta": "unseen",
    }
    counts = {split: len(datamodule.split_items(split)) for split in ("train", "val", "test")}
    assert counts == {"train": 10, "val": 4, "test": 0}  # test samples were not packed
    for item in [*datamodule.split_items("train"), *datamodule.split_items("val")]:
        assert item.row >= 0 and not Path(item.path).exists()
    versions = datamodule.source_versions
    assert versions["alpha"] != alpha.version  # a packed dataset is a version of its own

    val = next(iter(datamodule.val_dataloader()))
    assert val["texts"] == original_val["texts"] and val["sources"] == original_val["sources"]
    assert torch.equal(val["widths"], original_val["widths"])
    assert val["images"].shape == original_val["images"].shape
    error = (val["images"] - original_val["images"]).abs().max().item()
    assert error <= QUANTISATION_ERROR
    seen = sum(len(batch["texts"]) for batch in datamodule.train_dataloader())
    assert seen == 16  # data.epoch_size lines drawn, all from the cache

    # the run starts from the packed fp16 weights
    _, module, initialised_from = create_run_parts(config)
    assert initialised_from is not None and "init" in initialised_from
    assert all(p.dtype == torch.float32 for p in module.parameters())


def test_a_distillation_teacher_travels_with_the_run_and_teaches_there(
    tmp_path: Path, tiny_checkpoint: tuple[Path, dict]
) -> None:
    """``distill.teacher`` is a model the run reads, as its initial weights are: both are
    packed (fp16), and the unpacked run loads the teacher from the archive alone."""
    lines = make_line_dataset(tmp_path / "lines", {"train": 4, "val": 2})
    config_path = write_config(
        tmp_path / "run.yaml", [{"path": str(lines.root)}], init_from=tiny_checkpoint[0]
    )
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    config["distill"] = {"teacher": str(tiny_checkpoint[0]), "weight": 0.5}
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    report = pack(config_path, [], tmp_path / "gpu" / "run.tar")
    assert {"init weights", "teacher weights"} <= set(report.parts)
    with tarfile.open(report.archive) as tar:
        assert {"init/tiny.ckpt", "teacher/tiny.ckpt"} <= set(tar.getnames())
    tiny_checkpoint[0].rename(tmp_path / "moved.ckpt")  # only the archive's copies remain
    try:
        unpacked = resolve_config(unpack(report.archive, tmp_path / "there"))
        teacher = Path(unpacked["distill"]["teacher"])
        assert teacher == (tmp_path / "there" / "teacher" / "tiny.ckpt").resolve()
        _, module, _ = create_run_parts(unpacked)
    finally:
        (tmp_path / "moved.ckpt").rename(tiny_checkpoint[0])
    assert module.teacher is not None and module.distill_weight == 0.5


def test_pack_over_the_limit_names_the_largest_parts_and_leaves_nothing(
    tmp_path: Path, tiny_checkpoint: tuple[Path, dict]
) -> None:
    lines = make_line_dataset(tmp_path / "lines", {"train": 4, "val": 1})
    config_path = write_config(
        tmp_path / "run.yaml", [{"path": str(lines.root)}], init_from=tiny_checkpoint[0]
    )
    archive = tmp_path / "gpu" / "run.tar"
    with pytest.raises(RecipeError, match="over the 0 MB limit") as error:
        pack(config_path, [], archive, limit=1000)
    message = str(error.value)
    assert "largest: init weights" in message and "lines" in message and "MB" in message
    assert not archive.exists()


def test_pack_that_fails_midway_leaves_no_archive(tmp_path: Path) -> None:
    lines = make_line_dataset(tmp_path / "lines", {"train": 4})
    (tmp_path / "empty").mkdir()
    config_path = write_config(
        tmp_path / "run.yaml", [{"path": str(lines.root)}], init_from=tmp_path / "empty"
    )
    archive = tmp_path / "gpu" / "run.tar"
    with pytest.raises(RecipeError, match="neither a .ckpt nor a staged model"):
        pack(config_path, [], archive)
    assert not archive.exists()


def test_only_cached_line_runs_are_packed(tmp_path: Path) -> None:
    lines = make_line_dataset(tmp_path / "lines", {"train": 2})
    config_path = write_config(tmp_path / "run.yaml", [{"path": str(lines.root)}], cache=False)
    with pytest.raises(RecipeError, match="data.cache: true"):
        pack(config_path, [], tmp_path / "run.tar")
    assert not (tmp_path / "run.tar").exists()


@pytest.mark.parametrize("size", [1, 2, 7, 1000, 4097])
def test_quantise_round_trip_is_within_half_a_level(size: int) -> None:
    pixels = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    packed = quantise(pixels)
    assert packed.dtype == np.uint8 and packed.shape == ((size + 1) // 2,)
    back = dequantise(packed, size)
    assert back.dtype == np.uint8 and back.shape == (size,)
    assert np.abs(back.astype(int) - pixels.astype(int)).max() <= 8
    levels = np.arange(16, dtype=np.uint8) * 17  # every level comes back exactly
    assert np.array_equal(dequantise(quantise(levels), 16), levels)
    assert np.array_equal(dequantise(quantise(levels[:15]), 15), levels[:15])


# -- budgeting -----------------------------------------------------------------------------


def test_plan_epochs_fills_the_budget_share_and_never_plans_nothing() -> None:
    assert plan_epochs(1000.0, 1000, 1000) == int(1000 * BUDGET_SHARE)
    assert plan_epochs(100.0, 100, 2500, share=0.5) == 2  # 5000 samples fit: two epochs
    assert plan_epochs(100.0, 100, 2501, share=0.5) == 1  # floored, never past the budget
    assert plan_epochs(100.0, 100, 1666, share=0.5) == 3
    assert plan_epochs(100.0, 100, 1000, share=1.0) == 10
    # less than one epoch fits, nothing was measured, no time is left: still one epoch
    assert plan_epochs(10.0, 60, 30_000) == 1
    assert plan_epochs(0.0, 600, 1000) == 1
    assert plan_epochs(2000.0, 0, 1000) == 1
    assert plan_epochs(2000.0, -5, 1000) == 1
    # doubling the rate or the budget doubles the plan; doubling the epoch halves it
    base = plan_epochs(500.0, 600, 10_000)
    assert plan_epochs(1000.0, 600, 10_000) in (2 * base, 2 * base + 1)
    assert plan_epochs(500.0, 1200, 10_000) in (2 * base, 2 * base + 1)
    assert plan_epochs(500.0, 600, 20_000) == base // 2


def test_measure_rate_times_real_training_steps(tmp_path: Path, monkeypatch) -> None:
    lines = make_line_dataset(tmp_path / "lines", {"train": 8, "val": 2}, seed=4)
    monkeypatch.chdir(tmp_path)
    config = resolve_config(write_config(tmp_path / "run.yaml", [{"path": str(lines.root)}]))
    rate = measure_rate(config, steps=3, warmup=1)
    assert rate > 0 and np.isfinite(rate)
    assert not (tmp_path / ".quill-probe").exists()
    assert config["trainer"]["max_epochs"] == 2  # the probe changed a copy only


# -- weights only --------------------------------------------------------------------------


def test_weights_only_drops_the_optimizer_and_reads_the_same(
    tmp_path: Path, tiny_checkpoint: tuple[Path, dict]
) -> None:
    path, batch = tiny_checkpoint
    full = torch.load(path, map_location="cpu", weights_only=False)
    assert "optimizer_states" in full
    slim_path = weights_only(path, tmp_path / "out" / "model.ckpt")
    slim = torch.load(slim_path, map_location="cpu", weights_only=True)
    assert set(slim) == {key for key in CHECKPOINT_KEYS if key in full}
    assert "optimizer_states" not in slim and "quill_weights_dtype" not in slim
    assert slim_path.stat().st_size < path.stat().st_size
    original, loaded = load_checkpoint(path), load_checkpoint(slim_path)
    assert loaded.model_name == original.model_name == "ctc_line"
    with torch.no_grad():
        assert torch.equal(loaded.model(batch["images"]), original.model(batch["images"]))


def test_weights_only_over_the_limit_is_bfloat16_and_says_so(
    tmp_path: Path, tiny_checkpoint: tuple[Path, dict]
) -> None:
    path, batch = tiny_checkpoint
    fp32 = weights_only(path, tmp_path / "fp32.ckpt").stat().st_size
    slim_path = weights_only(path, tmp_path / "bf16.ckpt", limit=fp32 - 1)
    assert slim_path.stat().st_size <= fp32 - 1
    slim = torch.load(slim_path, map_location="cpu", weights_only=True)
    assert slim["quill_weights_dtype"] == "bfloat16"
    weights = [v for v in slim["state_dict"].values() if v.is_floating_point()]
    assert weights and all(v.dtype == torch.bfloat16 for v in weights)
    # it reads as the original network with its weights rounded to bfloat16
    original = load_checkpoint(path).model
    rounded = {k: v.to(torch.bfloat16).float() for k, v in original.state_dict().items()}
    original.load_state_dict(rounded)
    with torch.no_grad():
        assert torch.equal(
            load_checkpoint(slim_path).model(batch["images"]), original(batch["images"])
        )
    with pytest.raises(RecipeError, match="even in bfloat16"):
        weights_only(path, tmp_path / "impossible.ckpt", limit=1)


def test_the_module_runs_as_a_script_with_clear_usage(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        gpu_recipe.main(["run", "--help"])
    assert exit_.value.code == 0
    assert "budget_s" in capsys.readouterr().out


def test_packing_a_config_whose_dataset_is_missing_is_one_line_and_exit_2(
    tmp_path: Path, capsys
) -> None:
    """The README's `scripts/train_gpu.sh pack` without the datasets its config names ended
    in a TrainingSetupError traceback and exit 1."""
    config_path = write_config(tmp_path / "run.yaml", [{"path": str(tmp_path / "nowhere")}])
    with pytest.raises(SystemExit) as exit_:
        gpu_recipe.main(["pack", str(config_path), str(tmp_path / "run.tar")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith("error: data: dataset folder not found: ")


# -- end to end ----------------------------------------------------------------------------


def test_run_measures_plans_trains_and_brings_back_a_slim_checkpoint(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """``python -m quill.training.gpu_recipe run`` on a packed tiny run with a 30 s budget."""
    lines = make_line_dataset(tmp_path / "lines", {"train": 8, "val": 2, "test": 2}, seed=5)
    config_path = write_config(tmp_path / "run.yaml", [{"path": str(lines.root)}], epoch_size=64)
    archive = tmp_path / "gpu" / "run.tar"
    gpu_recipe.main(["pack", str(config_path), str(archive)])
    assert "wrote" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    gpu_recipe.main(["run", str(archive), "30", str(out), "checkpoint.save_top_k=1"])
    printed = capsys.readouterr().out
    assert "probe:" in printed and "samples/s ->" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples_per_s"] > 0 and summary["epochs"] >= 1
    assert summary["epoch_size"] == 64 and summary["precision"] == "auto"
    # the hard stop is the budget left after the probe, plus 5%; teardown comes on top
    assert summary["wall_s"] < 30 * 1.05 + 20
    assert (out / "metrics.csv").is_file() and (archive.parent / "unpacked").is_dir()
    slim = torch.load(out / "model.ckpt", map_location="cpu", weights_only=True)
    assert set(slim) <= set(CHECKPOINT_KEYS) and "optimizer_states" not in slim
    assert load_checkpoint(out / "model.ckpt").model_name == "ctc_line"
