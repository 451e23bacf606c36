"""Speed: per-image latency percentiles and throughput of every system on fixed inputs.

Each measurement is one (system, kind, batch size, thread count): a few untimed warm-up
calls (first-call allocation, lazy initialisation, caches), then ``calls`` timed calls of
``batch`` images each, cycling through the same fixed inputs for every system. A system that
memoises across reads (Quill's language model) forgets before each timed call, so the
repeated inputs cost what new text costs. The systems
of a row take turns call by call, so load from other processes hits them alike. A call's
wall time divided by its batch size is the per-image latency; images per second of wall time
is the throughput. Peers have no batching, so their batch-N number is N sequential reads,
which is exactly what a user gets from them.

Whole pages (kind ``page``) are timed the same way, one page per call, through each system's
own page reading (:class:`~quill.bench.systems.ReadsPages`: Quill's ``Recognizer.predict``
with ``kind="auto"``, which finds the lines; Tesseract's block mode; RapidOCR's detector),
because a user who photographs a page waits for the segmentation as much as for the reading.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from quill.bench.inputs import SpeedInput, TimedKind
from quill.bench.peers import INSTALL_HINT, TESSERACT_PSM
from quill.bench.systems import (
    ForgetsMemos,
    QuillSystem,
    ReadsPages,
    ReportsStages,
    System,
    SystemUnavailable,
)
from quill.evaluation import score
from quill.model_files import ONNX_INT8_FILE
from quill.staged_model import SINGLE_PASS, ModelLoadError, StagedModel
from quill.staging.quantize import QuantizeError, add_int8

if TYPE_CHECKING:
    from quill.bench.page_sets import PageSet

PERCENTILES = (50, 95, 99)


@dataclass
class Timing:
    """The timed calls of one (system, kind, batch, threads)."""

    system: str
    kind: TimedKind
    batch: int
    threads: int
    call_ms: list[float] = field(default_factory=list)
    #: Mean milliseconds per image in each stage, for systems that report stages.
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def images(self) -> int:
        return self.batch * len(self.call_ms)

    def per_image_ms(self, q: float) -> float:
        """The ``q``-th percentile of per-image latency (call time / batch size).

        >>> Timing("s", "line", 2, 1, [10.0, 20.0, 30.0]).per_image_ms(50)
        10.0
        """
        return float(np.percentile(self.call_ms, q)) / self.batch

    @property
    def mean_ms(self) -> float:
        """Mean per-image latency.

        >>> Timing("s", "page", 1, 1, [100.0, 300.0]).mean_ms
        200.0
        """
        return float(np.mean(self.call_ms)) / self.batch

    @property
    def throughput(self) -> float:
        """Images per second over all timed calls.

        >>> Timing("s", "line", 4, 1, [100.0, 100.0]).throughput
        40.0
        """
        return self.images / (sum(self.call_ms) / 1000.0)

    def to_dict(self) -> dict:
        return {
            "system": self.system,
            "kind": self.kind,
            "batch": self.batch,
            "threads": self.threads,
            "calls": len(self.call_ms),
            "images": self.images,
            **{f"p{q}_ms": round(self.per_image_ms(q), 3) for q in PERCENTILES},
            "mean_ms": round(self.mean_ms, 3),
            "throughput_per_s": round(self.throughput, 2),
            "stage_ms_per_image": {k: round(v, 3) for k, v in self.stages.items()},
            "call_ms": [round(ms, 3) for ms in self.call_ms],
        }


def batches(inputs: Sequence[SpeedInput], batch: int, count: int) -> list[list[bytes]]:
    """``count`` batches of ``batch`` images, cycling through ``inputs`` in order.

    >>> data = [SpeedInput(bytes([i]), "", "line") for i in range(3)]
    >>> [[b[0] for b in group] for group in batches(data, 2, 3)]
    [[0, 1], [2, 0], [1, 2]]
    """
    return [
        [inputs[(call * batch + j) % len(inputs)].image for j in range(batch)]
        for call in range(count)
    ]


def page_inputs(pages: PageSet) -> list[SpeedInput]:
    """The pages of a page set (:func:`quill.bench.page_sets.load_pages`) as timed inputs: each
    image's bytes as stored, with the page's reference text."""
    return [SpeedInput(page.image.read_bytes(), page.text, "page") for page in pages.pages]


def reads(system: System, kind: TimedKind) -> bool:
    """Whether ``system`` can read ``kind``: every system reads lines and paragraphs, only a
    :class:`~quill.bench.systems.ReadsPages` finds the lines of a whole page itself."""
    return kind != "page" or isinstance(system, ReadsPages)


def read(system: System, images: Sequence[bytes], kind: TimedKind) -> list[str]:
    """``system``'s text for each image: ``read`` for lines and paragraphs, one
    ``read_page`` per image for whole pages."""
    if kind != "page":
        return system.read(images, kind)
    if not isinstance(system, ReadsPages):
        raise SystemUnavailable(f"{system.name} cannot read whole pages")
    return [system.read_page(image).text for image in images]


def time_systems(
    systems: Sequence[System],
    inputs: Sequence[SpeedInput],
    *,
    batch: int,
    threads: int,
    calls: int,
    warmup: int = 2,
) -> tuple[list[Timing], dict[str, str]]:
    """Each system's latency over ``calls`` timed calls after ``warmup`` untimed ones.

    The systems take turns call by call (round robin) rather than one after another, so a
    change in the machine's load during the row affects them all alike and their ratios
    stay fair on a shared machine; and each round starts with the next system, so that none
    always runs right after a peer has filled the caches with its own model (when the same
    int8 runtime went first in every round as ``auto`` and third as ``onnx-int8``, it read a
    Hooker line in 4.9 and 4.2 ms). A system that raises is dropped from the row; the second
    value maps its name to the error.
    """
    if not inputs:
        raise ValueError("no inputs to time")
    kind = inputs[0].kind
    timings = {system.name: Timing(system.name, kind, batch, threads) for system in systems}
    failures: dict[str, str] = {}
    active = list(systems)
    for number, images in enumerate(batches(inputs, batch, warmup + calls)):
        first = number % max(1, len(active))
        for system in active[first:] + active[:first]:
            if number == warmup and isinstance(system, ReportsStages):
                system.stage_ms = dict.fromkeys(system.stage_ms, 0.0)
            if isinstance(system, ForgetsMemos):
                system.forget_memos()  # the same inputs again must not read as cheaper
            start = time.perf_counter()
            try:
                read(system, images, kind)
            except Exception as exc:  # noqa: BLE001 - recorded; the other systems go on
                failures[system.name] = f"{type(exc).__name__}: {exc}"
                active.remove(system)
                continue
            if number >= warmup:
                timings[system.name].call_ms.append((time.perf_counter() - start) * 1000.0)
    for system in active:
        if isinstance(system, ReportsStages):
            timing = timings[system.name]
            timing.stages = {stage: ms / timing.images for stage, ms in system.stage_ms.items()}
    return [timings[system.name] for system in active], failures


def speedups(timings: Sequence[Timing], baseline: str) -> dict[int, float]:
    """For each timing (by index): the baseline's p50 / its p50 under the same conditions.

    >>> rows = [Timing("eager", "line", 1, 1, [30.0]), Timing("onnx", "line", 1, 1, [10.0])]
    >>> speedups(rows, "eager")
    {0: 1.0, 1: 3.0}
    """
    reference = {
        (t.kind, t.batch, t.threads): t.per_image_ms(50) for t in timings if t.system == baseline
    }
    ratios = {}
    for index, timing in enumerate(timings):
        base = reference.get((timing.kind, timing.batch, timing.threads))
        if base is not None:
            ratios[index] = round(base / timing.per_image_ms(50), 2)
    return ratios


def is_quill(name: str) -> bool:
    """Whether a system name is one of Quill's runtimes (``quill``, ``quill-<variant>``)."""
    return name == "quill" or name.startswith("quill-")


