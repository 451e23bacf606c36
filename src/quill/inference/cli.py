"""``quill predict``: read handwriting in files, folders or globs from the command line."""

from __future__ import annotations

import glob
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from quill.errors import EXIT_ERROR, EXIT_FAILED, EXIT_OK, fail
from quill.inference import DEFAULT_MODEL_DIR

if TYPE_CHECKING:
    from PIL import Image
    from rich.console import Console

    from quill.inference.recognizer import Kind, Prediction, Segmenter
    from quill.preprocess import ImageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif"}
#: Images decoded and recognised together (bounds memory for large folders).
CHUNK = 16


def expand_inputs(items: list[str]) -> list[str]:
    """Files as given, image files inside folders (sorted), glob matches, each file once.

    A name that exists is that file, even with ``[`` or ``?`` in it (``scan[1].jpg`` was
    read as a pattern, and another file read in its place); a name or pattern that matches
    nothing is kept, so that it is reported as missing rather than silently skipped."""
    paths: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            paths += _images_under(path)
        elif path.exists() or not any(c in item for c in "*?["):
            paths.append(item)
        else:
            paths += sorted(glob.glob(item, recursive=True)) or [item]
    first_name: dict[str, str] = {}  # ./a.jpg and a.jpg are one file, read once
    for name in paths:
        first_name.setdefault(os.path.realpath(name), name)
    return list(first_name.values())


def _images_under(folder: Path) -> list[str]:
    """The image files in ``folder`` and its subfolders, sorted, symlinked subfolders
    included (each real folder once, so a link loop ends); a folder named like an image is
    not one."""
    found, seen = [], set()
    for root, folders, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            folders.clear()
            continue
        seen.add(real)
        found += [os.path.join(root, f) for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(found)


def _emit(line: str) -> None:
    """Print one result line; a reader that stopped reading (``| head``) ends the command
    quietly, a standard output that cannot be written is one line and exit 2."""
    try:
        typer.echo(line)
    except BrokenPipeError:
        # no more output is wanted; point stdout at /dev/null so the exit flush is silent
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(EXIT_OK) from None
    except OSError as exc:
        raise fail(f"cannot write the results to standard output: {exc.strerror}") from exc


def predict(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Image files, folders (searched recursively) or globs like 'scans/*.jpg'."
        ),
    ],
    model: Annotated[
        Path,
        typer.Option("--model", "-m", envvar="QUILL_MODEL_DIR", help="Staged model directory."),
    ] = DEFAULT_MODEL_DIR,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON object per input: path, text, confidence, kind, timings, model_version, "
            "note (set when the answer did not come from the model, e.g. blank paper), page "
            "(what segmentation found: rotation, skew, paper, columns, notes) and lines, "
            "each with its text, confidence, box (left, top, right, bottom) in the input "
            "image's pixels (where segmentation found the line on a page) and margin (a note "
            "beside the main text).",
        ),
    ] = False,
    kind: Annotated[str, typer.Option(help="auto, line or paragraph.")] = "auto",
    backend: Annotated[
        str, typer.Option(help="auto (fastest measured), onnx, onnx-int8, torchscript, eager.")
    ] = "auto",
    threads: Annotated[int, typer.Option(min=0, help="Intra-op threads (0: all cores).")] = 0,
    decoding: Annotated[
        str | None,
        typer.Option(
            help="CTC models: greedy, beam, or single-pass (the model's own decoding of one "
            "network pass instead of its vertical shifts) (default: what the model's card says)."
        ),
    ] = None,
    segmenter: Annotated[
        str,
        typer.Option(
            envvar="QUILL_SEGMENTER",
            help="How a page is cut into lines: trace (along the ink; the default, better on "
            "real pages) or learned (the learned line detector in models/line_detector; "
            "docs/models.md compares them).",
        ),
    ] = "trace",
) -> None:
    """Read the handwriting in images: one line per image on standard output.

    Each line is the path, the confidence and the text (its lines joined by " / "),
    tab-separated; standard error says what the reader should know (blank paper, a page
    turned to be read, margin notes). Unreadable files are reported and skipped; the exit
    code is 1 if some inputs failed, 2 if none could be read or none matched, an option is
    not one of its choices or the model cannot be loaded.

    With --json a page's lines say where each line was found: each box is
    (left, top, right, bottom) in the pixels of the image as given (after its EXIF
    rotation), so the lines can be drawn on it. A single line's box is the whole image."""
    from rich.console import Console
    from rich.progress import Progress

    from quill.inference.recognizer import Recognizer
    from quill.preprocess import ImageError, load_image
    from quill.staged_model import ModelLoadError

    _check_choices(kind, backend, decoding, segmenter)
    if sys.stdout is None:  # started with stdout closed: the results would go nowhere
        raise fail("standard output is closed: there is nowhere to print the results")
    err = Console(stderr=True, soft_wrap=True)
    paths = expand_inputs(inputs)
    if not any(Path(path).exists() for path in paths):
        raise fail(f"no input files matched {' '.join(inputs)}")
    try:
        recognizer = Recognizer.from_path(
            model,
            backend=backend,
            threads=threads or None,
            decoding=decoding,
            segmenter=cast("Segmenter", segmenter),
        )
    except ModelLoadError as exc:
        raise fail(str(exc)) from exc
    failed = 0
    # A bar only for a person watching: in a log, a transient bar leaves a blank line.
    quiet = len(paths) < 2 or not err.is_terminal
    with Progress(console=err, transient=True, disable=quiet) as progress:
        task = progress.add_task("reading", total=len(paths))
        for start in range(0, len(paths), CHUNK):
            chunk = paths[start : start + CHUNK]
            loaded: dict[str, Any] = {}  # each path's image, or why it cannot be read
            for path in chunk:
                try:
                    loaded[path] = load_image(path)
                except ImageError as exc:
                    loaded[path] = exc
            good = [path for path in chunk if not isinstance(loaded[path], ImageError)]
            answers = iter(recognizer.predict([loaded[p] for p in good], kind=cast("Kind", kind)))
            for path in chunk:  # in the order given, errors among the answers
                progress.advance(task)  # read (or found unreadable), not merely loaded
                if isinstance(loaded[path], ImageError):
                    failed += 1
                    _report_error(err, as_json, path, loaded[path])
                    continue
                prediction = next(answers)
                if as_json:
                    record = {"path": path, **prediction.to_dict()}
                    _emit(json.dumps(record, ensure_ascii=False))
                else:
                    text = prediction.text.replace("\n", " / ")
                    _emit(f"{path}\t{prediction.confidence:.2f}\t{text}")
                    for note in _notes(prediction, loaded[path], kind):
                        err.print(f"{path}: {note}", markup=False, highlight=False)
    if failed:
        err.print(f"{failed} of {len(paths)} inputs could not be read")
        raise typer.Exit(EXIT_ERROR if failed == len(paths) else EXIT_FAILED)


