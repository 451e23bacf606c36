"""``Recognizer``: the one inference contract every interface calls.

CLI, REST API, Lambda handler, web app, monitoring and benchmarks all go through
:meth:`Recognizer.predict`, so batching, line segmentation, confidence and timings are
defined once. A paragraph is split into lines (:mod:`quill.inference.cutting` decides
whether an image is one line or several, ``quill.models.segment`` finds them); the lines of
all images in a call are recognised together, sorted by width so that padding stays small. A
line (or image) with no ink (:func:`quill.preprocess.is_blank`) is not run through the model:
its text is empty, with :data:`BLANK_NOTE` saying why, rather than what a model guesses from
paper.

The model is a :class:`~quill.staged_model.StagedModel` run by one of
:mod:`quill.runtimes`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from PIL import Image

from quill.inference.cutting import (
    SEGMENTERS,
    Box,
    Crop,
    Prepared,
    Segmenter,
    combined_confidence,
    doubtful,
    find_lines,
    likelier,
    may_be_either,
    prepare,
    whole,
)
from quill.inference.shifts import ONE_PASS, forward_shifted
from quill.inference.sources import InputImage, open_image
from quill.models.decoding import CTCDecoder, ReadingScores
from quill.preprocess import ImageError, PreprocessConfig, batch_images, working_height
from quill.runtimes.backends import Backend, auto_backend, load_backend
from quill.staged_model import StagedModel

Kind = Literal["auto", "line", "paragraph"]
KINDS = ("auto", "line", "paragraph")
#: Lines recognised per model call at most (bounds memory).
MAX_BATCH = 32
#: Lines share a model call only while the widest is at most this many times the narrowest:
#: the network runs over the padding too, so one call for a page's 32 lines of every width
#: cost 2-3x more per line than calls of similar widths (1.25 measured best of 1.25, 1.5 and
#: plain chunks of 4, 8 and 32 on Hooker lines).
WIDTH_RATIO = 1.25
#: :attr:`Prediction.note` of an image with no ink: nothing was read, and nothing guessed.
BLANK_NOTE = "blank: no ink in the image; the model was not run"
#: :attr:`Prediction.note` of an image whose marks are not writing (noise, a texture:
#: ``page["notes"]`` says what segmentation found): nothing was read, and nothing guessed.
NOT_WRITING_NOTE = "no writing found: the marks are not lines of text; the model was not run"
T = TypeVar("T")


@dataclass
class LinePrediction:
    """One recognised line; ``box`` is (left, top, right, bottom) in the input's pixels;
    ``margin``: a note in the margin beside the main text (read after it)."""

    text: str
    confidence: float
    box: Box
    margin: bool = False


@dataclass
class Prediction:
    """The answer for one image. ``timings`` are milliseconds: ``preprocess`` for this image,
    ``model`` for the model calls shared by the whole ``predict`` call, ``total`` both.

    ``note`` says when the answer did not come from the model: :data:`BLANK_NOTE` for an
    image with no ink (text "", confidence 1.0: certainly nothing to read), or how many of a
    paragraph's lines were blank.

    ``page`` is what line segmentation found when it ran
    (:meth:`quill.models.segment.Segmentation.to_dict`: ``rotation``, ``skew``, ``paper``,
    ``columns`` and ``notes`` in words, e.g. why nothing was found); None for an image read
    as one line without segmenting it.

    ``language`` is the other language (``quill lm language``) whose language model read the
    image's lines, chosen for the whole image; None when the model's main one did."""

    text: str
    confidence: float
    lines: list[LinePrediction]
    timings: dict[str, float]
    model_version: str
    kind: str = "line"
    note: str | None = None
    page: dict[str, Any] | None = None
    language: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The answer as JSON, as the REST API and ``quill predict --json`` give it (the
        timings named ``timings_ms``; an API answer adds the request's own fields)."""
        data = asdict(self)
        data["lines"] = [{**line, "box": list(line["box"])} for line in data["lines"]]
        data["timings_ms"] = data.pop("timings")
        return data