def peer_ratios(timings: Sequence[Timing]) -> dict[int, dict[str, float]]:
    """For each Quill timing (by index): each peer's p50 over its p50 under the same kind,
    batch and threads (above 1: Quill is that many times faster).

    >>> rows = [Timing("quill-onnx", "page", 1, 1, [200.0]), Timing("tesseract", "page", 1, 1,
    ...         [800.0]), Timing("tesseract", "line", 1, 1, [80.0])]
    >>> peer_ratios(rows)
    {0: {'tesseract': 4.0}}
    """
    ratios: dict[int, dict[str, float]] = {}
    for index, timing in enumerate(timings):
        if not is_quill(timing.system):
            continue
        ratios[index] = {
            other.system: round(other.per_image_ms(50) / timing.per_image_ms(50), 2)
            for other in timings
            if not is_quill(other.system)
            and (other.kind, other.batch, other.threads)
            == (timing.kind, timing.batch, timing.threads)
        }
    return ratios


def batch_gains(timings: Sequence[Timing]) -> dict[int, float]:
    """For each timing at a batch over 1 (by index): its throughput over the same system's at
    batch 1, same kind and threads (what batching buys).

    >>> rows = [Timing("q", "line", 1, 1, [10.0, 10.0]), Timing("q", "line", 8, 1, [40.0])]
    >>> batch_gains(rows)
    {1: 2.0}
    """
    single = {(t.system, t.kind, t.threads): t.throughput for t in timings if t.batch == 1}
    gains = {}
    for index, timing in enumerate(timings):
        base = single.get((timing.system, timing.kind, timing.threads))
        if timing.batch > 1 and base:
            gains[index] = round(timing.throughput / base, 2)
    return gains


