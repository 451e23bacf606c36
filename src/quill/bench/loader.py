"""``quill bench data``: how fast the training loader of a config delivers samples.

A GPU trains only as fast as its loader feeds it, and on a 2-core machine the loader shares
the cores with the model. For each way of loading (images decoded and augmented one by one,
or the ink cache with batch augmentation), with and without augmentation, at each worker
count, this draws training batches exactly as ``quill train`` would and reports samples per
second in total and per worker, and samples per CPU-second (the loader processes' user + system
time, which is what a second core or a bigger machine buys), each process on one thread. All
rows are measured in one run, so their ratios hold on this machine whatever its speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from quill.errors import fail

#: Ways of loading compared: (name, data.cache, where the batch is augmented).
MODES = (
    ("per-sample", False, "loader"),
    ("cached", True, "loader"),
    ("cached, GPU augment", True, "device"),
)


@dataclass
class LoaderRate:
    """One measured row: a loading mode at a worker count, with or without augmentation."""

    mode: str
    augment: bool
    workers: int
    samples: int
    wall_s: float
    cpu_s: float

    @property
    def per_second(self) -> float:
        return self.samples / max(self.wall_s, 1e-9)

    @property
    def per_worker(self) -> float:
        return self.per_second / max(self.workers, 1)

    @property
    def per_cpu_second(self) -> float:
        return self.samples / max(self.cpu_s, 1e-9)

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "samples_per_s": round(self.per_second, 1),
            "samples_per_s_per_worker": round(self.per_worker, 1),
            "samples_per_cpu_s": round(self.per_cpu_second, 1),
        }


def _cpu_seconds() -> float:
    """User + system time of this process and its live children (the loader workers)."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            continue
    return total


def measure(
    config: dict[str, Any],
    mode: str,
    augment: bool,
    workers: int,
    batches: int,
) -> LoaderRate:
    """Draw ``batches`` training batches (after one untimed batch that starts the workers)."""
    import copy

    import torch

    from quill.data.datamodule import HTRDataModule
    from quill.preprocess import PreprocessConfig
    from quill.training.train import build_datamodule
    from quill.vocab import Tokenizer

    name, cache, augment_on = next(m for m in MODES if m[0] == mode)
    # One thread per process, as in a loader worker: on a busy machine, idle intra-op threads
    # spin and would be counted as the loader's CPU time.
    torch.set_num_threads(1)
    config = copy.deepcopy(config)
    data = config["data"]
    data.update(
        cache=cache,
        augment_on=augment_on,
        num_workers=workers,
        epoch_size=(batches + 2) * int(data["batch_size"]),
    )
    data["augment"] = (data["augment"] or True) if augment else False
    preprocess = PreprocessConfig.from_dict(data["preprocess"])
    module: HTRDataModule = build_datamodule(
        config, Tokenizer.named(config["model"]["vocabulary"]), preprocess
    )
    device = torch.device("cuda" if augment_on == "device" else "cpu")
    loader = iter(module.train_dataloader())
    next(loader)
    start_wall, start_cpu, samples = time.perf_counter(), _cpu_seconds(), 0
    for _ in range(batches):
        batch = next(loader)
        if augment_on == "device":
            batch["images"] = batch["images"].to(device, non_blocking=True)
            batch = module.on_after_batch_transfer(batch, 0)
            torch.cuda.synchronize()
        samples += len(batch["texts"])
    wall, cpu = time.perf_counter() - start_wall, _cpu_seconds() - start_cpu
    del loader
    return LoaderRate(name, augment, workers, samples, wall, cpu)


def run_bench(
    config: dict[str, Any],
    workers: Sequence[int],
    batches: int,
    modes: Sequence[str],
    advance: Callable[[str], None] = lambda text: None,
) -> list[LoaderRate]:
    rows = []
    for mode in modes:
        for augment in (True, False):
            for count in workers:
                advance(f"{mode}, {'augmented' if augment else 'plain'}, {count} workers")
                rows.append(measure(config, mode, augment, count, batches))
    return rows


def markdown(rows: Sequence[LoaderRate], config_path: str, machine: dict) -> list[str]:
    """The rows as a table, with each row's samples per CPU-second over the per-sample path's."""
    from quill.bench.machine import describe_machine

    base = {(r.augment, r.workers): r.per_cpu_second for r in rows if r.mode == MODES[0][0]}
    lines = [
        f"# quill bench data: {config_path}",
        "",
        f"Machine: {describe_machine(machine)}.",
        "",
        "| loading | augment | workers | samples/s | per worker | per CPU-s | vs per-sample |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        reference = base.get((r.augment, r.workers))
        ratio = f"{r.per_cpu_second / reference:.1f}x" if reference else "-"
        lines.append(
            f"| {r.mode} | {'yes' if r.augment else 'no'} | {r.workers} | {r.per_second:.0f} "
            f"| {r.per_worker:.0f} | {r.per_cpu_second:.0f} | {ratio} |"
        )
    return lines


def data_command(
    config: Annotated[Path, typer.Option(help="Training config whose data section is measured.")],
    workers: Annotated[
        str, typer.Option(help="Loader worker counts to measure, e.g. '0,2'.")
    ] = "0",
    batches: Annotated[
        int, typer.Option(min=1, help="Timed batches per row (after one untimed).")
    ] = 30,
    mode: Annotated[
        list[str] | None,
        typer.Option(
            help="per-sample, cached, or 'cached, GPU augment' (repeat; default: the first two, "
            "and the third when a GPU is present)."
        ),
    ] = None,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Config overrides, e.g. data.batch_size=32.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for data.json/.md.")] = Path("bench/results"),
) -> None:
    """Samples/s of the training loader, per worker and per CPU-second, per loading mode."""
    import torch
    from rich.console import Console

    from quill.bench.machine import machine_info
    from quill.bench.report import write
    from quill.training.config import ConfigError, resolve_config

    console = Console()
    try:
        resolved = resolve_config(config, overrides or [])
        counts = [int(w) for w in workers.split(",")]
    except (ConfigError, ValueError) as exc:
        raise fail(str(exc)) from exc
    names = [m[0] for m in MODES]
    modes = mode or names[: 3 if torch.cuda.is_available() else 2]
    unknown = [m for m in modes if m not in names]
    if unknown or ("cached, GPU augment" in modes and not torch.cuda.is_available()):
        raise fail(f"modes must be among {names} (the GPU one needs CUDA)")
    machine = machine_info()
    with console.status("measuring") as status:
        rows = run_bench(resolved, counts, batches, modes, lambda t: status.update(t))
    lines = markdown(rows, str(config), machine)
    payload = {"config": str(config), "machine": machine, "rows": [r.to_dict() for r in rows]}
    json_path, md_path = write(out, "data", payload, lines)
    console.print("\n".join(lines[4:]))
    console.print(f"wrote {json_path} and {md_path}")
