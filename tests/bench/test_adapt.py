"""``quill bench adapt``: each writer of a split adapted on their first lines and read on the
rest, before and after, on a real staged model and a dataset in Quill's own format."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from quill.bench.adapt import writers_of
from quill.cli import app
from quill.data.manifest import Manifest, Sample, file_sha256
from quill.staging.parity import render_line
from quill.staging.smoke import on_noisy_paper

#: Writer -> the word all their lines show (the smoke model reads "Kew", never "wink").
WRITERS = {"alice": "wink", "bert": "Kew"}


def _dataset(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    samples = []
    for writer, word in WRITERS.items():
        for index in range(6):
            image = root / "images" / f"{writer}_{index}.png"
            on_noisy_paper(render_line(word), seed=index).save(image)
            meta = {"writer": writer}
            samples.append(
                Sample(
                    image.relative_to(root).as_posix(),
                    word,
                    "test",
                    "t",
                    file_sha256(image),
                    writer,
                    meta=meta,
                )
            )
    samples.append(
        Sample("images/alice_0.png", "wink", "train", "t", "x", "carol", meta={"writer": "carol"})
    )
    Manifest(root, samples).save()
    return root


def test_each_writer_is_read_before_and_after_adapting(smoke_model: Path, tmp_path: Path) -> None:
    data = _dataset(tmp_path / "hands")
    assert sorted(writers_of(data, "test")) == ["alice", "bert"]  # carol is a train writer
    out = tmp_path / "results"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "adapt",
            "--data",
            f"hands={data}",
            "--model",
            str(smoke_model),
            "--lines",
            "3",
            "--steps",
            "60",
            "--learning-rate",
            "3e-3",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "adapt.json").read_text())
    gains = {row["writer"]: row for row in report["writers"]}
    assert sorted(gains) == ["alice", "bert"]
    assert all(row["adapted_lines"] == 3 and row["read_lines"] == 3 for row in gains.values())
    alice = gains["alice"]
    assert alice["characters"] == 3 * len("wink")
    assert alice["errors_before"] > 0 and alice["errors_after"] == 0
    assert "| hands | 2 | 6 | 6 |" in (out / "adapt.md").read_text()


def test_a_split_without_writers_is_a_clear_error(smoke_model: Path, tmp_path: Path) -> None:
    data = _dataset(tmp_path / "hands")
    result = CliRunner().invoke(
        app, ["bench", "adapt", "--data", str(data), "--model", str(smoke_model), "--split", "val"]
    )
    assert result.exit_code == 2
    assert "no writer with 6+ lines in the val split" in result.output


def test_read_from_keeps_writers_with_enough_lines_to_read(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "hands")  # six lines a writer
    command = ["bench", "adapt", "--data", f"hands={data}", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, [*command, "--read-from", "4"])
    assert result.exit_code == 2 and "no writer with 7+ lines" in result.output
    result = CliRunner().invoke(app, [*command, "--read-from", "2"])
    assert result.exit_code == 2 and "0, or at least 3" in " ".join(result.output.split())