def _check_choices(kind: str, backend: str, decoding: str | None, segmenter: str) -> None:
    """Exit 2 with one line naming the allowed values when an option is not one of them,
    before the model loads (a bad --kind would otherwise surface only after loading it, as
    the recognizer's traceback). The allowed values are the ones the code defines."""
    from quill.inference.recognizer import KINDS, SEGMENTERS
    from quill.models.decoding import CTCDecoder
    from quill.runtimes.backends import BACKEND_CHOICES
    from quill.staged_model import SINGLE_PASS

    choices = {
        "--kind": (kind, KINDS),
        "--backend": (backend, BACKEND_CHOICES),
        "--segmenter": (segmenter, SEGMENTERS),
    }
    for option, (value, allowed) in choices.items():
        if value not in allowed:
            raise fail(f"{option} must be one of {', '.join(allowed)}, got {value!r}")
    if decoding is not None and decoding != SINGLE_PASS:
        try:  # the decoder names the methods it knows
            CTCDecoder(method=decoding)
        except ValueError as exc:
            raise fail(f"--decoding: {exc} (or {SINGLE_PASS!r})") from exc


def _notes(prediction: Prediction, image: Image.Image, kind: str) -> list[str]:
    """What a reader of the plain output should know about one answer, in words."""
    notes = [prediction.note] if prediction.note else []
    if kind == "line" and image.width < image.height:
        notes.append(
            f"read as one line (--kind line), but it is taller than wide ({image.width} x "
            f"{image.height}), as a page is: --kind auto finds its lines and reads each"
        )
    page_notes = (prediction.page or {}).get("notes", [])
    return notes + [note for note in page_notes if note not in notes]


def _report_error(err: Console, as_json: bool, path: str, exc: ImageError) -> None:
    if as_json:
        record = {"path": path, "error": {"code": exc.code, "message": str(exc)}}
        _emit(json.dumps(record, ensure_ascii=False))
    else:
        err.print(f"[red]{path}:[/] {exc}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this layer's commands to the `quill` app."""
    from quill.inference.adapt_cli import adapt
    from quill.inference.lm_cli import lm_app

    app.command("predict")(predict)
    app.command("adapt")(adapt)
    app.add_typer(lm_app, name="lm")
