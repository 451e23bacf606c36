"""Recognizer: every input type, batching, paragraphs, runtimes, threads, errors."""

from __future__ import annotations

import http.server
import io
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from quill.inference.backends import ModelLoadError
from quill.inference.recognizer import Recognizer
from quill.preprocess import ImageError
from quill.staging.parity import render_line
from quill.staging.smoke import SMOKE_WORDS

PAPER = (246, 242, 232)


@pytest.fixture(scope="module")
def recognizer(smoke_model: Path) -> Recognizer:
    return Recognizer.from_path(smoke_model, backend="onnx", threads=1)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def paragraph(words: tuple[str, ...]) -> Image.Image:
    lines = [render_line(w) for w in words]
    page = Image.new(
        "RGB", (max(i.width for i in lines) + 40, sum(i.height for i in lines) + 40), PAPER
    )
    top = 20
    for line in lines:
        page.paste(line, (20, top))
        top += line.height
    return page


def test_every_input_type_reads_the_same_text(recognizer: Recognizer, tmp_path: Path) -> None:
    image = render_line("quill")
    path = tmp_path / "quill.png"
    image.save(path)
    inputs = [image, np.asarray(image), png_bytes(image), path, str(path)]
    predictions = recognizer.predict(inputs, kind="line")
    assert [p.text for p in predictions] == ["quill"] * len(inputs)
    first = predictions[0]
    assert 0.5 < first.confidence <= 1.0
    assert first.model_version == recognizer.model_version
    assert set(first.timings) == {"preprocess", "model", "total"}
    assert first.lines[0].box == (0, 0, image.width, image.height)


def test_a_batch_of_words_is_read_word_by_word(recognizer: Recognizer) -> None:
    predictions = recognizer.predict([render_line(w) for w in SMOKE_WORDS])
    assert [p.text for p in predictions] == list(SMOKE_WORDS)
    assert all(p.kind == "line" for p in predictions)


def test_a_paragraph_is_segmented_and_its_lines_read_top_to_bottom(recognizer: Recognizer) -> None:
    page = paragraph(("quill", "Kew", "quill"))
    [prediction] = recognizer.predict([page], kind="auto")
    assert prediction.kind == "paragraph"
    assert len(prediction.lines) == 3
    assert prediction.text == "\n".join(line.text for line in prediction.lines)
    tops = [line.box[1] for line in prediction.lines]
    assert tops == sorted(tops)
    assert "Kew" in prediction.lines[1].text
    [as_line] = recognizer.predict([page], kind="line")
    assert len(as_line.lines) == 1 and "\n" not in as_line.text


def test_runtimes_agree_and_auto_records_its_choice(smoke_model: Path) -> None:
    images = [render_line(w) for w in SMOKE_WORDS]
    texts = {
        name: [
            p.text
            for p in Recognizer.from_path(smoke_model, backend=name, threads=1).predict(images)
        ]
        for name in ("onnx", "torchscript", "eager")
    }
    assert texts["onnx"] == texts["torchscript"] == texts["eager"] == list(SMOKE_WORDS)
    auto = Recognizer.from_path(smoke_model, backend="auto", threads=1)
    assert set(auto.backend_timings) == {"onnx", "torchscript"}
    assert auto.backend == min(auto.backend_timings, key=auto.backend_timings.get)
    assert auto.describe()["backend"] == auto.backend


def test_thread_setting_reaches_onnx_runtime(smoke_model: Path) -> None:
    recognizer = Recognizer.from_path(smoke_model, backend="onnx", threads=1)
    assert recognizer.runtime.session.get_session_options().intra_op_num_threads == 1


def test_a_bad_input_in_a_batch_is_named(recognizer: Recognizer) -> None:
    with pytest.raises(ImageError, match="input 1") as error:
        recognizer.predict([render_line("ink"), b"not an image"])
    assert error.value.code == "not_an_image"
    with pytest.raises(ImageError) as tiny:
        recognizer.predict([Image.new("RGB", (1, 1))])
    assert tiny.value.code == "image_too_small"


@pytest.fixture()
def image_server(tmp_path: Path) -> Iterator[str]:
    render_line("Kew").save(tmp_path / "kew.png")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_urls_are_fetched_and_failures_named(recognizer: Recognizer, image_server: str) -> None:
    [prediction] = recognizer.predict([f"{image_server}/kew.png"])
    assert prediction.text == "Kew"
    with pytest.raises(ImageError, match="missing.png") as error:
        recognizer.predict([f"{image_server}/missing.png"])
    assert error.value.code == "url_fetch_failed"


def test_broken_model_directories_fail_to_load_clearly(smoke_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="quill-model.json is missing"):
        Recognizer.from_path(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(smoke_model, broken)
    (broken / "model.onnx").write_bytes(b"\x00corrupt")
    with pytest.raises(ModelLoadError, match="model.onnx"):
        Recognizer.from_path(broken, backend="onnx")
    (broken / "quill-model.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="corrupt"):
        Recognizer.from_path(broken)
    meta = json.loads((smoke_model / "quill-model.json").read_text())
    (broken / "quill-model.json").write_text(json.dumps(meta))
    (broken / "model.pt").unlink()
    with pytest.raises(ModelLoadError, match="model.pt"):
        Recognizer.from_path(broken, backend="torchscript")
