"""Training on a machine lent for minutes: pack the data, plan the schedule, bring weights back.

A GPU machine borrowed for ten minutes gets no network and a copy of the working tree, so a
run there needs its data in one archive, a schedule that ends inside the time it has, and
results small enough to bring back. Three steps, each usable on its own:

1. :func:`pack` (on the development machine, ``quill train pack``): the run's config with
   every source's manifest and ink cache, and the weights it starts from, in one tar file of
   at most :data:`ARCHIVE_LIMIT` bytes. Caches travel at 4 bits per pixel (16 ink levels,
   nibble-packed and compressed); no image file is needed on the other side.
2. :func:`unpack` there, then :func:`run`: train for a few steps to measure samples/s with the
   real model, loader and precision (bf16 where the GPU has it), set ``max_epochs`` so that
   the cosine schedule ends inside the budget (a schedule cut short by ``max_time`` never
   decays), train, and write a weights-only checkpoint of at most :data:`CHECKPOINT_LIMIT`
   bytes, the summary and the metrics to the output folder.
3. Back home, ``quill stage`` the checkpoint.

``scripts/train_gpu.sh`` runs both ends through ``python -m quill.training.gpu_recipe``,
which needs only the training dependencies (the GPU machine has no MLflow: runs log to CSV).
"""

from __future__ import annotations

import copy
import io
import json
import lzma
import math
import shutil
import tarfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from quill.data import ink_cache
from quill.data.manifest import MANIFEST_NAME, Manifest
from quill.errors import QuillError
from quill.model_files import METADATA_FILE, TORCHSCRIPT_FILE
from quill.preprocess import PreprocessConfig
from quill.training.config import resolve_config
from quill.training.train import (
    build_datamodule,
    build_trainer,
    create_run_parts,
    project_path,
    train,
)
from quill.vocab import Tokenizer

#: The most a packed run may weigh (what the device tool carries with the working tree).
ARCHIVE_LIMIT = 60_000_000
#: The most a checkpoint may weigh to come back from the device.
CHECKPOINT_LIMIT = 16_000_000
PACKED_CONFIG = "config.yaml"
PACKED_CACHE = "ink-q4.xz"
PACKED_INDEX = "ink-index.json.xz"
PACKED_MANIFEST = "manifest.jsonl.xz"
#: The models a run reads besides its data, by report part: (config section, key, folder in
#: the archive). Each travels as fp16 weights (a .ckpt) or a staged model's TorchScript.
PACKED_WEIGHTS = {
    "init weights": ("model", "init_from", "init"),
    "teacher weights": ("distill", "teacher", "teacher"),
}
#: What a weights-only checkpoint keeps of a Lightning one.
CHECKPOINT_KEYS = ("state_dict", "hyper_parameters", "quill_family", "epoch", "global_step")
#: Share of the budget the planned epochs may fill; the rest is start-up, validation, test.
BUDGET_SHARE = 0.85


class RecipeError(QuillError, ValueError):
    """The run cannot be packed, planned or finished as asked; the message says why."""

    code = "gpu_recipe_error"


# -- 1. pack ------------------------------------------------------------------------------


def quantise(pixels: np.ndarray) -> np.ndarray:
    """uint8 ink (0-255) -> 16 levels packed two per byte (odd lengths get a zero nibble).

    >>> quantise(np.array([0, 255, 136], np.uint8)).tolist()
    [240, 8]
    """
    levels = ((pixels.astype(np.uint16) + 8) // 17).astype(np.uint8)  # 0..15
    if levels.size % 2:
        levels = np.append(levels, np.uint8(0))
    return (levels[0::2] | (levels[1::2] << 4)).astype(np.uint8)


def dequantise(packed: np.ndarray, size: int) -> np.ndarray:
    """The inverse of :func:`quantise`: ``size`` uint8 pixels, each level times 17.

    >>> dequantise(quantise(np.array([0, 255, 136], np.uint8)), 3).tolist()
    [0, 255, 136]
    """
    levels = np.empty(packed.size * 2, np.uint8)
    levels[0::2], levels[1::2] = packed & 0x0F, packed >> 4
    return levels[:size] * np.uint8(17)


@dataclass
class PackReport:
    archive: Path
    bytes: int
    parts: dict[str, int]  # member group -> bytes in the archive
    lines: dict[str, int]  # source -> cached lines


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> int:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), int(time.time())
    tar.addfile(info, io.BytesIO(data))
    return len(data)


