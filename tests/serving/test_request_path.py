"""One request path: an upload is decoded once, whoever reads it (the model, line
segmentation, the monitoring projections, a shadow model), and the shadow model is a hook
the service owns."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from quill.inference.recognizer import Recognizer
from quill.monitoring.records import PredictionRecord
from quill.monitoring.shadow import ShadowRunner
from quill.serving.service import PredictionService, build_monitoring
from quill.serving.settings import ServingSettings
from quill.staging.parity import render_line


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def paragraph(*texts: str) -> Image.Image:
    """Lines of the smoke words one under the other, greyscale, as a scan would be."""
    lines = [render_line(text).convert("L") for text in texts]
    page = Image.new("L", (max(line.width for line in lines) + 40, 40 + 60 * len(lines)), 255)
    for i, line in enumerate(lines):
        page.paste(line, (20, 20 + 60 * i))
    return page


@pytest.fixture(scope="module")
def recognizer(smoke_model: Path) -> Recognizer:
    return Recognizer.from_path(smoke_model, backend="onnx", threads=1)


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every ``PIL.Image.open`` from now on (each decode of encoded bytes starts with one)."""
    calls: list[object] = []
    real_open = Image.open

    def counting_open(fp, *args, **kwargs):  # noqa: ANN001, ANN202 - PIL's signature
        calls.append(fp)
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    return calls


@pytest.mark.parametrize("kind", ["line", "paragraph", "auto"])
def test_an_upload_is_decoded_once_on_its_whole_path(
    kind: str, recognizer: Recognizer, smoke_model: Path, tmp_path: Path, opened: list[object]
) -> None:
    """Before: twice (the service, then the monitoring projections), and a shadow model
    read the service's copy. Now the model, segmentation, the projections and the shadow
    model all read the one :class:`LoadedImage`."""
    settings = ServingSettings(
        model_dir=smoke_model,
        monitoring_url=f"sqlite:///{tmp_path / 'm.db'}",
        monitoring_images=tmp_path / "images",
    )
    logger, store = build_monitoring(settings)
    assert logger is not None and store is not None
    shadow = ShadowRunner(recognizer, logger)  # the current model as its own candidate
    service = PredictionService(recognizer, settings, logger, store, after_prediction=shadow)
    image = paragraph("Kew", "ink", "hello") if kind != "line" else render_line("quill")
    upload = png(image)
    opened.clear()

    answer = service.predict_bytes(upload, "api", kind)
    shadow.close()
    assert logger.flush(timeout=60)
    assert len(opened) == 1, f"{len(opened)} decodes for one {kind} request"
    stored = store.get_prediction(answer["request_id"])
    assert stored is not None and store.image_bytes(stored) == upload
    assert stored.projections["width"] == image.width
    assert stored.projections["mean_intensity"] is not None
    [compared] = store.shadow_predictions()
    assert compared.request_id == answer["request_id"] and compared.disagreement == 0.0

    # The same upload again is answered from the cache: nothing decoded on the request path;
    # its projections decode it once, off the request path.
    opened.clear()
    again = service.predict_bytes(upload, "api", kind)
    assert again["cached"] and not opened
    assert logger.flush(timeout=60)
    assert len(opened) == 1
    assert store.get_prediction(again["request_id"]).projections == stored.projections  # type: ignore[union-attr]
    logger.close()
    store.close()


class Hook:
    """An ``after_prediction`` hook that records what it gets, and fails."""

    def __init__(self) -> None:
        self.records: list[PredictionRecord] = []
        self.closed = False

    def __call__(self, record: PredictionRecord) -> None:
        self.records.append(record)
        raise RuntimeError("the hook broke")

    def close(self) -> None:
        self.closed = True


def test_the_hook_gets_each_model_answer_and_its_failure_fails_nothing(
    recognizer: Recognizer, smoke_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hook = Hook()
    service = PredictionService(
        recognizer, ServingSettings(model_dir=smoke_model), after_prediction=hook
    )
    upload = png(render_line("quill"))
    answer = service.predict_bytes(upload, "api", "line", "r1")
    assert answer["text"] == "quill" and answer["cached"] is False
    [record] = hook.records
    assert (record.request_id, record.kind, record.text) == ("r1", "line", "quill")
    assert record.model_version == recognizer.model_version and record.image_bytes == upload
    assert record.decoded is not None and record.decoded.size == render_line("quill").size
    assert "after_prediction failed for request r1" in caplog.text
    # An answer from the cache is not the model's: the hook does not see it.
    assert service.predict_bytes(upload, "api", "line", "r2")["cached"] is True
    assert len(hook.records) == 1
    service.close()
    assert hook.closed


class Collect:
    """An after_prediction hook that keeps what it is handed."""

    def __init__(self) -> None:
        self.records: list[PredictionRecord] = []

    def __call__(self, record: PredictionRecord) -> None:
        self.records.append(record)

    def close(self) -> None:
        pass


def test_a_batch_of_large_images_holds_a_bounded_number_of_pixels_decoded(
    recognizer: Recognizer, smoke_model: Path
) -> None:
    """A batch of 32 large PNGs (2 MB of body) was decoded whole before any was read, and
    every decoded image was handed on to monitoring: 2.5 GB. Images are read in groups of
    about ``max_pixels``, and at most that many decoded pixels are handed on; the others go
    as their bytes (decoded again when projected), and every answer is as when read alone."""
    words = ("quill", "Kew", "ink", "hello")
    uploads = []
    for word in words:
        canvas = Image.new("L", (400, 200), 255)
        canvas.paste(render_line(word).convert("L"), (100, 60))
        uploads.append(png(canvas))
    hook = Collect()
    settings = ServingSettings(model_dir=smoke_model, max_pixels=100_000)  # 80,000 an image
    service = PredictionService(recognizer, settings, after_prediction=hook)
    answers = service.predict_many(uploads, "api", "line", [f"r{i}" for i in range(4)])
    alone = [recognizer.predict([upload], "line")[0].text for upload in uploads]
    assert [answer["text"] for answer in answers] == alone  # type: ignore[index]
    assert alone[:3] == ["quill", "Kew", "ink"]
    assert [answer["cached"] for answer in answers] == [False] * 4  # type: ignore[index]
    assert [record.request_id for record in hook.records] == ["r0", "r1", "r2", "r3"]
    assert sum(record.decoded_pixels for record in hook.records) <= 100_000
    assert [record.image_bytes for record in hook.records] == uploads
    service.close()