class Recognizer:
    """A staged model loaded for inference on the CPU.

    ``model`` is the staged model's metadata and folder; ``runtime`` runs it.
    ``backend`` is the runtime in use (``onnx``, ``torchscript`` or ``eager``);
    ``backend_timings`` records what ``auto`` measured to choose it (ms per probe batch), and
    ``backend_choice`` whether that was measured by this load or remembered from an earlier
    one on this machine (:mod:`quill.runtimes.cache`); ``given`` for a named backend.
    ``segmenter`` cuts pages into lines (:data:`Segmenter`).
    """

    def __init__(
        self,
        model: StagedModel,
        backend: Backend,
        backend_timings: dict[str, float] | None = None,
        threads: int | None = None,
        segmenter: Segmenter = "trace",
    ):
        if segmenter not in SEGMENTERS:
            raise ValueError(f"segmenter must be one of {SEGMENTERS}, got {segmenter!r}")
        if segmenter == "learned":
            # lazy: segmentation imports scipy, which reading lines never needs
            from quill.models.segment import detector_weights

            detector_weights()  # missing weights fail the load, not the first page
        self.model = model
        # Any: a runtime's own attributes (its decoder, session) are what tuning and tests use
        self.runtime: Any = backend
        self.backend: str = backend.name
        self.backend_timings = backend_timings or {}
        self.backend_choice = "given"
        self.threads = threads
        self.tokenizer = model.tokenizer
        self.preprocess_config: PreprocessConfig = model.preprocess
        self.segmenter: Segmenter = segmenter
        #: Vertical shifts whose network outputs a CTC model averages (its decoding's).
        self.shifts: tuple[int, ...] = (model.decoding and model.decoding.shifts) or ONE_PASS

    @property
    def model_dir(self) -> Path:
        return self.model.path

    @property
    def model_version(self) -> str:
        return self.model.version

    @property
    def reads_pages(self) -> bool:
        """A paragraph model (e.g. resnet_transformer) reads a whole page in one pass."""
        return self.preprocess_config.kind == "paragraph"

    @property
    def name(self) -> str:
        return self.model.name

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        backend: str = "auto",
        threads: int | None = None,
        decoding: str | None = None,
        segmenter: Segmenter = "trace",
    ) -> Recognizer:
        """Load a staged model directory; ``threads`` sets the runtime's intra-op threads.

        ``decoding`` (``greedy`` or ``beam``) overrides the method of the model's
        ``decoding`` section for a CTC model: beam search keeps the section's language
        model and weights, greedy trades their accuracy for speed; ``single-pass`` keeps the
        section but runs the network once per line instead of once per shift.
        """
        model = StagedModel.load(path)
        if decoding is not None:
            model = model.with_decoding_method(decoding)
        if backend == "auto":
            config = model.preprocess
            runtime, timings, cached = auto_backend(model, threads, lambda: _probe_batch(config))
            recognizer = cls(model, runtime, timings, threads, segmenter)
            recognizer.backend_choice = "cached" if cached else "measured"
            return recognizer
        return cls(model, load_backend(backend, model, threads), None, threads, segmenter)

    @classmethod
    def from_registry(
        cls,
        reference: str,
        tracking_uri: str | None = None,
        cache_dir: str | Path | None = None,
        backend: str = "auto",
        threads: int | None = None,
    ) -> Recognizer:
        """Fetch ``NAME[@ALIAS|VERSION]`` from the MLflow registry (needs mlflow) and load it."""
        # lazy: the registry needs mlflow, which reading a local model never imports
        from quill.staging.registry import fetch, resolve
        from quill.training.tracking_store import default_tracking_uri

        uri = tracking_uri or default_tracking_uri()
        found = resolve(reference, uri)
        root = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "quill" / "models"
        target = root / f"{found.name}-v{found.version}"
        if not StagedModel.is_staged(target):
            fetch(f"{found.name}@{found.version}", target, uri)
        return cls.from_path(target, backend=backend, threads=threads)

    def predict(self, images: Sequence[InputImage], kind: Kind = "auto") -> list[Prediction]:
        """Recognise every image; raises ``ImageError`` (naming the input) for a bad one.

        ``kind``: ``line`` reads each image as one line, ``paragraph`` segments it into lines
        first, ``auto`` segments unless the image is clearly a single line.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        prepared = [
            self._prepare(image, kind, index, len(images)) for index, image in enumerate(images)
        ]
        start = time.perf_counter()
        self._recognise(prepared + [item.other for item in prepared if item.other])
        self._read_doubtful_as_lines(prepared)
        model_ms = (time.perf_counter() - start) * 1000
        return [self._result(likelier(item), model_ms) for item in prepared]

    def predict_each(
        self, images: Sequence[InputImage], kind: Kind = "auto"
    ) -> list[Prediction | ImageError]:
        """:meth:`predict` of ``images`` in one call, each answer or, in its place, why that
        image cannot be read: when the call fails on one image (a page can decode and still
        fail in segmentation or preprocessing), each is read again alone, so that only the
        bad one loses its answer. What the command line and serving read a batch with."""
        if not images:
            return []
        try:
            return list(self.predict(images, kind))
        except ImageError as exc:
            if len(images) == 1:
                return [exc]
        return [answer for image in images for answer in self.predict_each([image], kind)]

    def _prepare(self, source: InputImage, kind: str, index: int, count: int) -> Prepared:
        start = time.perf_counter()
        try:
            image = open_image(source)
            crops, page = self._find_lines(image, kind)
            item = prepare(crops, page, kind, self.preprocess_config)
            if kind == "auto" and not self.reads_pages and may_be_either(image, crops, page):
                if len(crops) > 1:
                    item.other = prepare([whole(image)], page, "line", self.preprocess_config)
                else:
                    item.image = image  # cut into lines after all if read doubtfully
        except ImageError as exc:
            if count == 1:
                raise
            raise ImageError(exc.code, f"input {index}: {exc}") from exc
        item.preprocess_ms = (time.perf_counter() - start) * 1000
        return item

    def _find_lines(
        self, image: Image.Image, kind: str
    ) -> tuple[list[Crop], dict[str, Any] | None]:
        """:func:`~quill.inference.cutting.find_lines` with this model's segmenter and line
        height; a paragraph model reads the page itself, newlines included."""
        crop_height = working_height(self.preprocess_config)
        return find_lines(image, "line" if self.reads_pages else kind, self.segmenter, crop_height)

    def _read_doubtful_as_lines(self, prepared: list[Prepared]) -> None:
        """Cut into lines each wide image read as one line under ``DOUBTFUL_LINE``
        confidence (:func:`~quill.inference.cutting.doubtful`), and read those lines
        (:func:`~quill.inference.cutting.likelier` then keeps the likelier)."""
        cut = []
        for item in prepared:
            if item.image is None or not doubtful(item):
                continue
            start = time.perf_counter()
            crops, page = self._find_lines(item.image, "paragraph")
            if len(crops) > 1:
                item.other = prepare(crops, page, "paragraph", self.preprocess_config)
                cut.append(item.other)
            item.preprocess_ms += (time.perf_counter() - start) * 1000
        self._recognise(cut)

    def _recognise(self, prepared: list[Prepared]) -> None:
        """Run every line of every prepared image through the model, in batches of lines of
        similar width (:data:`WIDTH_RATIO`, :data:`MAX_BATCH`); a blank line is not run (its
        text stays empty, at confidence 1)."""
        lines = [
            (item, i, line)
            for item in prepared
            for i, line in enumerate(item.lines)
            if not item.blank[i]
        ]
        for item in prepared:
            item.texts = [""] * len(item.lines)
            item.confidences = [1.0] * len(item.lines)
        lines.sort(key=lambda entry: entry[2].shape[1])
        chunks = width_groups(lines, lambda entry: entry[2].shape[1])
        decoder = getattr(self.runtime, "decoder", None)
        if isinstance(decoder, CTCDecoder) and decoder.method == "beam" and decoder.languages:
            self._recognise_by_language(chunks, decoder)
            return
        for chunk in chunks:
            batch, widths = batch_images([line for _, _, line in chunk])  # (B,1,H,Wmax), (B,)
            if self.model.family == "ctc":
                decoded = self.runtime.decoder(*self._forward(batch, widths))
            else:
                decoded = self.runtime.decode(batch, widths)
            for (item, i, _), (ids, confidence) in zip(chunk, decoded, strict=True):
                item.texts[i] = self.tokenizer.decode(ids)
                item.confidences[i] = confidence

    def _recognise_by_language(self, chunks: list[list[Any]], decoder: CTCDecoder) -> None:
        """:meth:`_recognise` for a CTC model that reads more than one language: the network
        runs over every chunk first, then each image's lines are beam-searched in the one
        language their greedy readings, all together, look like (a page is written in one
        language; its short or garbled lines alone could pass for another)."""
        outputs = []
        readings: dict[int, list[ReadingScores]] = {}
        for chunk in chunks:
            batch, widths = batch_images([line for _, _, line in chunk])  # (B,1,H,Wmax), (B,)
            log_probs, lengths = self._forward(batch, widths)  # (B, T, C), (B,)
            outputs.append((chunk, log_probs, lengths))
            for (item, _, _), scores in zip(
                chunk, decoder.reading_scores(log_probs, lengths), strict=True
            ):
                readings.setdefault(id(item), []).append(scores)
        language = {key: decoder.choose_language(scores) for key, scores in readings.items()}
        for chunk, log_probs, lengths in outputs:
            for row, (item, i, _) in enumerate(chunk):
                chosen = language[id(item)]
                item.language = None if chosen is None else chosen.language
                frames = log_probs[row : row + 1, : lengths[row]]  # (1, T, C)
                ids, confidence = decoder.decode_as(chosen, frames)[0]
                item.texts[i] = self.tokenizer.decode(ids)
                item.confidences[i] = confidence

    def _forward(self, batch: np.ndarray, widths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A CTC network over a batch (B,1,H,W): log-probs (B,T,C) and lengths (B,), averaged
        over :attr:`shifts`."""
        return forward_shifted(self.runtime.forward, batch, widths, self.shifts)

    def _result(self, item: Prepared, model_ms: float) -> Prediction:
        lines = [
            LinePrediction(text, round(conf, 4), box, margin)
            for text, conf, box, margin in zip(
                item.texts, item.confidences, item.boxes, item.margins, strict=True
            )
        ]
        if self.reads_pages:  # one output for the page: its lines share box and confidence
            lines = [
                LinePrediction(text, lines[0].confidence, lines[0].box)
                for text in item.texts[0].split("\n")
            ]
        blank = sum(item.blank)
        note = None
        if not item.lines:
            note = NOT_WRITING_NOTE
        elif blank == len(item.blank):
            note = BLANK_NOTE
        elif blank:
            note = f"{blank} of {len(item.blank)} lines blank (no ink): not run through the model"
        return Prediction(
            text="\n".join(item.texts),
            confidence=round(combined_confidence(item.confidences, item.texts), 4),
            lines=lines,
            timings={
                "preprocess": round(item.preprocess_ms, 2),
                "model": round(model_ms, 2),
                "total": round(item.preprocess_ms + model_ms, 2),
            },
            model_version=self.model_version,
            kind=item.kind,
            note=note,
            page=item.page,
            language=item.language,
        )

    def warm_up(self) -> None:
        """Run one paragraph through every step, so the first real request does not pay for
        imports (line segmentation pulls in scipy) and first-call allocations."""
        page = Image.new("RGB", (320, 160), "white")
        for top in (30, 100):
            for left in range(20, 300, 40):
                page.paste((20, 20, 20), (left, top, left + 24, top + 30))
        self.predict([page], kind="auto")

    def search_in_python(self) -> None:
        """Beam-search in Python from now on, not compiled (same answers, slower): what
        ``quill bench speed --variant onnx-python-beam`` times against the compiled search."""
        decoder = getattr(self.runtime, "decoder", None)
        if isinstance(decoder, CTCDecoder):
            self.runtime.decoder = replace(decoder, compiled=False)

    def forget_memos(self) -> None:
        """Drop what decoding memoised from earlier lines (a CTC beam search's language-model
        answers), so that the next call costs what new text costs: a benchmark that reads the
        same lines again and again calls this before each read."""
        decoder = getattr(self.runtime, "decoder", None)
        if isinstance(decoder, CTCDecoder):
            decoder.forget()

    def describe(self) -> dict[str, Any]:
        """What is loaded, for health endpoints and logs."""
        return {
            "name": self.name,
            "model_version": self.model_version,
            "family": self.model.family,
            "backend": self.backend,
            "backend_timings_ms": {k: round(v, 2) for k, v in self.backend_timings.items()},
            "backend_choice": self.backend_choice,
            "threads": self.threads,
            "segmenter": self.segmenter,
            "shifts": list(self.shifts),
        }


def width_groups(
    items: Sequence[T],
    width: Callable[[T], int],
    ratio: float = WIDTH_RATIO,
    max_batch: int = MAX_BATCH,
) -> list[list[T]]:
    """``items`` (sorted by ``width``) cut into runs whose widest is at most ``ratio`` times
    their narrowest, of at most ``max_batch`` items.

    >>> width_groups([100, 110, 124, 126, 400, 410], lambda w: w, max_batch=2)
    [[100, 110], [124, 126], [400, 410]]
    >>> width_groups([100, 110, 124, 126, 400, 410], lambda w: w)
    [[100, 110, 124], [126], [400, 410]]
    """
    groups: list[list[T]] = []
    for item in items:
        if groups and len(groups[-1]) < max_batch and width(item) <= ratio * width(groups[-1][0]):
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


def _probe_batch(config: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """A fixed batch of 4 inputs of typical shapes, for timing the runtimes."""
    rng = np.random.default_rng(0)
    if config.kind == "paragraph":
        shapes = [(config.paragraph_height, config.paragraph_width)] * 4
    else:
        shapes = [(config.height, w) for w in (256, 384, 512, 640)]
    return batch_images([(rng.random(shape) > 0.8).astype(np.float32) for shape in shapes])
