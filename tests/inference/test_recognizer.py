"""Recognizer: every input type, batching, paragraphs, runtimes, threads, errors."""

from __future__ import annotations

import http.server
import io
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from quill.inference.recognizer import BLANK_NOTE, NOT_WRITING_NOTE, Recognizer
from quill.models.segment import SMALL_WRITING_NOTE
from quill.preprocess import ImageError
from quill.runtimes.backends import AUTO_MARGIN
from quill.staged_model import ModelLoadError
from quill.staging.parity import render_line
from quill.staging.smoke import SMOKE_WORDS
from quill.vocab import Tokenizer

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


def test_a_page_says_what_segmentation_found(recognizer: Recognizer) -> None:
    """A page's answer carries the segmenter's findings; a line read whole has none."""
    page = paragraph(("quill", "Kew", "quill")).rotate(90, expand=True)
    [prediction] = recognizer.predict([page], kind="paragraph")
    # three short lines are too few to tell upside down (the segmenter's tests cover that)
    assert prediction.page is not None and prediction.page["rotation"] in (90, 270)
    assert any("turned" in note for note in prediction.page["notes"])
    assert [line.margin for line in prediction.lines] == [False] * 3
    assert prediction.to_dict()["page"] == prediction.page
    [line] = recognizer.predict([render_line("quill")], kind="line")
    assert line.page is None


def test_a_grainy_photo_of_blank_paper_reads_as_nothing_and_says_why(
    recognizer: Recognizer,
) -> None:
    pixels = np.random.default_rng(1).normal(220, 20, (1200, 900, 3))
    grainy = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    [prediction] = recognizer.predict([grainy], kind="paragraph")
    assert (prediction.text, prediction.note) == ("", BLANK_NOTE)
    assert prediction.page is not None
    assert any("specks" in note for note in prediction.page["notes"])


@pytest.mark.parametrize("kind", ["auto", "paragraph"])
def test_colour_noise_is_not_read_as_text(recognizer: Recognizer, kind: str) -> None:
    """Random colour pixels: their ink mask breaks into thousands of small pieces that are
    neither specks nor as many crests as grey noise makes, and a real model read 35 lines of
    made-up text from them. Almost none is the size of a letter: not writing."""
    pixels = np.random.default_rng(0).integers(0, 256, (1000, 800, 3), dtype=np.uint8)
    [prediction] = recognizer.predict([Image.fromarray(pixels)], kind=kind)
    assert (prediction.text, prediction.note, prediction.lines) == ("", NOT_WRITING_NOTE, [])
    assert prediction.page is not None
    assert any("the size of a letter" in note for note in prediction.page["notes"])


@pytest.mark.parametrize("kind", ["auto", "paragraph"])
def test_a_word_on_a_large_empty_photo_is_found_and_read(recognizer: Recognizer, kind: str) -> None:
    """A word covering 0.2% of a 3000 x 2200 photo read as "blank: no ink in the image": the
    blank test measures ink at the 99.5th percentile of the colour distance, which the word's
    strokes do not reach, and the whole photo shrunk to the line height left it 2 pixels
    tall. It is looked for closer, and read from its own crop."""
    photo = Image.new("RGB", (3000, 2200), PAPER)
    photo.paste(render_line("quill"), (1400, 1000))
    [prediction] = recognizer.predict([png_bytes(photo)], kind=kind)
    assert (prediction.text, prediction.note) == ("quill", None)
    assert prediction.page is not None
    assert SMALL_WRITING_NOTE in prediction.page["notes"]
    [line] = prediction.lines
    x0, y0, x1, y1 = line.box
    assert 1350 < x0 < x1 < 1600 and 950 < y0 < y1 < 1120
    empty = Image.new("RGB", (3000, 2200), PAPER)  # and a truly empty photo stays blank
    assert recognizer.predict([png_bytes(empty)], kind=kind)[0].note == BLANK_NOTE


