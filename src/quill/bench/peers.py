"""The recognisers a user would pick instead of Quill, wrapped as benchmark systems.

Both are optional extras (``scripts/install_peers.sh``, or ``make peers``); a missing one
raises :class:`SystemUnavailable` saying how to install it, and the benchmark skips it.

- Tesseract 5 (Debian ``tesseract-ocr`` + ``tesseract-ocr-eng``), called as its command-line
  program with the image on stdin, as a user scripting it would; ``--psm 7`` (one text
  line) for lines, ``--psm 6`` (one uniform block) for paragraphs. ``OMP_THREAD_LIMIT``
  fixes its thread count, which otherwise grabs every core and ruins timings on a busy box.
  Whole pages (:meth:`TesseractPeer.read_page`) are read with ``--psm 6`` as TSV, which gives
  each line's box with its words. Its default for pages, ``--psm 3`` (automatic page
  segmentation), takes most handwriting for pictures: on the four shared Hooker pages it found
  16 of 72 lines (86% page CER) where ``--psm 6`` found 50 (74%), so the peer gets ``6``.
- RapidOCR 3 (PyPI ``rapidocr``; its wheel ships the PP-OCR detection, direction and
  recognition ONNX models, so it runs offline). Lines go to the recogniser alone; paragraphs
  and whole pages go through detection then recognition (a page's lines come with the box of
  each detected text quadrilateral). RapidOCR *remembers* ``use_det/use_cls/use_rec``
  from the previous call, so every call passes all three. ``text_score=0`` keeps every
  recognised box: the bench scores reading, not RapidOCR's confidence filter, which would
  otherwise delete most handwritten lines outright and inflate its error.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from quill.bench.systems import Box, Kind, PageReading, System, SystemUnavailable
from quill.errors import QuillError

INSTALL_HINT = "install the optional peers with `make peers` (scripts/install_peers.sh)"

#: Tesseract page-segmentation mode per kind of image.
TESSERACT_PSM: dict[Kind, int] = {"line": 7, "paragraph": 6}
#: Tesseract's page-segmentation mode for whole pages: 6, one uniform block (its better
#: honest number on handwritten letters; 3, its automatic default, misses most lines).
TESSERACT_PAGE_PSM = 6
#: Seconds one Tesseract call may take before it counts as failed.
TESSERACT_TIMEOUT_S = 120.0


class PeerError(QuillError, RuntimeError):
    """A peer ran but failed on one input (bad exit status, timeout)."""

    code = "peer_failed"


def join_lines(lines: Sequence[str]) -> str:
    """Paragraph text from a peer's line list: stripped lines, empty ones dropped.

    >>> join_lines(["  Dear Sir ", "", "yours  truly\\n"])
    'Dear Sir\\nyours  truly'
    """
    return "\n".join(line.strip() for line in lines if line.strip())


def tesseract_lines(tsv: str) -> list[tuple[Box, str]]:
    r"""(box, text) of each line in Tesseract's TSV output, in its reading order.

    Level-4 rows are lines (their box); level-5 rows are the words of the line with the same
    page, block, paragraph and line numbers. A line whose words are all empty keeps its box
    with empty text: it is a line Tesseract found, even if it read nothing in it.

    >>> rows = ["level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop"
    ...         "\twidth\theight\tconf\ttext",
    ...         "4\t1\t1\t1\t1\t0\t10\t20\t100\t30\t-1\t",
    ...         "5\t1\t1\t1\t1\t1\t10\t20\t40\t30\t91\tDear",
    ...         "5\t1\t1\t1\t1\t2\t60\t20\t50\t30\t88\tSir,"]
    >>> tesseract_lines("\n".join(rows))
    [((10, 20, 110, 50), 'Dear Sir,')]
    """
    lines: dict[tuple[str, ...], tuple[Box, list[str]]] = {}
    for row in tsv.splitlines()[1:]:
        fields = row.split("\t")
        if len(fields) < 11 or fields[0] not in ("4", "5"):
            continue
        key = tuple(fields[1:5])
        if fields[0] == "4":
            left, top, width, height = (int(value) for value in fields[6:10])
            lines[key] = ((left, top, left + width, top + height), [])
        elif key in lines and len(fields) > 11 and fields[11].strip():
            lines[key][1].append(fields[11].strip())
    return [(box, " ".join(words)) for box, words in lines.values()]


@dataclass
class TesseractPeer:
    """Tesseract's command-line program, one process per image."""

    threads: int = 1
    binary: str = "tesseract"
    language: str = "eng"
    name: str = "tesseract"
    _version: str = field(init=False, default="")

    def __post_init__(self) -> None:
        path = shutil.which(self.binary)
        if path is None:
            raise SystemUnavailable(
                f"tesseract: no `{self.binary}` program on PATH; {INSTALL_HINT}"
            )
        self.binary = path
        try:
            listed = self._run(["--list-langs"], b"").decode(errors="replace").split()
            version = self._run(["--version"], b"").decode(errors="replace").splitlines()
        except PeerError as exc:
            raise SystemUnavailable(f"tesseract: {path} does not run ({exc})") from exc
        if self.language not in listed:
            raise SystemUnavailable(
                f"tesseract: language data {self.language!r} missing (have {listed[1:]}); "
                f"{INSTALL_HINT}"
            )
        self._version = version[0] if version else "tesseract (unknown version)"

    def describe(self) -> dict[str, str]:
        return {
            "version": self._version,
            "language": self.language,
            "psm": f"line={TESSERACT_PSM['line']}, paragraph={TESSERACT_PSM['paragraph']}, "
            f"page={TESSERACT_PAGE_PSM}",
            "threads": str(self.threads),
        }

    def read(self, images: Sequence[bytes], kind: Kind) -> list[str]:
        args = ["stdin", "stdout", "-l", self.language, "--psm", str(TESSERACT_PSM[kind])]
        texts = []
        for image in images:
            output = self._run(args, image).decode("utf-8", errors="replace")
            texts.append(join_lines(output.splitlines()))
        return texts

    def read_page(self, image: bytes) -> PageReading:
        """A whole page read as one block (:data:`TESSERACT_PAGE_PSM`), with each line's box."""
        args = ["stdin", "stdout", "-l", self.language, "--psm", str(TESSERACT_PAGE_PSM), "tsv"]
        output = self._run(args, image).decode("utf-8", errors="replace")
        return PageReading(tesseract_lines(output))

    def _run(self, args: list[str], stdin: bytes) -> bytes:
        env = {**os.environ, "OMP_THREAD_LIMIT": str(self.threads)}
        try:
            done = subprocess.run(
                [self.binary, *args],
                input=stdin,
                capture_output=True,
                env=env,
                timeout=TESSERACT_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise PeerError(f"tesseract took over {TESSERACT_TIMEOUT_S:.0f} s") from exc
        if done.returncode != 0:
            message = done.stderr.decode(errors="replace").strip()
            raise PeerError(f"tesseract exited with {done.returncode}: {message}")
        return done.stdout


@dataclass
class RapidOCRPeer:
    """RapidOCR's Python API on onnxruntime, with the models its wheel ships."""

    threads: int = 1
    name: str = "rapidocr"
    _engine: Any = field(init=False, default=None, repr=False)
    _version: str = field(init=False, default="")

    def __post_init__(self) -> None:
        try:
            from importlib.metadata import version

            from rapidocr import RapidOCR
        except ImportError as exc:
            raise SystemUnavailable(
                f"rapidocr: the package is not installed; {INSTALL_HINT}"
            ) from exc
        params = {
            "Global.log_level": "error",
            "EngineConfig.onnxruntime.intra_op_num_threads": self.threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
        try:
            self._engine = RapidOCR(params=params)
        except Exception as exc:  # noqa: BLE001 - any failure to start means "unavailable"
            raise SystemUnavailable(f"rapidocr: cannot start ({exc}); {INSTALL_HINT}") from exc
        # RapidOCR resets its logger's level from the config; keep benchmark output clean.
        logging.getLogger("RapidOCR").setLevel(logging.ERROR)
        self._version = version("rapidocr")

    def describe(self) -> dict[str, str]:
        rec = self._engine.cfg.Rec
        model = " ".join(str(getattr(v, "value", v)) for v in (rec.ocr_version, rec.model_type))
        return {
            "version": self._version,
            "recognizer": f"{model} ({getattr(rec.lang_type, 'value', rec.lang_type)})",
            "threads": str(self.threads),
            "text_score": "0",
        }

    def read(self, images: Sequence[bytes], kind: Kind) -> list[str]:
        use_det = kind == "paragraph"
        texts = []
        for image in images:
            result = self._engine(
                image, use_det=use_det, use_cls=False, use_rec=True, text_score=0.0
            )
            texts.append(join_lines(result.txts or ()))
        return texts

    def read_page(self, image: bytes) -> PageReading:
        """A whole page: detection then recognition; each detected box is a line."""
        result = self._engine(image, use_det=True, use_cls=False, use_rec=True, text_score=0.0)
        boxes = [] if result.boxes is None else result.boxes  # (N, 4, 2) quadrilaterals
        lines = []
        for quad, text in zip(boxes, result.txts or (), strict=True):
            xs, ys = quad[:, 0], quad[:, 1]
            box = (int(xs.min()), int(ys.min()), int(round(xs.max())), int(round(ys.max())))
            lines.append((box, text.strip()))
        return PageReading(lines)


PEERS: dict[str, type] = {"tesseract": TesseractPeer, "rapidocr": RapidOCRPeer}


def load_peer(name: str, threads: int = 1) -> System:
    """Start peer ``name``; :class:`SystemUnavailable` (with the fix) if it cannot run here."""
    if name not in PEERS:
        raise SystemUnavailable(f"unknown peer {name!r}; known peers: {', '.join(PEERS)}")
    return PEERS[name](threads=threads)
