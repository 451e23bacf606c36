"""``quill bench accuracy|speed`` end to end through the real ``quill`` command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from quill.cli import app

from .test_datasets import _labelled_folder, write_writer_folder, writers_in

runner = CliRunner()


def test_accuracy_command_writes_reports_for_quill_and_its_peers(
    tiny_model: Path, printed_dataset: Path, tmp_path: Path
) -> None:
    args = ["bench", "accuracy", "--model", str(tiny_model), "--data", f"printed={printed_dataset}"]
    args += ["--peer", "tesseract", "--out", str(tmp_path), "--also-decoding", "beam"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "accuracy.json").read_text())
    expected = ["quill", "quill-beam"] + (["tesseract"] if shutil.which("tesseract") else [])
    assert list(payload["systems"]) == expected
    assert json.loads(payload["systems"]["quill-beam"]["decoding"]) == {"method": "beam"}
    assert payload["datasets"][0]["samples"] == 4
    markdown = (tmp_path / "accuracy.md").read_text()
    assert "## printed" in markdown and "| inverted=True | 1 |" in markdown
    lines = (tmp_path / "accuracy-predictions.jsonl").read_text().splitlines()
    assert len(lines) == 4 and set(json.loads(lines[0])["predictions"]) == set(expected)


def test_accuracy_command_explains_what_is_wrong(printed_dataset: Path, tmp_path: Path) -> None:
    nothing = runner.invoke(app, ["bench", "accuracy", "--data", str(printed_dataset)])
    assert nothing.exit_code == 2 and "give --model DIR and/or --peer NAME" in nothing.output
    missing = runner.invoke(
        app, ["bench", "accuracy", "--peer", "tesseract", "--data", str(tmp_path / "nope")]
    )
    assert missing.exit_code == 2 and "dataset not found" in missing.output
    not_a_model = runner.invoke(
        app, ["bench", "accuracy", "--model", str(tmp_path), "--data", str(printed_dataset)]
    )
    assert not_a_model.exit_code == 2 and "quill-model.json is missing" in not_a_model.output


def test_accuracy_command_reports_unseen_writers_first(tiny_model: Path, tmp_path: Path) -> None:
    """Raw labels.tsv folders as shipped: two split by writer (one without test writers), one
    by page. Unseen writers lead the report, measured for every system on the same lines."""
    write_writer_folder(tmp_path / "copiste", writers_in("test", 2) + writers_in("train", 2))
    write_writer_folder(tmp_path / "mss19", writers_in("train", 2, "m") + writers_in("val", 1))
    _labelled_folder(tmp_path / "hooker", pages=30)
    args = ["bench", "accuracy", "--model", str(tiny_model), "--peer", "tesseract"]
    for name in ("copiste", "mss19", "hooker"):
        args += ["--data", f"{name}={tmp_path / name}"]
    args += ["--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "mss19: not scored" in result.output
    payload = json.loads((tmp_path / "out" / "accuracy.json").read_text())
    assert [d["name"] for d in payload["datasets"]] == ["unseen writers", "copiste", "hooker"]
    unseen, copiste = payload["datasets"][:2]
    assert payload["unseen_writers"] == ["copiste"] and unseen["samples"] == copiste["samples"]
    assert copiste["split_by"] == "writer" and copiste["vocabulary"] == "latin"
    assert payload["datasets"][2]["split_by"] == "group"
    assert [d["name"] for d in payload["empty_datasets"]] == ["mss19"]
    overall = {r["system"]: r for r in unseen["results"] if r["key"] == "all"}
    assert set(overall) == set(payload["systems"])  # Quill and every peer that ran
    for system, row in overall.items():
        alone = next(r for r in copiste["results"] if r["key"] == "all" and r["system"] == system)
        assert row["cer"] == alone["cer"] and row["n"] == alone["n"]
    assert unseen["writers"]["quill"]["writers"] == 2  # the two test hands of copiste
    assert "hooker" not in payload["datasets"][2].get("writers", {})  # one hand: no spread
    markdown = (tmp_path / "out" / "accuracy.md").read_text()
    assert "CER per writer" in markdown.split("## copiste")[0]  # in the unseen writers' section
    summary = markdown.split("## Summary")[1]
    assert summary.index("**unseen writers** (copiste)") < summary.index("| hooker |")
    assert "unseen writers (copiste)" in result.output


def test_speed_command_compares_runtimes_in_one_run(
    tiny_model: Path, printed_dataset: Path, tmp_path: Path
) -> None:
    args = ["bench", "speed", "--model", str(tiny_model), "--data", str(printed_dataset)]
    args += ["--kind", "line", "--batch", "1", "--batch", "4", "--variant", "eager"]
    args += ["--variant", "onnx", "--variant", "onnx-int8", "--inputs", "4", "--images", "4"]
    args += ["--warmup", "1", "--out", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "speed.json").read_text())
    rows = {(t["system"], t["batch"]) for t in payload["timings"]}
    assert rows == {(f"quill-{v}", b) for v in ("eager", "onnx", "onnx-int8") for b in (1, 4)}
    assert payload["machine"]["usable_cores"] >= 1 and payload["machine"]["cpu"]
    assert payload["int8"]["line"]["fp32"] == payload["accuracy_on_inputs"]["quill-onnx"]["line"]
    assert "vs quill-eager" in (tmp_path / "speed.md").read_text()
    assert "| line | 1 | 1 | quill-eager |" in result.output


def test_speed_command_times_whole_pages_beside_lines(
    tiny_model: Path, printed_dataset: Path, tmp_path: Path
) -> None:
    from .test_pages import PAGE_LINES, compose_page, write_pagexml

    pages = tmp_path / "pages"
    pages.mkdir()
    image, boxes = compose_page(PAGE_LINES)
    (pages / "letter.png").write_bytes(image)
    write_pagexml(pages, "letter", PAGE_LINES, boxes)
    args = ["bench", "speed", "--model", str(tiny_model), "--data", str(printed_dataset)]
    args += ["--kind", "line", "--batch", "1", "--variant", "onnx", "--pages", f"letters={pages}"]
    args += ["--inputs", "2", "--images", "2", "--warmup", "1", "--out", str(tmp_path / "out")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "out" / "speed.json").read_text())
    assert {(t["system"], t["kind"]) for t in payload["timings"]} == {
        ("quill-onnx", "line"),
        ("quill-onnx", "page"),
    }
    assert payload["inputs"]["page"] == 1 and payload["inputs"]["page_source"].startswith("letters")
    assert "whole pages from `letters" in (tmp_path / "out" / "speed.md").read_text()


def test_speed_command_rejects_unknown_variants(tiny_model: Path, printed_dataset) -> None:
    args = ["bench", "speed", "--model", str(tiny_model), "--data", str(printed_dataset)]
    result = runner.invoke(app, [*args, "--variant", "tensorrt"])
    assert result.exit_code == 2 and "unknown variant or kind: tensorrt" in result.output