def test_a_sliver_cut_from_a_page_is_left_out_not_blamed_on_the_image(
    recognizer: Recognizer, hooker_dir: Path
) -> None:
    """A 400 x 4 strip of a real line, read as a paragraph, failed as "input 0: image is 36x3
    pixels": a crop the segmenter cut, not the user's image, and the batch's other images
    lost their answers with it."""
    line = Image.open(hooker_dir / "lines" / "JDH_2_16_144_002_r1l1.jpg").convert("L")
    strip = line.resize((400, 4))
    predictions = recognizer.predict([strip, render_line("quill")], kind="paragraph")
    assert predictions[1].text == "quill"


@pytest.mark.parametrize("kind", ["auto", "line"])
def test_a_dot_is_not_read_as_a_letter(recognizer: Recognizer, kind: str) -> None:
    """A 4 x 4 image with one dark pixel read "an": its dot, enlarged to the line height,
    was a blob the model took for letters. Its answer is blank, as the segmenter's note
    (specks) already said."""
    dot = Image.new("L", (4, 4), 255)
    dot.putpixel((1, 1), 0)
    [prediction] = recognizer.predict([dot], kind=kind)
    assert (prediction.text, prediction.note) == ("", BLANK_NOTE)


@pytest.mark.parametrize("kind", ["auto", "paragraph"])
def test_noise_is_not_read_as_text(recognizer: Recognizer, kind: str) -> None:
    """Random ink on a fifth of the pixels: segmentation finds thousands of pieces, not
    lines, so nothing is read (the model run on the whole image made up text; on a larger
    noise image, joining the pieces took 12 GB)."""
    noise = np.random.default_rng(0).random((1000, 1000)) < 0.2
    image = Image.fromarray(np.where(noise, 0, 255).astype(np.uint8))
    [prediction] = recognizer.predict([image], kind=kind)
    assert (prediction.text, prediction.note, prediction.lines) == ("", NOT_WRITING_NOTE, [])
    assert prediction.page is not None
    assert any("the ink breaks into" in note for note in prediction.page["notes"])


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
    # ONNX unless TorchScript is clearly faster (it would import torch at every start)
    onnx, torchscript = auto.backend_timings["onnx"], auto.backend_timings["torchscript"]
    assert auto.backend == ("torchscript" if torchscript <= AUTO_MARGIN * onnx else "onnx")
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


