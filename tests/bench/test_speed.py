"""Timing, int8 quantisation and the speed run, on the real staged model and real images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from quill.bench.datasets import load_dataset
from quill.bench.inputs import SpeedInput, compose_paragraphs, speed_inputs
from quill.bench.page_sets import load_pages
from quill.bench.speed import (
    SpeedPlan,
    batches,
    load_quill_variants,
    page_inputs,
    run_speed,
    speedups,
    time_systems,
)
from quill.bench.systems import QuillSystem

from .test_pages import MODEL as SHIPPED_MODEL
from .test_pages import PAGE_LINES, compose_page, write_pagexml


@pytest.fixture(scope="module")
def line_inputs(printed_dataset: Path) -> list[SpeedInput]:
    return speed_inputs(load_dataset(str(printed_dataset)).samples, count=4)["line"]


def test_time_system_counts_only_timed_calls_and_splits_quill_stages(
    tiny_model, line_inputs
) -> None:
    quill = QuillSystem.load(tiny_model, "onnx", threads=1)
    (timing,), failures = time_systems([quill], line_inputs, batch=3, threads=1, calls=4, warmup=2)
    assert failures == {}
    assert (len(timing.call_ms), timing.images, timing.kind) == (4, 12, "line")
    assert timing.per_image_ms(50) <= timing.per_image_ms(95) <= timing.per_image_ms(99)
    assert timing.throughput == pytest.approx(12 / (sum(timing.call_ms) / 1000))
    stages = timing.stages
    assert set(stages) == {"preprocess", "model"} and all(v > 0 for v in stages.values())
    # The stages happen inside the timed calls, so they cannot add up to more than them.
    assert (stages["preprocess"] + stages["model"]) * timing.images <= sum(timing.call_ms) * 1.01


def test_quill_forgets_its_language_model_answers_before_each_timed_call(line_inputs) -> None:
    """The shipped model's beam search in Python memoises its LM's answers: reading the same
    inputs again would be timed as cheaper than new text. After the timed calls the memo holds
    what the last call alone put there. (The compiled search keeps nothing between lines.)"""
    quill = QuillSystem.load(SHIPPED_MODEL, "onnx", threads=1)
    quill.recognizer.search_in_python()
    lm = quill.recognizer.runtime.decoder.lm
    time_systems([quill], line_inputs[:2], batch=1, threads=1, calls=3, warmup=1)
    after_timing = lm.context_log_prob.cache_info().currsize
    last_call = batches(line_inputs[:2], batch=1, count=4)[-1]
    quill.forget_memos()
    quill.read(last_call, "line")
    assert after_timing == lm.context_log_prob.cache_info().currsize > 0


def test_the_python_beam_variant_reads_as_the_compiled_search_does(line_inputs, tmp_path) -> None:
    """`--variant onnx-python-beam` times the same decoding with the search in Python: the
    same texts, only slower (what the compiled search saves)."""
    systems, missing = load_quill_variants(
        SHIPPED_MODEL, ["onnx", "onnx-python-beam"], 1, tmp_path / "int8"
    )
    assert not missing
    compiled, python = systems
    assert python.recognizer.runtime.decoder.compiled is False
    assert compiled.recognizer.runtime.decoder.compiled is None  # compiled where it can be
    images = [item.image for item in line_inputs]
    assert python.read(images, "line") == compiled.read(images, "line")


class BrokenRecognizer:
    """A system whose every read fails, as a crashing runtime would."""

    name = "broken"

    def describe(self) -> dict[str, str]:
        return {}

    def read(self, images, kind):
        raise RuntimeError("runtime crashed")


def test_a_failing_system_leaves_the_others_timed(tiny_model, line_inputs) -> None:
    quill = QuillSystem.load(tiny_model, "onnx", threads=1)
    systems = [BrokenRecognizer(), quill]
    timings, failures = time_systems(systems, line_inputs, batch=2, threads=1, calls=3, warmup=1)
    assert [t.system for t in timings] == ["quill-onnx"] and len(timings[0].call_ms) == 3
    assert failures == {"broken": "RuntimeError: runtime crashed"}


def test_paragraphs_are_composed_from_consecutive_lines_of_one_page(printed_dataset) -> None:
    samples = load_dataset(str(printed_dataset)).samples
    first = compose_paragraphs(samples, count=5, lines_per_paragraph=2)
    assert [p.text for p in first] == [
        "The quick brown fox\njumps over 12 lazy dogs.",
        "Kew Gardens, London\nMy dear Dyer",
    ]
    assert first == compose_paragraphs(samples, count=5, lines_per_paragraph=2)  # same bytes


def test_a_model_without_an_int8_copy_is_quantised_into_a_copy_for_the_bench(
    tiny_model, tmp_path
) -> None:
    systems, missing = load_quill_variants(tiny_model, ["onnx-int8"], 1, tmp_path / "int8")
    assert missing == {} and systems[0].recognizer.backend == "onnx-int8"
    assert systems[0].recognizer.model_dir == tmp_path / "int8"
    assert not (tiny_model / "model-int8.onnx").exists()  # the model itself is untouched
    assert (
        "onnx-int8" in json.loads((tmp_path / "int8" / "quill-model.json").read_text())["backends"]
    )


def test_the_auto_variant_names_the_runtime_it_chose(tiny_model, tmp_path) -> None:
    [system], missing = load_quill_variants(tiny_model, ["auto"], 1, tmp_path / "int8")
    assert missing == {} and system.name == "quill-auto"
    assert system.settings["chosen_backend"] == system.recognizer.backend
    assert system.recognizer.backend in {"onnx", "torchscript"}  # the tiny model has no int8


def test_variants_keep_or_override_the_models_decoding(tiny_model, tmp_path) -> None:
    from quill.models.language_model import CharNGramLM

    model = Path(shutil.copytree(tiny_model, tmp_path / "model"))
    CharNGramLM.fit(["a tiny corpus"], order=3).save(model / "lm.json")
    meta = json.loads((model / "quill-model.json").read_text())
    meta["decoding"] = {"method": "beam", "beam_width": 4, "lm": "lm.json", "lm_weight": 0.5}
    (model / "quill-model.json").write_text(json.dumps(meta))
    systems, missing = load_quill_variants(
        model, ["onnx", "onnx-int8", "onnx-greedy"], 1, tmp_path / "int8"
    )
    assert missing == {} and (tmp_path / "int8" / "lm.json").is_file()
    decoders = {s.name: s.recognizer.runtime.decoder for s in systems}
    assert decoders["quill-onnx"].lm is not None and decoders["quill-onnx-int8"].lm is not None
    assert decoders["quill-onnx-greedy"].method == "greedy"


def test_run_speed_times_every_variant_and_records_failures(
    tiny_model, line_inputs, tmp_path
) -> None:
    broken = [SpeedInput(b"not an image", "x", "paragraph")]
    inputs = {"line": line_inputs, "paragraph": broken}
    loads: list[int] = []

    def load(threads: int):
        loads.append(threads)
        systems, missing = load_quill_variants(
            tiny_model, ["eager", "onnx-int8"], threads, tmp_path / "int8"
        )
        assert missing == {}
        return systems

    plan = SpeedPlan(batches=(1, 2), threads=(1,), images=2, warmup=1)
    run = run_speed(load, inputs, plan)
    assert loads == [1]
    rows = {(t.system, t.kind, t.batch) for t in run.timings}
    assert rows == {(s, "line", b) for s in ("quill-eager", "quill-onnx-int8") for b in (1, 2)}
    assert all(len(t.call_ms) == 5 for t in run.timings)  # never fewer than 5 calls
    assert set(run.failures) == {
        f"{s} paragraph batch={b} threads=1"
        for s in ("quill-eager", "quill-onnx-int8")
        for b in (1, 2)
    }
    assert "ImageError" in run.failures["quill-onnx-int8 paragraph batch=2 threads=1"]
    assert set(run.accuracy["quill-onnx-int8"]) == {"line"}  # no CER for the kind that failed
    ratios = speedups(run.timings, "quill-eager")
    eager_rows = [i for i, t in enumerate(run.timings) if t.system == "quill-eager"]
    assert all(ratios[i] == 1.0 for i in eager_rows) and len(ratios) == len(run.timings)


class LinesOnly:
    """The real Quill model read through ``read`` alone: a system that cannot find the lines
    of a page by itself (as a line recogniser without a detector)."""

    name = "lines-only"

    def __init__(self, quill: QuillSystem):
        self.quill = quill

    def describe(self) -> dict[str, str]:
        return {}

    def read(self, images, kind):
        return self.quill.read(images, kind)


def test_whole_pages_are_timed_one_per_call_by_the_systems_that_read_pages(
    tiny_model, line_inputs, tmp_path
) -> None:
    image, boxes = compose_page(PAGE_LINES)
    (tmp_path / "letter.png").write_bytes(image)
    write_pagexml(tmp_path, "letter", PAGE_LINES, boxes)
    pages = page_inputs(load_pages(f"letters={tmp_path}"))
    assert [(p.kind, p.text, p.image) for p in pages] == [("page", "\n".join(PAGE_LINES), image)]
    quill = QuillSystem.load(tiny_model, "onnx", threads=1)
    plan = SpeedPlan(batches=(1, 2), threads=(1,), images=2, warmup=1)
    inputs = {"line": line_inputs, "page": pages}
    run = run_speed(lambda threads: [quill, LinesOnly(quill)], inputs, plan)
    assert run.failures == {}
    rows = {(t.system, t.kind, t.batch) for t in run.timings}
    # Pages are one request each (batch 1), timed only for systems that find lines themselves.
    assert {row for row in rows if row[1] == "page"} == {("quill-onnx", "page", 1)}
    assert {row for row in rows if row[1] == "line"} == {
        (s, "line", b) for s in ("quill-onnx", "lines-only") for b in (1, 2)
    }
    (page_row,) = [t for t in run.timings if t.kind == "page"]
    assert len(page_row.call_ms) == 5 and page_row.mean_ms > 0
    # Finding the lines is preprocessing; the stages fit inside the timed calls.
    assert page_row.stages["preprocess"] > 0 and page_row.stages["model"] > 0
    assert sum(page_row.stages.values()) * page_row.images <= sum(page_row.call_ms) * 1.01
    assert set(run.accuracy["quill-onnx"]) == {"line", "page"}
    assert set(run.accuracy["lines-only"]) == {"line"}


def test_a_missing_runtime_file_is_reported_not_fatal(tiny_model, tmp_path) -> None:
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("quill-model.json", "model.onnx"):
        (partial / name).write_bytes((tiny_model / name).read_bytes())
    systems, missing = load_quill_variants(partial, ["torchscript", "onnx"], 1, tmp_path / "q")
    assert [s.name for s in systems] == ["quill-onnx"]
    assert "model.pt" in missing["quill-torchscript"]


def test_cold_starts_take_turns_and_failures_are_reported(tmp_path: Path) -> None:
    import sys

    from quill.bench.speed import cold_start_markdown, cold_start_payload, time_cold_starts

    log = tmp_path / "order.txt"
    append = "import sys; open(sys.argv[1], 'a').write(sys.argv[2])"
    commands = {
        "quill": ([sys.executable, "-c", append + "; print('read')", str(log), "q"], {}),
        "tesseract": ([sys.executable, "-c", append, str(log), "t"], {"OMP_THREAD_LIMIT": "1"}),
        "broken": ([sys.executable, "-c", "raise SystemExit('no model')"], {}),
    }
    rows, failures = time_cold_starts(commands, runs=3, warmup=1)
    assert log.read_text() == "qt" * 4  # one warm-up run each, then turns
    assert [row.system for row in rows] == ["quill", "tesseract"]
    assert all(len(row.runs_s) == 3 and min(row.runs_s) > 0 for row in rows)
    assert rows[0].text == "read"
    assert failures == {"broken": "exit code 1: no model"}
    section = cold_start_payload(rows, {"rapidocr": "peer missing"}, failures)
    ratio = section["quill_vs"]["tesseract"]
    assert ratio == round(rows[1].p50_s / rows[0].p50_s, 2)
    markdown = "\n".join(cold_start_markdown(section))
    assert f"{ratio:.2f}x" in markdown and "peer missing" in markdown and "no model" in markdown


def test_cold_start_commands_read_one_line_or_say_the_peer_is_missing(
    tiny_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quill.bench import speed

    image = tmp_path / "line.png"
    commands, missing = speed.cold_start_commands(tiny_model, image, 1, ["tesseract"])
    quill, _ = commands["quill"]
    assert quill[-8:-4] == ["predict", str(image), "--model", str(tiny_model)]
    assert quill[-4:] == ["--kind", "line", "--threads", "1"]
    if "tesseract" in commands:
        tesseract, env = commands["tesseract"]
        assert tesseract[1:3] == [str(image), "stdout"] and "--psm" in tesseract
        assert env == {"OMP_THREAD_LIMIT": "1"}
    monkeypatch.setattr(speed.shutil, "which", lambda name: None)
    commands, missing = speed.cold_start_commands(None, image, 1, ["tesseract"])
    assert commands == {} and missing["tesseract"].startswith("peer missing")
