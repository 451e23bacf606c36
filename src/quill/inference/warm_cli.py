"""``quill model warm``: do once, ahead of serving, what a model's first start on a machine
otherwise does while a user waits.

A start reads the model's language models and word lists and, with ``--backend auto``, times
its runtimes; :mod:`quill.runtimes.cache` keeps what that works out, so that only the first
start on a machine pays for it (the default model: 5 s on an Intel Xeon, 12 s on an AMD
EPYC, against half a second once kept). A container starts on a fresh file system, and a
Lambda function's cannot be written at all: there, every start was the first. Warming into a
cache folder while the image is built (``QUILL_CACHE_DIR``) puts the compiled forms in the
image, and its containers start as a warm machine does (docs/serving.md, "Containers").

The command joins ``quill model`` (:data:`quill.cli.EXTENDS`): it loads a model as inference
does, which the staging layer's own commands may not.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from quill.errors import fail
from quill.inference import DEFAULT_MODEL_DIR
from quill.inference.recognizer import Recognizer
from quill.runtimes import cache
from quill.runtimes.backends import BACKEND_CHOICES, ctc_decoder, remembered_choice
from quill.staged_model import ModelLoadError, StagedModel
from quill.staging.cli import model_app


@model_app.command("warm")
def warm(
    model_dir: Annotated[
        Path,
        typer.Argument(
            metavar="MODEL", help="Staged model directory.", show_default="models/default"
        ),
    ] = DEFAULT_MODEL_DIR,
    backend: Annotated[
        str,
        typer.Option(
            envvar="QUILL_BACKEND",
            help="The runtime the model will serve with: auto (measure the fastest here and "
            "remember it) or one named (onnx, onnx-int8, torchscript, eager: only loaded).",
        ),
    ] = "auto",
    threads: Annotated[
        list[int] | None,
        typer.Option(
            "--threads",
            envvar="QUILL_THREADS",
            min=0,
            help="Intra-op threads the model will serve with (0: all cores), as `quill serve` "
            "and `quill predict` take them; repeat it for several. auto's choice is kept per "
            "thread count. Default: $QUILL_THREADS, else 0.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Compile a model's language models, read its word lists and (--backend auto) measure
    its fastest runtime here, into Quill's cache, so that no start of it on this machine
    pays for them again.

    The cache is $QUILL_CACHE_DIR, else $XDG_CACHE_HOME/quill, else ~/.cache/quill. Run it
    where the model will serve, with the settings it will serve with: in an image build
    (with QUILL_CACHE_DIR set to a folder in the image, as docker/ does), on a new machine
    before `quill serve`, or after replacing a model's language model. auto's choice is kept
    per machine (CPU, cores, runtimes' installations): on another CPU a start measures again,
    which a container whose file system cannot be written (AWS Lambda) does at every start;
    name its runtime there instead.
    """
    root = cache.cache_dir()
    if root is None:
        raise fail("the cache is off (QUILL_CACHE_DIR=off): unset it, or name a folder")
    if backend not in BACKEND_CHOICES:
        raise fail(f"--backend must be one of {', '.join(BACKEND_CHOICES)}, got {backend!r}")
    console = Console(highlight=False, soft_wrap=True)
    try:
        model = StagedModel.load(model_dir)
        console.print(f"warming {model.path} ({model.version}) into {root}")
        start = time.perf_counter()
        if model.decoding_files():
            ctc_decoder(model)  # every LM compiled and word list read, once for all loads
            kept = [path for path, form in _kept_forms(model) if form is not None and form.exists()]
            console.print(
                f"  {len(kept)} language models and word lists in the cache "
                f"({time.perf_counter() - start:.1f} s)"
            )
            missing = sorted(set(model.decoding_files()) - set(kept))
            if missing:
                names = ", ".join(path.name for path in missing)
                raise fail(f"could not keep {names} in {root}: is the folder writable?")
        for count in threads or [0]:
            start = time.perf_counter()
            recognizer = Recognizer.from_path(model.path, backend=backend, threads=count or None)
            console.print(f"  threads {count or 'all'}: {_described(recognizer, start)}")
            if backend == "auto" and remembered_choice(model, count or None) is None:
                raise fail(f"could not keep auto's choice in {root}: is the folder writable?")
    except ModelLoadError as exc:
        raise fail(str(exc)) from exc


def _kept_forms(model: StagedModel) -> list[tuple[Path, Path | None]]:
    """Each language model and word list ``model``'s decoding reads, with where the cache keeps
    its compiled or read form (None when the file cannot be read)."""
    word_lists = set(model.decoding.word_lists()) if model.decoding else set()
    return [
        (path, (cache.read_words_path if path.name in word_lists else cache.compiled_lm_path)(path))
        for path in model.decoding_files()
    ]


def _described(recognizer: Recognizer, start: float) -> str:
    """The runtime a load settled on and what auto measured to choose it."""
    took = f"{time.perf_counter() - start:.1f} s"
    if recognizer.backend_choice == "given":
        return f"{recognizer.backend} loaded ({took})"
    timings = ", ".join(f"{name} {ms:.2f} ms" for name, ms in recognizer.backend_timings.items())
    return f"{recognizer.backend}, {recognizer.backend_choice} ({timings} per probe; {took})"