def test_a_character_set_of_another_size_than_the_network_is_a_load_error(
    smoke_model: Path, tmp_path: Path
) -> None:
    """A quill-model.json whose character set lacks a character read every line shifted by
    one character (greedy, exit 0) or ended in an IndexError or a size-mismatch traceback."""
    shorter = tmp_path / "shorter"
    shutil.copytree(smoke_model, shorter)
    meta = json.loads((shorter / "quill-model.json").read_text())
    meta["tokenizer"]["characters"] = meta["tokenizer"]["characters"][1:]
    (shorter / "quill-model.json").write_text(json.dumps(meta))
    for backend in ("onnx", "torchscript", "eager", "auto"):
        with pytest.raises(ModelLoadError, match=r"reads \d+ classes, and the character set"):
            Recognizer.from_path(shorter, backend=backend, decoding="greedy")


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("prune_log_prob", 5.0, "prune_log_prob must be negative"),
        ("lm_weight", float("nan"), "lm_weight must be a finite number"),
        ("beam_width", -3, "beam_width must be at least 1"),
        ("beam_width", 0, "beam_width must be at least 1"),
        ("beam_width", "wide", "beam_width must be a whole number"),
    ],
)
def test_decoding_settings_that_cannot_work_are_a_load_error(
    smoke_model: Path, tmp_path: Path, setting: str, value: object, message: str
) -> None:
    """The first three read every line as empty text (exit 0); the others were an
    IndexError or a TypeError from inside the beam search."""
    model = tmp_path / "model"
    shutil.copytree(smoke_model, model)
    meta = json.loads((model / "quill-model.json").read_text())
    meta["decoding"] = {"method": "beam", setting: value}
    (model / "quill-model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match=message):
        Recognizer.from_path(model, backend="onnx")


def test_auto_leaves_out_a_runtime_whose_file_is_damaged(
    smoke_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A truncated model.pt beside a sound model.onnx made `--backend auto` fail: auto only
    stepped over runtimes whose files were missing."""
    model = tmp_path / "model"
    shutil.copytree(smoke_model, model)
    (model / "model.pt").write_bytes((model / "model.pt").read_bytes()[:1000])
    recognizer = Recognizer.from_path(model)
    assert recognizer.backend == "onnx"
    assert recognizer.predict([render_line("ink")])[0].text == "ink"
    assert "auto leaves out the torchscript runtime: cannot load TorchScript model" in caplog.text


def test_auto_measures_once_per_model_threads_and_machine(
    smoke_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quill.runtimes import backends

    monkeypatch.setenv("QUILL_CACHE_DIR", str(tmp_path / "cache"))
    model = tmp_path / "model"
    shutil.copytree(smoke_model, model)
    first = Recognizer.from_path(model, backend="auto", threads=1)
    assert first.backend_choice == "measured"
    assert (tmp_path / "cache" / "backend-choice.json").is_file()

    def no_measuring(*args: object) -> None:
        raise AssertionError("auto measured again")

    with monkeypatch.context() as patch:
        patch.setattr(backends, "choose_backend", no_measuring)
        again = Recognizer.from_path(model, backend="auto", threads=1)
    assert again.backend_choice == "cached" and again.backend == first.backend
    assert again.backend_timings == pytest.approx(first.backend_timings, abs=1e-3)
    assert again.describe()["backend_choice"] == "cached"
    words = [render_line(w) for w in SMOKE_WORDS]
    assert [p.text for p in again.predict(words)] == list(SMOKE_WORDS)
    # another thread count, or a changed model file, is measured afresh
    assert Recognizer.from_path(model, backend="auto", threads=2).backend_choice == "measured"
    onnx = model / "model.onnx"
    onnx.write_bytes(onnx.read_bytes())
    stat = onnx.stat()
    os.utime(onnx, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert Recognizer.from_path(model, backend="auto", threads=1).backend_choice == "measured"
    # so is a choice made by another rule of choosing
    assert Recognizer.from_path(model, backend="auto", threads=1).backend_choice == "cached"
    monkeypatch.setattr(backends, "AUTO_RULE", backends.AUTO_RULE + " (changed)")
    assert Recognizer.from_path(model, backend="auto", threads=1).backend_choice == "measured"


def test_auto_and_the_lm_work_where_the_cache_cannot_be_written(
    beam_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quill.runtimes import backends

    blocker = tmp_path / "a-file"
    blocker.write_text("the cache folder would have to be inside this file")
    monkeypatch.setenv("QUILL_CACHE_DIR", str(blocker / "cache"))
    words = [render_line(w) for w in SMOKE_WORDS]
    for _ in range(2):
        backends._load_lm.cache_clear()
        recognizer = Recognizer.from_path(beam_model, backend="auto", threads=1)
        assert recognizer.backend_choice == "measured"  # nothing could be remembered
        assert [p.text for p in recognizer.predict(words)] == list(SMOKE_WORDS)
    backends._load_lm.cache_clear()


def test_cache_can_be_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from quill.runtimes import cache

    monkeypatch.setenv("QUILL_CACHE_DIR", "off")
    assert cache.cache_dir() is None and cache.compiled_lm_path(tmp_path / "lm.json") is None
    assert cache.read_backend_choice("anything") is None
    monkeypatch.delenv("QUILL_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "quill"


@pytest.fixture()
def beam_model(smoke_model: Path, tmp_path: Path) -> Path:
    """The smoke model decoding with beam search and a character LM of its words."""
    from quill.models.language_model import CharNGramLM

    model = tmp_path / "beam-model"
    shutil.copytree(smoke_model, model)
    meta = json.loads((model / "quill-model.json").read_text())
    tokenizer = Tokenizer.from_dict(meta["tokenizer"])
    texts = [" ".join(SMOKE_WORDS), *SMOKE_WORDS, "quill ink", "Kew hello"]
    CharNGramLM.fit(texts, order=4, tokenizer=tokenizer).save(model / "lm.json")
    meta["decoding"] = {"method": "beam", "beam_width": 8, "lm": "lm.json", "lm_weight": 0.5}
    (model / "quill-model.json").write_text(json.dumps(meta))
    return model


def test_the_language_model_is_compiled_once_into_the_cache(
    beam_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quill.runtimes import backends, cache

    monkeypatch.setenv("QUILL_CACHE_DIR", str(tmp_path / "cache"))
    words = [render_line(w) for w in SMOKE_WORDS]
    backends._load_lm.cache_clear()
    first = Recognizer.from_path(beam_model, backend="onnx", threads=1)
    compiled = cache.compiled_lm_path(beam_model / "lm.json")
    assert compiled is not None and (compiled / "header.json").is_file()
    assert first.runtime.decoder.lm._counts is not None  # read from the JSON this time
    backends._load_lm.cache_clear()
    second = Recognizer.from_path(beam_model, backend="onnx", threads=1)
    assert second.runtime.decoder.lm._counts is None  # mapped from the compiled arrays
    assert [p.text for p in second.predict(words)] == [p.text for p in first.predict(words)]
    assert [p.confidence for p in second.predict(words)] == [
        p.confidence for p in first.predict(words)
    ]
    # a damaged compiled copy is compiled again
    (compiled / "header.json").write_text("{")
    backends._load_lm.cache_clear()
    Recognizer.from_path(beam_model, backend="onnx", threads=1)
    assert json.loads((compiled / "header.json").read_text())["order"] == 4
    # a copy of the model (as `quill adapt` copies its base's LMs) maps the same compiled LM
    copy = shutil.copytree(beam_model, tmp_path / "copy")
    assert cache.compiled_lm_path(copy / "lm.json") == compiled
    backends._load_lm.cache_clear()
    assert Recognizer.from_path(copy, backend="onnx", threads=1).runtime.decoder.lm._counts is None
    assert sorted(compiled.parent.iterdir()) == [compiled]  # nothing compiled or evicted
    # a changed LM file gets its own
    lm_file = copy / "lm.json"
    stat = lm_file.stat()
    lm_file.write_text(lm_file.read_text() + " ")
    os.utime(lm_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cache.compiled_lm_path(lm_file) != compiled
    backends._load_lm.cache_clear()


def test_cold_start_with_onnx_never_imports_torch(smoke_model: Path, tmp_path: Path) -> None:
    """`quill predict` on ONNX Runtime: only the predict command's module and no torch."""
    import subprocess
    import sys

    render_line("quill").save(tmp_path / "q.png")
    code = (
        "import sys; from quill.cli import main\n"
        f"sys.argv = ['quill', 'predict', {str(tmp_path / 'q.png')!r}, '--model', "
        f"{str(smoke_model)!r}, '--backend', 'onnx']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "clis = sorted(m for m in sys.modules if m.startswith('quill.') and m.endswith('.cli'))\n"
        "print('MODULES', clis, 'torch' in sys.modules)\n"
    )
    env = {**os.environ, "QUILL_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    assert out.splitlines()[0].endswith("quill")
    assert "MODULES ['quill.cli', 'quill.inference.cli'] False" in out


def test_lines_of_very_different_widths_are_read_as_when_alone(recognizer: Recognizer) -> None:
    """The network runs over a batch's padding too: lines share a call only with lines of
    similar width, so a short line next to a long one reads exactly as it does alone."""
    from quill.inference.recognizer import width_groups

    short = render_line("ink")
    long = render_line("hello")
    long = long.resize((long.width * 3, long.height))
    together = recognizer.predict([short, long, short], kind="line")
    alone = [recognizer.predict([image], kind="line")[0] for image in (short, long, short)]
    assert [(p.text, p.confidence) for p in together] == [(p.text, p.confidence) for p in alone]
    assert width_groups([10, 12, 30, 31, 32], lambda w: w, max_batch=2) == [
        [10, 12],
        [30, 31],
        [32],
    ]


def near_blank_paper() -> Image.Image:
    """A photo of empty paper: JPEG noise, a shadow across it and a speck of dust."""
    rng = np.random.default_rng(0)
    pixels = rng.normal((232, 226, 212), 4.0, (90, 600, 3))
    pixels *= np.linspace(1.0, 0.8, 600)[None, :, None]
    pixels[40:43, 300:303] -= 40
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=75)
    return Image.open(io.BytesIO(buffer.getvalue()))


def test_blank_and_near_blank_images_read_as_nothing_without_the_model(
    recognizer: Recognizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Empty paper has no text: the model is not asked (it would guess letters from the
    paper), the answer is "" at confidence 1 and its note says why."""
    blank = tmp_path / "blank.png"
    Image.new("RGB", (600, 90), PAPER).save(blank)
    near = tmp_path / "near-blank.jpg"
    near_blank_paper().save(near, quality=95)
    calls: list[int] = []
    network = recognizer.runtime.forward

    def counting(images: np.ndarray, widths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls.append(len(images))
        return network(images, widths)

    monkeypatch.setattr(recognizer.runtime, "forward", counting)
    for kind in ("auto", "line", "paragraph"):
        predictions = recognizer.predict([blank, near], kind=kind)
        assert [(p.text, p.confidence, p.note) for p in predictions] == [("", 1.0, BLANK_NOTE)] * 2
        assert all(len(p.lines) == 1 and p.lines[0].text == "" for p in predictions)
    assert calls == []
    # beside a word, only the word goes through the model
    word, empty = recognizer.predict([render_line("ink"), blank], kind="line")
    assert (word.text, word.note) == ("ink", None) and (empty.text, empty.note) == ("", BLANK_NOTE)
    assert calls == [1]


def test_the_lines_of_one_page_are_read_in_one_language(smoke_model: Path, tmp_path: Path) -> None:
    """A model reading a second language decodes a page's lines in the language their
    greedy readings look like together: "ink" alone reads as the main language (whose LM
    here misleads), on a page with "quill" and "Kew" it is read in the second one."""
    from quill.models.language_model import CharNGramLM
    from quill.staged_model import DecodingConfig, LanguageDecoding, StagedModel

    model = Path(shutil.copytree(smoke_model, tmp_path / "two-languages"))
    tokenizer = StagedModel.load(model).tokenizer
    files = {
        "main.json": ["qqqq xxxx zzzz"] * 5,  # an LM under which the words misread
        "main-id.json": ["ink"] * 20 + ["qqqq xxxx zzzz"] * 5,  # "ink" looks like this one
        "words.json": list(SMOKE_WORDS) * 5,
        "words-id.json": ["hello", "quill", "Kew"] * 5,
    }
    for name, texts in files.items():
        CharNGramLM.fit(texts, order=3, tokenizer=tokenizer).save(tmp_path / name)
    staged = StagedModel.load(model).set_decoding(
        DecodingConfig(method="beam", beam_width=4, lm_weight=1.0, insertion_bonus=0.0),
        tmp_path / "main.json",
    )
    words = LanguageDecoding("xx", "", "", lm_weight=0.5, insertion_bonus=0.0)
    staged.set_languages(
        tmp_path / "main-id.json",
        0.0,
        [(words, tmp_path / "words.json", tmp_path / "words-id.json")],
    )
    recognizer = Recognizer.from_path(model, backend="onnx", threads=1)
    alone = recognizer.predict([render_line(w) for w in ("quill", "Kew", "ink")], kind="line")
    assert [p.text for p in alone[:2]] == ["quill", "Kew"] and alone[2].text != "ink"
    assert [p.language for p in alone] == ["xx", "xx", None]
    [page] = recognizer.predict([paragraph(("quill", "Kew", "ink"))], kind="paragraph")
    assert [line.text for line in page.lines] == ["quill", "Kew", "ink"]
    assert page.language == "xx" and page.to_dict()["language"] == "xx"