def pack(
    config_path: str | Path,
    overrides: list[str],
    out: Path,
    limit: int = ARCHIVE_LIMIT,
    splits: tuple[str, ...] = ("train", "val"),
) -> PackReport:
    """Write the run of ``config_path`` (+ overrides) as one tar at ``out``; see the module.

    Only the samples of ``splits`` travel (test lines are scored at home, on the staged
    model), so the packed datasets are new dataset versions of their own."""

    config = resolve_config(config_path, overrides)
    preprocess = PreprocessConfig.from_dict(config["data"]["preprocess"])
    if preprocess.kind != "line" or not config["data"]["cache"]:
        raise RecipeError("only line runs with data.cache: true can be packed")
    tokenizer = Tokenizer.named(config["model"]["vocabulary"])
    datamodule = build_datamodule(config, tokenizer, preprocess)
    packed = copy.deepcopy(config)
    packed["data"]["cache_dir"] = None
    packed["tracking"]["logger"] = "csv"
    packed["tracking"]["system_metrics"] = False
    parts: dict[str, int] = {}
    lines: dict[str, int] = {}
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        _write_archive(out, datamodule, packed, preprocess, splits, parts, lines)
    except BaseException:
        out.unlink(missing_ok=True)  # never leave half an archive behind
        raise
    size = out.stat().st_size
    if size > limit:
        out.unlink()
        biggest = ", ".join(
            f"{k} {v / 1e6:.1f} MB" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])[:4]
        )
        raise RecipeError(
            f"the packed run is {size / 1e6:.1f} MB, over the {limit / 1e6:.0f} MB limit "
            f"(largest: {biggest}); use fewer synthetic lines or a smaller init model"
        )
    return PackReport(out, size, parts, lines)


def _write_archive(
    out: Path,
    datamodule: Any,
    packed: dict[str, Any],
    preprocess: PreprocessConfig,
    splits: tuple[str, ...],
    parts: dict[str, int],
    lines: dict[str, int],
) -> None:
    """Write the tar of :func:`pack`; ``packed`` (the config) gets the archive's paths."""

    with tarfile.open(out, "w") as tar:
        for source, entry in zip(datamodule.data, packed["data"]["sources"], strict=True):
            name, cache = source.spec.name, source.cache
            assert cache is not None  # cache=True above
            folder = f"sources/{name}"
            kept = Manifest(source.manifest.root, [x for x in source.manifest if x.split in splits])
            rows = [cache.row(x.image) for x in kept if x.kind == "line" and x.image in cache]
            pixels = np.concatenate(
                [cache.image(r).ravel() for r in rows] or [np.zeros(0, np.uint8)]
            )
            index = {
                "size": int(pixels.shape[0]),
                "widths": cache.widths[rows].tolist(),
                "key": ink_cache.cache_key(kept.version, preprocess),
                "height": cache.height,
                "paths": [cache.paths[r] for r in rows],
                "failures": {
                    k: v for k, v in cache.failures.items() if k in {x.image for x in kept}
                },
            }
            manifest_text = "".join(
                json.dumps(asdict(x), ensure_ascii=False) + "\n" for x in kept
            ).encode()
            index_text = json.dumps(index, ensure_ascii=False).encode()
            members = {
                PACKED_MANIFEST: manifest_text,
                PACKED_INDEX: index_text,
                PACKED_CACHE: quantise(pixels).tobytes(),
            }
            parts[name] = sum(
                _add_bytes(tar, f"{folder}/{member}", lzma.compress(data, preset=6))
                for member, data in members.items()
            )
            entry["path"] = folder
            lines[name] = len(rows)
        for part, (section, key, folder) in PACKED_WEIGHTS.items():
            source = packed[section][key]
            if source:
                where = f"{section}.{key}"
                parts[part], packed[section][key] = _pack_weights(
                    tar, project_path(source), folder, where
                )
        config_text = yaml.safe_dump(packed, sort_keys=False, allow_unicode=True)
        parts["config"] = _add_bytes(tar, PACKED_CONFIG, config_text.encode())


def _pack_weights(tar: tarfile.TarFile, source: Path, folder: str, where: str) -> tuple[int, str]:
    """Add a model the run reads (``where``: the setting naming it) under ``folder``: a .ckpt,
    or a staged model's TorchScript + metadata; returns the bytes added and its packed path."""
    if source.is_file():
        import torch

        # A warm start needs the weights only, and float16 halves them (the run trains fp32).
        checkpoint = torch.load(source, map_location="cpu", weights_only=True)
        checkpoint = {k: v for k, v in checkpoint.items() if k in CHECKPOINT_KEYS}
        checkpoint["state_dict"] = {
            k: v.half() if v.is_floating_point() else v for k, v in checkpoint["state_dict"].items()
        }
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        name = f"{folder}/{source.name}"
        return _add_bytes(tar, name, buffer.getvalue()), name
    files = [source / METADATA_FILE, source / TORCHSCRIPT_FILE]
    if not all(f.is_file() for f in files):
        raise RecipeError(f"{where}: {source} is neither a .ckpt nor a staged model")
    name = f"{folder}/model"
    return sum(_add_bytes(tar, f"{name}/{f.name}", f.read_bytes()) for f in files), name


