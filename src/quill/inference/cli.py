"""``quill predict``: read handwriting in files, folders or globs from the command line."""

from __future__ import annotations

import glob
import json
import os
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer

from quill.errors import EXIT_ERROR, EXIT_FAILED, EXIT_OK, fail
from quill.inference import DEFAULT_MODEL_DIR

if TYPE_CHECKING:
    from rich.console import Console

    from quill.inference.recognizer import Kind, Prediction, Recognizer, Segmenter
    from quill.inference.sources import LoadedImage
    from quill.preprocess import ImageError

#: What a folder is searched for: the raster formats Pillow reads out of the box that a scan
#: or photo is saved in (a file named on the command line is read whatever its name). HEIC
#: needs a plugin, and Pillow only writes PDF.
IMAGE_SUFFIXES = frozenset(
    {
        *(".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".jp2", ".j2k", ".tif", ".tiff"),
        *(".bmp", ".dib", ".webp", ".gif", ".tga", ".pbm", ".pgm", ".ppm", ".pnm", ".ico"),
    }
)
#: Images decoded and recognised together, at most (bounds memory for large folders)...
CHUNK = 16
#: ... and a chunk takes no more images once it holds this many decoded pixels (an image
#: that large ends its chunk): 16 grey scans of 8000 x 6000 in one chunk, decoded
#: as RGB, peaked at 3.1 GB; one at a time, as L, at 0.17 GB.
CHUNK_PIXELS = 40_000_000
#: The input that means one image read from standard input.
STDIN = "-"


def expand_inputs(items: list[str]) -> tuple[list[str], Counter[str]]:
    """Files as given, image files inside folders (sorted), glob matches, each file once;
    and how many files in the folders were skipped, by extension (so that a folder of HEIC
    photos is not merely "no input files matched").

    A name that exists is that file, even with ``[`` or ``?`` in it (``scan[1].jpg`` was
    read as a pattern, and another file read in its place); a name or pattern that matches
    nothing is kept, so that it is reported as missing rather than silently skipped.
    ``-`` is standard input, read once however often it is given."""
    paths: list[str] = []
    skipped: Counter[str] = Counter()
    for item in items:
        path = Path(item)
        if item == STDIN:
            paths.append(item)
        elif path.is_dir():
            paths += _images_under(path, skipped)
        elif path.exists() or not any(c in item for c in "*?["):
            paths.append(item)
        else:
            paths += sorted(glob.glob(item, recursive=True)) or [item]
    first_name: dict[str, str] = {}  # ./a.jpg and a.jpg are one file, read once
    for name in paths:
        first_name.setdefault(name if name == STDIN else os.path.realpath(name), name)
    return list(first_name.values()), skipped


def _images_under(folder: Path, skipped: Counter[str]) -> list[str]:
    """The image files in ``folder`` and its subfolders, sorted, symlinked subfolders
    included (each real folder once, so a link loop ends); a folder named like an image is
    not one. Each other file is counted in ``skipped`` by its extension."""
    found, seen = [], set()
    for root, folders, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            folders.clear()
            continue
        seen.add(real)
        for name in files:
            suffix = Path(name).suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                found.append(os.path.join(root, name))
            else:
                skipped[suffix or "no extension"] += 1
    return sorted(found)


def _no_inputs(inputs: list[str], skipped: Counter[str]) -> typer.Exit:
    """The error for inputs that name no file, saying which files the folders held that
    were skipped for their extension, and which extensions a folder is searched for."""
    message = f"no input files matched {' '.join(inputs)}"
    if skipped:
        count = sum(skipped.values())
        kinds = ", ".join(sorted(skipped))
        message += (
            f": {count} file{'s' if count > 1 else ''} skipped for their extension ({kinds}); "
            f"a folder is searched for {', '.join(sorted(IMAGE_SUFFIXES))}"
        )
    return fail(message)


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
            help="Image files, folders (searched recursively for the image extensions Quill "
            "reads: .png, .jpg, .tif, .webp, ...), globs like 'scans/*.jpg', or - for one image "
            "read from standard input.",
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
            help="One JSON object per input, with the fields of the REST API's answer except "
            "those of a request (latency_ms, request_id, feedback_token, cached), and its "
            "path: path, text, confidence, kind, timings_ms, model_version, note (set when the "
            "answer did not come from the model, e.g. blank paper), language, page (what "
            "segmentation found: rotation, skew, paper, columns, notes) and lines, each with "
            "its text, confidence, box (left, top, right, bottom) in the input image's pixels "
            "(where segmentation found the line on a page) and margin (a note beside the main "
            "text). An input that cannot be read is its path and error (code, message).",
        ),
    ] = False,
    kind: Annotated[str, typer.Option(help="auto, line or paragraph.")] = "auto",
    backend: Annotated[
        str,
        typer.Option(
            envvar="QUILL_BACKEND",
            help="auto (fastest measured), onnx, onnx-int8, torchscript, eager.",
        ),
    ] = "auto",
    threads: Annotated[
        int, typer.Option(envvar="QUILL_THREADS", min=0, help="Intra-op threads (0: all cores).")
    ] = 0,
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
    code is 1 if some inputs could not be read, 2 if none could or none matched, an option
    is not one of its choices or the model cannot be loaded.

    With --json a page's lines say where each line was found: each box is
    (left, top, right, bottom) in the pixels of the image as given (after its EXIF
    rotation), so the lines can be drawn on it. A single line's box is the whole image."""
    from rich.console import Console
    from rich.progress import Progress

    from quill.inference.recognizer import Recognizer
    from quill.inference.sources import decoded_in_groups
    from quill.preprocess import ImageError
    from quill.staged_model import ModelLoadError

    _check_choices(kind, backend, decoding, segmenter)
    if sys.stdout is None:  # started with stdout closed: the results would go nowhere
        raise fail("standard output is closed: there is nowhere to print the results")
    err = Console(stderr=True, soft_wrap=True)
    paths, skipped = expand_inputs(inputs)
    if not any(path == STDIN or Path(path).exists() for path in paths):
        raise _no_inputs(inputs, skipped)
    if STDIN in paths and sys.stdin is not None and sys.stdin.isatty():
        raise fail(
            "- reads an image from standard input, which is a terminal: pipe or redirect an "
            "image into it (quill predict - < scan.jpg)"
        )
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
        for chunk in decoded_in_groups(paths, _decode, CHUNK_PIXELS, CHUNK):
            for path, size, answer in _answers(recognizer, chunk, cast("Kind", kind)):
                progress.advance(task)  # read (or found unreadable), not merely decoded
                if isinstance(answer, ImageError):
                    failed += 1
                    _report_error(err, as_json, path, answer)
                elif as_json:
                    _emit(json.dumps({"path": path, **answer.to_dict()}, ensure_ascii=False))
                else:
                    text = answer.text.replace("\n", " / ")
                    _emit(f"{path}\t{answer.confidence:.2f}\t{text}")
                    for note in _notes(answer, size, kind):
                        err.print(f"{path}: {note}", markup=False, highlight=False)
    if failed:
        err.print(f"{failed} of {len(paths)} inputs could not be read")
        raise typer.Exit(EXIT_ERROR if failed == len(paths) else EXIT_FAILED)