#: Quill runtimes compared: eager PyTorch (the baseline), the two exports, and int8 ONNX;
#: ``auto`` is what a user gets (the runtime ``--backend auto`` chooses on this machine, named
#: in the row's settings as ``chosen_backend``).
#: ``onnx-greedy`` is ONNX with greedy CTC decoding whatever the model's decoding section says;
#: ``onnx-python-beam`` is ONNX with the beam search in Python instead of compiled (the same
#: answers: what the compiled search saves, or what a build without a C compiler costs).
#: ``auto-single-pass`` is ``auto`` reading each line once where the model's decoding averages
#: the network over vertical shifts (:mod:`quill.inference.shifts`): what the shifts cost.
VARIANTS = (
    "eager",
    "torchscript",
    "onnx",
    "onnx-int8",
    "auto",
    "onnx-greedy",
    "onnx-python-beam",
    "auto-single-pass",
)
BASELINE = "quill-eager"
#: int8 "keeps accuracy" if its CER on the timed inputs is at most this much above float32's.
INT8_TOLERANCE = 0.005
#: Fewest timed calls per row, however large the batch (percentiles need a few calls).
MIN_CALLS = 5


def calls_for(batch: int, images: int, min_calls: int = MIN_CALLS) -> int:
    """Timed calls so that about ``images`` images are read, but never fewer than ``min_calls``.

    >>> calls_for(1, 32), calls_for(8, 32), calls_for(16, 32)
    (32, 5, 5)
    """
    return max(min_calls, -(-images // batch))


def load_quill_variants(
    model_dir: Path, variants: Sequence[str], threads: int, int8_dir: Path
) -> tuple[list[System], dict[str, str]]:
    """The Quill systems of ``variants`` (``quill-<variant>``) and why any could not load.

    ``onnx-int8`` runs the model's own int8 copy (``quill model quantize``); a model without
    one is copied into ``int8_dir`` and quantised there on first use (its readings are
    measured here, not refused), and that copy is reused after.
    """
    systems: list[System] = []
    unavailable: dict[str, str] = {}
    for variant in variants:
        name = f"quill-{variant}"
        try:
            if variant == "onnx-int8":
                source = model_dir
                if not StagedModel.load(model_dir).files_of("onnx-int8"):
                    if not (int8_dir / ONNX_INT8_FILE).is_file():
                        shutil.copytree(model_dir, int8_dir, dirs_exist_ok=True)
                        add_int8(int8_dir, max_drift=math.inf)
                    source = int8_dir
                systems.append(QuillSystem.load(source, "onnx-int8", threads, name))
            elif variant == "onnx-greedy":
                systems.append(QuillSystem.load(model_dir, "onnx", threads, name, "greedy"))
            elif variant == "auto-single-pass":
                systems.append(QuillSystem.load(model_dir, "auto", threads, name, SINGLE_PASS))
            elif variant == "onnx-python-beam":
                system = QuillSystem.load(model_dir, "onnx", threads, name)
                system.recognizer.search_in_python()
                systems.append(system)
            else:
                systems.append(QuillSystem.load(model_dir, variant, threads, name))
        except (SystemUnavailable, QuantizeError, ModelLoadError) as exc:
            unavailable[name] = str(exc)
    return systems, unavailable


def input_accuracy(
    system: System, inputs: Mapping[TimedKind, Sequence[SpeedInput]], batch: int
) -> dict[str, float]:
    """CER of ``system`` on the timed inputs of each kind (kinds it fails on or cannot read
    are left out)."""
    cers: dict[str, float] = {}
    for kind, items in inputs.items():
        texts: list[str] = []
        try:
            for start in range(0, len(items), batch):
                chunk = items[start : start + batch]
                texts += read(system, [item.image for item in chunk], kind)
        except Exception:  # noqa: BLE001 - the timing row records the error; no CER here
            continue
        cers[kind] = score(texts, [item.text for item in items]).cer
    return cers


def int8_verdict(accuracy: Mapping[str, Mapping[str, float]]) -> dict | None:
    """Whether int8 ONNX kept float32 ONNX's CER (within ``INT8_TOLERANCE``) on each kind.

    >>> int8_verdict({"quill-onnx": {"line": 0.10}, "quill-onnx-int8": {"line": 0.102}})
    {'tolerance': 0.005, 'line': {'fp32': 0.1, 'int8': 0.102, 'kept': True}}
    """
    fp32, int8 = accuracy.get("quill-onnx"), accuracy.get("quill-onnx-int8")
    if not fp32 or not int8:
        return None
    verdict: dict = {"tolerance": INT8_TOLERANCE}
    for kind in fp32.keys() & int8.keys():
        kept = int8[kind] - fp32[kind] <= INT8_TOLERANCE
        verdict[kind] = {"fp32": fp32[kind], "int8": int8[kind], "kept": kept}
    return verdict


@dataclass(frozen=True)
class SpeedPlan:
    """What to time: each (threads, kind, batch) row for every system. Whole pages are timed
    at batch 1 only: a page is one request, and no system batches pages."""

    batches: tuple[int, ...] = (1, 8)
    threads: tuple[int, ...] = (1,)
    #: Images timed per row (see :func:`calls_for`).
    images: int = 32
    warmup: int = 2


@dataclass
class SpeedRun:
    """Everything a speed run measured."""

    timings: list[Timing] = field(default_factory=list)
    #: "system kind batch=B threads=T" -> the error that stopped that row.
    failures: dict[str, str] = field(default_factory=dict)
    systems: dict[str, dict] = field(default_factory=dict)
    #: system -> kind -> CER on the timed inputs.
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)


def run_speed(
    load: Callable[[int], Sequence[System]],
    inputs: Mapping[TimedKind, Sequence[SpeedInput]],
    plan: SpeedPlan,
    status: Callable[[str], None] = lambda _: None,
    advance: Callable[[int], None] = lambda _: None,
) -> SpeedRun:
    """Time every system ``load(threads)`` returns, per thread count, kind and batch size.

    Each system's CER on the inputs is measured once (at the first thread count), so a fast
    runtime that reads differently (int8) shows it beside its speed. A row that fails is
    recorded and the rest still run. ``status`` receives a description as each step starts,
    ``advance(n)`` is called as the rows of ``n`` systems finish (for a progress bar).
    """
    run = SpeedRun()
    for threads in plan.threads:
        systems = load(threads)
        for system in systems:
            run.systems.setdefault(system.name, system.describe())
            if system.name not in run.accuracy:
                status(f"{system.name}: accuracy on the inputs")
                run.accuracy[system.name] = input_accuracy(system, inputs, max(plan.batches))
        for kind, items in inputs.items():
            readers = [system for system in systems if reads(system, kind)]
            for batch in (1,) if kind == "page" else plan.batches:
                status(f"{kind} batch={batch} threads={threads}: {len(readers)} systems in turn")
                timings, failures = time_systems(
                    readers,
                    items,
                    batch=batch,
                    threads=threads,
                    calls=calls_for(batch, plan.images),
                    warmup=plan.warmup,
                )
                run.timings += timings
                for name, error in failures.items():
                    run.failures[f"{name} {kind} batch={batch} threads={threads}"] = error
                advance(len(readers))
    return run


#: Cold starts: the whole process, as someone scripting a folder one file at a time pays it.
@dataclass
class ColdStart:
    """Wall times of one system's command, each run a fresh process reading one line."""

    system: str
    command: list[str]
    runs_s: list[float] = field(default_factory=list)
    text: str = ""

    @property
    def p50_s(self) -> float:
        """Median wall time in seconds.

        >>> ColdStart("s", ["true"], [0.3, 0.1, 0.2]).p50_s
        0.2
        """
        return float(np.percentile(self.runs_s, 50))

    def to_dict(self) -> dict:
        return {
            "system": self.system,
            "command": " ".join(self.command),
            "runs": len(self.runs_s),
            "p50_s": round(self.p50_s, 3),
            "min_s": round(min(self.runs_s), 3),
            "max_s": round(max(self.runs_s), 3),
            "runs_s": [round(s, 3) for s in self.runs_s],
            "text": self.text,
        }


def quill_command() -> list[str]:
    """How this installation starts ``quill``: its console script beside this Python, or the
    same entry point through ``python -c``."""
    script = Path(sys.executable).with_name("quill")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from quill.cli import main; main()"]


def cold_start_commands(
    model_dir: Path | None, image: Path, threads: int, peers: Sequence[str]
) -> tuple[dict[str, tuple[list[str], dict[str, str]]], dict[str, str]]:
    """Per system, the command (and environment additions) that reads ``image`` from a cold
    process: ``quill predict --kind line`` with the model's own decoding, and ``tesseract
    --psm 7``: both told that the image is one line, as the speed rows run them. The second
    value says why a system was left out. RapidOCR has no command-line program of its own,
    so it is not part of this row."""
    commands: dict[str, tuple[list[str], dict[str, str]]] = {}
    missing: dict[str, str] = {}
    if model_dir is not None:
        quill = [*quill_command(), "predict", str(image), "--model", str(model_dir)]
        commands["quill"] = ([*quill, "--kind", "line", "--threads", str(threads)], {})
    if "tesseract" in peers:
        binary = shutil.which("tesseract")
        if binary is None:
            missing["tesseract"] = f"peer missing: no `tesseract` program on PATH; {INSTALL_HINT}"
        else:
            tesseract = [binary, str(image), "stdout", "-l", "eng", "--psm"]
            env = {"OMP_THREAD_LIMIT": str(threads)}
            commands["tesseract"] = ([*tesseract, str(TESSERACT_PSM["line"])], env)
    return commands, missing


def time_cold_starts(
    commands: Mapping[str, tuple[list[str], dict[str, str]]],
    runs: int,
    warmup: int = 1,
    timeout_s: float = 120.0,
) -> tuple[list[ColdStart], dict[str, str]]:
    """Each command run ``warmup`` + ``runs`` times as a new process, the systems taking turns
    run by run (so load from other processes hits them alike). The warm-up runs fill the
    operating system's file cache and Quill's own (its backend choice and compiled language
    model, :mod:`quill.runtimes.cache`), as the first of a user's calls does. A command that
    fails is dropped; the second value maps its system to the error."""
    rows = {name: ColdStart(name, command) for name, (command, _) in commands.items()}
    failures: dict[str, str] = {}
    for number in range(warmup + runs):
        for name, (command, env) in commands.items():
            if name in failures:
                continue
            start = time.perf_counter()
            try:
                done = subprocess.run(
                    command,
                    capture_output=True,
                    env={**os.environ, **env},
                    timeout=timeout_s,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                failures[name] = f"{type(exc).__name__}: {exc}"
                continue
            elapsed = time.perf_counter() - start
            if done.returncode != 0:
                message = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
                failures[name] = f"exit code {done.returncode}: {' '.join(message)}"
                continue
            rows[name].text = done.stdout.decode(errors="replace").strip()
            if number >= warmup:
                rows[name].runs_s.append(elapsed)
    return [row for name, row in rows.items() if name not in failures], failures


def cold_start_payload(
    rows: Sequence[ColdStart], missing: Mapping[str, str], failures: Mapping[str, str]
) -> dict:
    """The cold-start section of ``speed.json``: each system's runs, and Quill's p50 against
    each other system's (``quill_vs``: their p50 / Quill's, above 1 when Quill starts faster).

    >>> rows = [ColdStart("quill", ["q"], [0.5]), ColdStart("tesseract", ["t"], [0.25])]
    >>> cold_start_payload(rows, {}, {})["quill_vs"]
    {'tesseract': 0.5}
    """
    by_name = {row.system: row for row in rows}
    quill = by_name.get("quill")
    ratios = {
        row.system: round(row.p50_s / quill.p50_s, 2)
        for row in rows
        if quill is not None and row.system != "quill"
    }
    return {
        "rows": [row.to_dict() for row in rows],
        "quill_vs": ratios,
        "unavailable": dict(missing),
        "failures": dict(failures),
    }


def cold_start_markdown(section: Mapping) -> list[str]:
    """The cold-start table of the speed report."""
    from quill.bench.report import table  # here: the report module imports this one

    lines = [
        "## Cold start: one line, one new process",
        "",
        "Each run starts the program afresh and reads one line image, as a script calling it "
        "once per file does; the systems take turns run by run after one untimed warm-up run "
        "each (operating-system file cache and Quill's own cache filled).",
        "",
    ]
    for name, reason in {**section["unavailable"], **section["failures"]}.items():
        lines.append(f"- **{name}**: {reason}")
    rows = [
        [
            row["system"],
            row["runs"],
            f"{row['p50_s']:.3f}",
            f"{row['min_s']:.3f}",
            f"{row['max_s']:.3f}",
            "—"
            if row["system"] == "quill" or row["system"] not in section["quill_vs"]
            else f"{section['quill_vs'][row['system']]:.2f}x",
            f"`{row['command']}`",
        ]
        for row in section["rows"]
    ]
    header = ["system", "runs", "p50 s", "min s", "max s", "its p50 / quill's", "command"]
    return [*lines, *table(header, rows), ""]