# -- 2. unpack, plan, run -----------------------------------------------------------------


def unpack(archive: Path, into: Path) -> Path:
    """Extract a packed run into ``into`` and rebuild its ink caches; returns its config."""

    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    # the packed paths are relative to the archive: make them this folder's
    config = resolve_config(into / PACKED_CONFIG)
    for source in config["data"]["sources"]:
        source["path"] = str((into / source["path"]).resolve())
    for section, key, _ in PACKED_WEIGHTS.values():
        if config[section][key]:
            config[section][key] = str((into / config[section][key]).resolve())
    config["output_dir"] = str((into / "outputs").resolve())
    (into / PACKED_CONFIG).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    preprocess = PreprocessConfig.from_dict(config["data"]["preprocess"])
    for folder in sorted((into / "sources").iterdir()):
        (folder / MANIFEST_NAME).write_bytes(_unxz(folder / PACKED_MANIFEST))
        index = json.loads(_unxz(folder / PACKED_INDEX).decode("utf-8"))
        packed = np.frombuffer(_unxz(folder / PACKED_CACHE), np.uint8)
        pixels = dequantise(packed, int(index["size"]))
        widths = np.asarray(index["widths"], dtype=np.int64)
        cache = ink_cache.InkCache(
            pixels, int(index["height"]), index["paths"], widths, index["failures"]
        )
        if index["height"] != preprocess.height:
            raise RecipeError(
                f"{folder}: cached at height {index['height']}, not {preprocess.height}"
            )
        ink_cache.save(cache, folder / ".ink-cache", "lines", index["key"])
    return into / PACKED_CONFIG


def _unxz(path: Path) -> bytes:
    return lzma.decompress(path.read_bytes())


def plan_epochs(
    samples_per_s: float, budget_s: float, epoch_size: int, share: float = BUDGET_SHARE
) -> int:
    """Epochs of ``epoch_size`` samples that fit ``share`` of ``budget_s`` at the measured rate.

    >>> plan_epochs(2000.0, 600, 30_000)
    34
    >>> plan_epochs(10.0, 60, 30_000)
    1
    """
    if epoch_size <= 0:
        raise ValueError(f"epoch_size must be positive, not {epoch_size}")
    return max(1, math.floor(samples_per_s * budget_s * share / epoch_size))


def measure_rate(config: dict[str, Any], steps: int = 30, warmup: int = 5) -> float:
    """Training samples/s of this config on this machine: the real model, loader, precision
    and device, timed over ``steps`` optimiser steps after ``warmup`` untimed ones."""
    import lightning as L

    probe = copy.deepcopy(config)
    probe["trainer"].update(
        max_steps=warmup + steps,
        max_epochs=None,
        max_time=None,
        limit_val_batches=0,
        enable_progress_bar=False,
    )
    probe["tracking"]["test_after_fit"] = False
    datamodule, module, _ = create_run_parts(probe)

    class Clock(L.Callback):
        samples, start, end = 0, 0.0, 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
            if trainer.global_step == warmup:
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            if trainer.global_step > warmup:
                self.samples += len(batch["texts"])
                self.end = time.perf_counter()

    clock = Clock()
    trainer = build_trainer(probe, False, [clock], Path(".quill-probe"))
    trainer.fit(module, datamodule=datamodule)
    shutil.rmtree(".quill-probe", ignore_errors=True)
    return clock.samples / max(clock.end - clock.start, 1e-9)


def weights_only(checkpoint: Path, out: Path, limit: int = CHECKPOINT_LIMIT) -> Path:
    """A copy of a Lightning checkpoint without optimiser, scheduler and loop state, which
    ``quill stage`` and ``--init-from`` read as they read the full one. Over ``limit`` bytes
    the weights are stored as bfloat16 (and the checkpoint says so)."""
    import torch

    full = torch.load(checkpoint, map_location="cpu", weights_only=False)
    slim = {key: full[key] for key in CHECKPOINT_KEYS if key in full}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(slim, out)
    if out.stat().st_size > limit:
        slim["state_dict"] = {
            k: v.to(torch.bfloat16) if v.is_floating_point() else v
            for k, v in slim["state_dict"].items()
        }
        slim["quill_weights_dtype"] = "bfloat16"
        torch.save(slim, out)
    if out.stat().st_size > limit:
        size = out.stat().st_size
        out.unlink()
        raise RecipeError(f"{out} is {size / 1e6:.1f} MB even in bfloat16")
    return out