def _decode(path: str) -> LoadedImage:
    """The image at ``path`` (``-``: standard input); ImageError if it cannot be read. A
    greyscale scan stays one channel (``read_image``): the recognizer reads L as well as
    RGB, which takes three times the memory."""
    from quill.inference.sources import LoadedImage
    from quill.preprocess import read_image

    return _read_stdin() if path == STDIN else LoadedImage(read_image(path))


def _read_stdin() -> LoadedImage:
    """The image on standard input (its bytes: a pipe cannot be opened as a file)."""
    from quill.inference.sources import LoadedImage
    from quill.preprocess import ImageError

    if sys.stdin is None:
        raise ImageError("image_not_found", "standard input is closed: there is no image on it")
    return LoadedImage.from_bytes(sys.stdin.buffer.read())


def _answers(
    recognizer: Recognizer, chunk: list[tuple[str, LoadedImage | ImageError]], kind: Kind
) -> Iterator[tuple[str, tuple[int, int], Prediction | ImageError]]:
    """Each input of a chunk in the order given, with its size (width, height) and its
    prediction or why it has none (size (0, 0): it did not decode); the images that decoded
    are read in one call."""
    from quill.preprocess import ImageError

    images = [item for _, item in chunk if not isinstance(item, ImageError)]
    answers = iter(recognizer.predict_each(images, kind))
    for path, item in chunk:
        if isinstance(item, ImageError):
            yield path, (0, 0), item
        else:
            yield path, item.size, next(answers)


