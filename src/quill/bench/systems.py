"""The one interface the benchmark drives: a system that reads encoded images into text.

Quill and every peer are wrapped as a :class:`System` so the accuracy and speed harnesses
treat them identically: the same encoded bytes go in (what the REST API receives), plain
text comes out, and each system pays for its own decoding and preprocessing inside the
timed call. Quill reads a whole batch in one call; peers without batching loop inside
``read``, which is what a user calling them on a batch would get.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from quill.errors import QuillError

if TYPE_CHECKING:
    from quill.inference.recognizer import Kind as PredictKind
    from quill.inference.recognizer import Prediction, Recognizer, Segmenter
    from quill.inference.sources import InputImage

Kind = Literal["line", "paragraph"]
KINDS: tuple[Kind, ...] = ("line", "paragraph")
#: A line's box in page pixels: (left, top, right, bottom).
Box = tuple[int, int, int, int]


class SystemUnavailable(QuillError, RuntimeError):
    """A system cannot run here (not installed, no model files); the message says how to fix."""

    code = "system_unavailable"


class System(Protocol):
    """Anything the benchmark can measure."""

    #: Short name used in tables ("quill", "quill-onnx", "tesseract").
    name: str

    def describe(self) -> dict[str, str]:
        """Version and settings, recorded with every result."""
        ...

    def read(self, images: Sequence[bytes], kind: Kind) -> list[str]:
        """Text of each encoded image (lines joined by "\\n" for paragraphs)."""
        ...


@dataclass
class PageReading:
    """What a system read on a whole page: its lines in its own reading order, each with the
    box it found the line in (page pixels). A line may have empty text."""

    lines: list[tuple[Box, str]] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The page's text: the lines joined by newlines, in the system's order."""
        return "\n".join(text for _, text in self.lines)

    @property
    def boxes(self) -> list[Box]:
        return [box for box, _ in self.lines]


@runtime_checkable
class ReadsPages(Protocol):
    """A system that reads a whole page itself (finds its lines, then reads them)."""

    name: str

    def read_page(self, image: bytes) -> PageReading:
        """The lines found on one encoded page image, with their boxes and text."""
        ...


@runtime_checkable
class ReportsStages(Protocol):
    """A system that also says where its time went: milliseconds per stage, summed over calls.

    The speed table splits Quill's latency into preprocessing and model time, which shows
    whether a budget is missed in image handling or in the network.
    """

    stage_ms: dict[str, float]


@runtime_checkable
class ForgetsMemos(Protocol):
    """A system that memoises across reads (Quill's language model remembers its answers
    for the contexts it has met): the speed bench makes it forget before each timed call, so
    that its fixed inputs, read again and again, cost what new text costs."""

    def forget_memos(self) -> None: ...


@dataclass
class QuillSystem:
    """A Quill staged model behind the one inference contract, ``Recognizer.predict``."""

    name: str
    recognizer: Recognizer
    settings: dict[str, str] = field(default_factory=dict)
    #: Preprocessing (per image) and model time (per call) summed over calls to ``read``.
    stage_ms: dict[str, float] = field(default_factory=lambda: {"preprocess": 0.0, "model": 0.0})

    @classmethod
    def load(
        cls,
        model_dir: Path,
        backend: str = "auto",
        threads: int | None = None,
        name: str = "",
        decoding: str | None = None,
        segmenter: Segmenter = "trace",
    ) -> QuillSystem:
        """Open a staged model directory; a clear :class:`SystemUnavailable` if it cannot be.

        ``decoding`` overrides the model's CTC decoding method (greedy or beam) or reads one
        network pass instead of its shifts (single-pass);
        ``segmenter`` how pages are cut into lines (trace or learned)."""
        from quill.inference.recognizer import Recognizer

        try:
            recognizer = Recognizer.from_path(
                model_dir, backend=backend, threads=threads, decoding=decoding, segmenter=segmenter
            )
        except (FileNotFoundError, ValueError, RuntimeError) as exc:
            message = f"cannot load Quill model {model_dir} ({backend}): {exc}"
            raise SystemUnavailable(message) from exc
        settings = {
            "model_dir": str(model_dir),
            "backend": backend,
            "chosen_backend": recognizer.backend,
            "threads": str(threads),
        }
        chosen = recognizer.model.decoding
        settings["decoding"] = json.dumps(chosen.to_dict() if chosen else {"method": "greedy"})
        return cls(name or f"quill-{backend}", recognizer, settings)

    def describe(self) -> dict[str, str]:
        loaded = self.recognizer.describe()  # the backend "auto" actually chose, the version
        return {**self.settings, **{key: str(value) for key, value in loaded.items()}}

    def read(self, images: Sequence[bytes], kind: Kind) -> list[str]:
        predictions = self._predict(images, kind)
        return [prediction.text for prediction in predictions]

    def forget_memos(self) -> None:
        self.recognizer.forget_memos()

    def read_page(self, image: bytes) -> PageReading:
        """The page as ``quill predict`` reads it (``kind="auto"``: a page is segmented into
        lines by the recognizer's segmenter, each read by the model), with each line's box."""
        (prediction,) = self._predict([image], "auto")
        return PageReading([(line.box, line.text) for line in prediction.lines])

    def _predict(self, images: Sequence[InputImage], kind: PredictKind) -> list[Prediction]:
        """``Recognizer.predict``, its stages added to :attr:`stage_ms`."""
        predictions = self.recognizer.predict(list(images), kind=kind)
        self.stage_ms["preprocess"] += sum(p.timings["preprocess"] for p in predictions)
        if predictions:  # the model time is one figure shared by the whole call
            self.stage_ms["model"] += predictions[0].timings["model"]
        return predictions
