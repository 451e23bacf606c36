"""The JSON and Markdown reports, built from real results."""

from __future__ import annotations

import json
from pathlib import Path

from quill.bench.accuracy import DatasetResult, Readings, pool_unseen_writers, score_slices
from quill.bench.datasets import BenchDataset, BenchSample
from quill.bench.report import (
    accuracy_markdown,
    accuracy_payload,
    speed_markdown,
    speed_payload,
    write,
    write_predictions,
)
from quill.bench.speed import SpeedRun, Timing

MACHINE = {
    "cpu": "Test CPU",
    "usable_cores": 2,
    "logical_cores": 2,
    "memory_gib": 8.0,
    "load_average_1m": 0.5,
}


def _result() -> DatasetResult:
    samples = [
        BenchSample(Path("a.png"), "Kew Gardens", "line", {"group": "p1"}),
        BenchSample(Path("b.png"), "My dear Dyer", "line", {"group": "p2"}),
    ]
    dataset = BenchDataset(
        "hooker",
        Path("/data/hooker"),
        "folder",
        "test",
        "abc123",
        samples,
        ["labels.tsv:3: characters outside the vocabulary: '∞'"],
    )
    readings = {
        "quill": Readings("quill", ["Kew Gardens", "My dear Dyer"]),
        "tesseract": Readings("tesseract", ["kew gardms", ""], failures={1: "PeerError: boom"}),
    }
    return DatasetResult(dataset, readings, score_slices(dataset, readings.values()))


def test_accuracy_report_tables_and_json(tmp_path: Path) -> None:
    result = _result()
    systems = {"quill": {"backend": "onnx"}, "tesseract": {"version": "tesseract 5.3.0"}}
    payload = accuracy_payload([result], systems, {"rapidocr": "not installed"}, MACHINE, "quill")
    markdown = "\n".join(accuracy_markdown(payload))
    json_path, md_path = write(tmp_path, "accuracy", payload, accuracy_markdown(payload))
    assert json.loads(json_path.read_text())["datasets"][0]["version"] == "abc123"
    assert md_path.read_text().strip() == markdown.strip()
    # Tesseract: "kew gardms" vs "Kew Gardens" = 4 edits (2 of them case), "" vs
    # "My dear Dyer" = 12: 16/23 case-sensitive, 14/23 not.
    assert "| hooker | test | 2 | 0.0% | 69.6% | inf |" in markdown
    assert "| all | 2 | 0.0% / 0.0% | 69.6% / 60.9% |" in markdown
    assert "| dataset | split | samples | quill | tesseract | tesseract / quill |" in markdown
    assert "- **rapidocr**: skipped (not installed)" in markdown
    assert "| group=p1 | 1 | 0.0% / 0.0% | 36.4% / 18.2% |" in markdown
    assert "Images a system failed on (scored as empty readings): tesseract 1." in markdown
    assert "The import left out 1 samples" in markdown

    lines = write_predictions(tmp_path / "p.jsonl", [result]).read_text().splitlines()
    second = json.loads(lines[1])
    assert second["reference"] == "My dear Dyer"
    assert second["predictions"] == {"quill": "My dear Dyer", "tesseract": ""}
    assert second["failures"] == {"tesseract": "PeerError: boom"}


def test_speed_report_shows_ratios_stages_and_input_accuracy() -> None:
    timings = [
        Timing("quill-eager", "line", 1, 1, [30.0] * 5, {"preprocess": 10.0, "model": 20.0}),
        Timing("quill-onnx", "line", 1, 1, [10.0] * 5, {"preprocess": 5.0, "model": 5.0}),
        Timing("tesseract", "line", 1, 1, [250.0] * 5),
        Timing("tesseract", "line", 8, 1, [2000.0] * 5),
    ]
    inputs = {"source": "hooker", "line": 16, "paragraph": 0, "warmup": 2, "calls": "5"}
    accuracy = {
        "quill-onnx": {"line": 0.05},
        "quill-onnx-int8": {"line": 0.07},
        "tesseract": {"line": 0.6},
    }
    failures = {"quill-onnx paragraph batch=1 threads=1": "ImageError: bad"}
    run = SpeedRun(timings, failures, {}, accuracy)
    payload = speed_payload(run, {"rapidocr": "not installed"}, MACHINE, inputs, "quill-eager")
    markdown = "\n".join(speed_markdown(payload))
    assert (
        "| line | 1 | 1 | quill-onnx | 10.0 | 10.0 | 10.0 | 100.0 | 5.0 | 5.0 | 3.00x |" in markdown
    )
    assert "| line | 1 | 1 | tesseract | 250.0 | 250.0 | 250.0 | 4.0 | — | — | 0.12x |" in markdown
    # No eager row at batch 8: no ratio rather than a wrong one.
    assert "| line | 8 | 1 | tesseract | 250.0 | 250.0 | 250.0 | 4.0 | — | — | — |" in markdown
    assert "| tesseract | 60.0% | — |" in markdown
    assert "Test CPU, 2 of 2 logical cores usable" in markdown
    assert payload["timings"][1]["speedup_vs_baseline"] == 3.0
    assert (
        "int8 vs float32 ONNX CER (kept = within 0.5 points): line 7.0% vs 5.0% (NOT kept)."
        in markdown
    )
    assert "- **quill-onnx paragraph batch=1 threads=1**: failed (ImageError: bad)" in markdown
    assert "- **rapidocr**: skipped (not installed)" in markdown