def _check_choices(kind: str, backend: str, decoding: str | None, segmenter: str) -> None:
    """Exit 2 with one line naming the allowed values when an option is not one of them,
    before the model loads (a bad --kind would otherwise surface only after loading it, as
    the recognizer's traceback). The allowed values are the ones the code defines."""
    from quill.inference.recognizer import KINDS, SEGMENTERS
    from quill.models.decoding import CTCDecoder
    from quill.runtimes.backends import BACKEND_CHOICES
    from quill.staged_model import SINGLE_PASS

    choices = {  # an option read from the environment names its variable too
        "--kind": (kind, KINDS),
        "--backend (or QUILL_BACKEND)": (backend, BACKEND_CHOICES),
        "--segmenter (or QUILL_SEGMENTER)": (segmenter, SEGMENTERS),
    }
    for option, (value, allowed) in choices.items():
        if value not in allowed:
            raise fail(f"{option} must be one of {', '.join(allowed)}, got {value!r}")
    if decoding is not None and decoding != SINGLE_PASS:
        try:  # the decoder names the methods it knows
            CTCDecoder(method=decoding)
        except ValueError as exc:
            raise fail(f"--decoding: {exc} (or {SINGLE_PASS!r})") from exc


def _notes(prediction: Prediction, size: tuple[int, int], kind: str) -> list[str]:
    """What a reader of the plain output should know about one answer (of an image of
    ``size``, width and height), in words."""
    notes = [prediction.note] if prediction.note else []
    width, height = size
    if kind == "line" and width < height:
        notes.append(
            f"read as one line (--kind line), but it is taller than wide ({width} x "
            f"{height}), as a page is: --kind auto finds its lines and reads each"
        )
    page_notes = (prediction.page or {}).get("notes", [])
    return notes + [note for note in page_notes if note not in notes]


def _report_error(err: Console, as_json: bool, path: str, exc: ImageError) -> None:
    """One input's error: a JSON line on standard output, or a line on standard error,
    printed as it is (a path like ``x[/]bad.jpg`` is not Rich markup)."""
    if as_json:
        record = {"path": path, "error": {"code": exc.code, "message": str(exc)}}
        _emit(json.dumps(record, ensure_ascii=False))
    else:
        err.print(_error_line(path, str(exc)), style="red", markup=False, highlight=False)


def _error_line(path: str, message: str) -> str:
    """``path: message``, or the message alone when it names the file already (an error
    from opening it does: ``scan.jpg: not an image ...``, ``no such image file: scan.jpg``),
    so that the path is not shown twice.

    >>> _error_line("a/./b.png", "a/b.png is empty (0 bytes)")
    'a/b.png is empty (0 bytes)'
    >>> _error_line("b.png", "image is 36x3 pixels; each side needs at least 4.")
    'b.png: image is 36x3 pixels; each side needs at least 4.'
    """
    for name in {path, str(Path(path))}:
        if message.startswith((f"{name}:", f"{name} ")) or message.endswith(f": {name}"):
            return message
    return f"{path}: {message}"


def register(app: typer.Typer) -> None:
    """Add this layer's commands to the `quill` app."""
    from quill.inference import words_cli  # noqa: F401 - its commands join lm_app on import
    from quill.inference.adapt_cli import adapt
    from quill.inference.lm_cli import lm_app

    app.command("predict")(predict)
    app.command("adapt")(adapt)
    app.add_typer(lm_app, name="lm")