def run(
    config_path: Path,
    budget_s: float,
    out: Path,
    overrides: Sequence[str] = (),
    probe_steps: int = 30,
) -> dict[str, Any]:
    """Measure, plan, train and write ``model.ckpt``, ``summary.json`` and the metrics CSV."""

    started = time.perf_counter()
    config = resolve_config(config_path, overrides)
    epoch_size = int(config["data"]["epoch_size"] or 0)
    if epoch_size <= 0:
        raise RecipeError("data.epoch_size must be set to plan epochs from a rate")
    try:
        rate = measure_rate(config, probe_steps)
    except RuntimeError as exc:
        if config["trainer"]["precision"] != "auto":
            raise
        # bf16 is what "auto" picks on a GPU; a kernel without it falls back to fp32, said.
        print(f"probe failed under auto precision ({exc}); training in 32-true", flush=True)
        config["trainer"]["precision"] = "32-true"
        rate = measure_rate(config, probe_steps)
    remaining = budget_s - (time.perf_counter() - started)
    if remaining < 10:
        raise RecipeError(
            f"start-up and the throughput probe took {time.perf_counter() - started:.0f} s of "
            f"the {budget_s:.0f} s budget; give the run more time"
        )
    epochs = plan_epochs(rate, remaining, epoch_size)
    config["trainer"]["max_epochs"] = epochs
    hard_stop = int(remaining * 1.05)
    config["trainer"]["max_time"] = (
        f"00:{hard_stop // 3600:02d}:{hard_stop % 3600 // 60:02d}:{hard_stop % 60:02d}"
    )
    print(
        f"probe: {rate:.0f} samples/s -> {epochs} epochs of {epoch_size} in {remaining:.0f} s",
        flush=True,
    )
    result = train(config, config_path=str(config_path))
    out.mkdir(parents=True, exist_ok=True)
    best = result.best_checkpoint
    if best is None:
        raise RecipeError("training ended without a checkpoint")
    weights_only(best, out / "model.ckpt")
    for metrics in sorted(result.output_dir.rglob("metrics.csv")):
        shutil.copy(metrics, out / "metrics.csv")
    summary = {
        "samples_per_s": rate,
        "precision": config["trainer"]["precision"],
        "epochs": epochs,
        "epoch_size": epoch_size,
        "best_score": result.best_score,
        "best_checkpoint": best.name,
        "metrics": result.metrics,
        "wall_s": time.perf_counter() - started,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def main(argv: list[str] | None = None) -> None:
    """``python -m quill.training.gpu_recipe pack|run ...`` (see ``--help``)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m quill.training.gpu_recipe",
        description="Train on a machine lent for minutes: pack here, run there.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="config + data caches + init weights -> one tar")
    packing.add_argument("config", type=Path)
    packing.add_argument("out", type=Path, help="the archive to write, e.g. .gpu/run.tar")
    packing.add_argument("overrides", nargs="*", help="config overrides, key=value")
    running = commands.add_parser("run", help="unpack, measure, plan the epochs, train")
    running.add_argument("archive", type=Path)
    running.add_argument("budget_s", type=float, help="seconds the whole run may take")
    running.add_argument("out", type=Path, help="folder for model.ckpt, summary.json, metrics")
    running.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = parser.parse_args(argv)
    try:
        if args.command == "pack":
            report = pack(args.config, args.overrides, args.out)
            for part, size in report.parts.items():
                print(f"  {part:24s} {size / 1e6:7.2f} MB")
            lines = ", ".join(f"{name} {n}" for name, n in report.lines.items())
            print(f"wrote {report.archive}: {report.bytes / 1e6:.1f} MB; lines: {lines}")
        else:
            config_path = unpack(args.archive, args.archive.parent / "unpacked")
            summary = run(config_path, args.budget_s, args.out, args.overrides)
            print(json.dumps(summary, indent=1, default=str))
    except QuillError as exc:  # a recipe's own, or the training setup's (a missing dataset)
        parser.exit(2, f"error: {exc}\n")


if __name__ == "__main__":
    main()