def test_speed_report_puts_quill_beside_the_peers_per_kind_and_batch() -> None:
    timings = [
        Timing("quill-onnx", "line", 1, 1, [5.0] * 5),
        Timing("quill-onnx", "line", 8, 1, [20.0] * 5),
        Timing("tesseract", "line", 1, 1, [80.0] * 5),
        Timing("rapidocr", "line", 1, 1, [15.0] * 5),
        Timing("quill-onnx", "page", 1, 1, [200.0, 220.0, 240.0, 260.0, 280.0]),
        Timing("tesseract", "page", 1, 1, [800.0] * 5),
    ]
    inputs = {"source": "hooker", "line": 16, "paragraph": 0, "page": 4, "warmup": 2}
    inputs |= {"calls": "5", "page_source": "hooker-pages (pages)"}
    accuracy = {"quill-onnx": {"line": 0.05, "page": 0.1}, "tesseract": {"page": 0.7}}
    payload = speed_payload(SpeedRun(timings, {}, {}, accuracy), {}, MACHINE, inputs, "none")
    page = payload["timings"][4]
    assert page["peers_p50_over_this"] == {"tesseract": round(800 / 240, 2)}
    assert page["mean_ms"] == 240.0 and page["throughput_vs_batch_1"] is None
    assert payload["timings"][1]["throughput_vs_batch_1"] == 2.0  # 8 in 20 ms vs 1 in 5 ms
    assert payload["timings"][0]["peers_p50_over_this"] == {"rapidocr": 3.0, "tesseract": 16.0}
    markdown = "\n".join(speed_markdown(payload))
    assert "and 4 whole pages from `hooker-pages (pages)`" in markdown
    assert "| kind | batch | threads | system | p50 ms | mean ms | rapidocr p50 / quill's |" in (
        markdown
    )
    assert "| line | 1 | 1 | quill-onnx | 5.0 | 5.0 | 3.00x | 16.00x | — |" in markdown
    assert "| line | 8 | 1 | quill-onnx | 2.5 | 2.5 | — | — | 2.00x |" in markdown
    assert "| page | 1 | 1 | quill-onnx | 240.0 | 240.0 | — | 3.33x | — |" in markdown
    assert "| system | line | paragraph | page |" in markdown
    assert "| tesseract | — | — | 70.0% |" in markdown


def test_peers_only_report_has_no_ratio_columns() -> None:
    full = _result()
    readings = {name: full.readings[name] for name in ("tesseract",)}
    result = DatasetResult(full.dataset, readings, score_slices(full.dataset, readings.values()))
    payload = accuracy_payload([result], {"tesseract": {}, "rapidocr": {}}, {}, MACHINE, None)
    markdown = "\n".join(accuracy_markdown(payload))
    assert "| dataset | split | samples | tesseract | rapidocr |" in markdown
    assert "| hooker | test | 2 | 69.6% | — |" in markdown
    assert " / " not in markdown.split("## hooker")[0].split("## Summary")[1]


def _writer_result(name: str, texts: list[str], read: list[str]) -> DatasetResult:
    samples = [
        BenchSample(Path(f"{name}{i}.png"), t, "line", {"group": f"w{i}"})
        for i, t in enumerate(texts)
    ]
    dataset = BenchDataset(
        name, Path(f"/data/{name}"), "folder", "test", "v" + name, samples, split_by="writer"
    )
    readings = {"quill": Readings("quill", read), "tesseract": Readings("tesseract", [""] * 2)}
    return DatasetResult(dataset, readings, score_slices(dataset, readings.values()))


def test_unseen_writers_come_first_in_json_and_markdown() -> None:
    hooker = _result()
    copiste = _writer_result("copiste", ["Fédération", "du Laos"], ["Federation", "du Laos"])
    poilus = _writer_result("poilus", ["Ceci est mon Testament", "fait"], ["Ceci est", "fait"])
    results = [hooker, copiste, poilus]
    unseen = pool_unseen_writers(results)
    empty = BenchDataset(
        "mss19", Path("/m"), "folder", "test", "v", [], split_by="writer", note="no test samples"
    )
    systems = {"quill": {}, "tesseract": {}}
    payload = accuracy_payload(results, systems, {}, MACHINE, "quill", unseen=unseen, empty=[empty])
    assert [d["name"] for d in payload["datasets"]] == [
        "unseen writers",
        "hooker",
        "copiste",
        "poilus",
    ]
    assert payload["unseen_writers"] == ["copiste", "poilus"]
    assert payload["datasets"][0]["pooled"] == ["copiste", "poilus"]
    assert payload["empty_datasets"][0]["note"] == "no test samples"
    markdown = "\n".join(accuracy_markdown(payload))
    # Pooled: 2 (é, é) + 14 (" mon Testament") edits over 10 + 7 + 22 + 4 = 43 characters.
    summary = markdown.split("## Summary")[1].split("\n## ")[0]
    rows = [line for line in summary.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1] == (
        "| **unseen writers** (copiste + poilus) | test | 4 | 37.2% | 100.0% | 2.7x |"
    )
    assert rows[2].startswith("| hooker |") and rows[3].startswith("| copiste |")
    assert markdown.index("## unseen writers") < markdown.index("## hooker")
    assert "The `test` lines of copiste, poilus, pooled, 4 samples" in markdown
    assert "| dataset=copiste | 2 | 11.8% / 11.8% | 100.0% / 100.0% |" in markdown
    assert "(folder), split `test` (split by writer)" in markdown
    assert "- **mss19**: not scored (no test samples)" in markdown
    assert "*unseen writers*: the test lines of the datasets split by writer (copiste, poilus)" in (
        markdown
    )
