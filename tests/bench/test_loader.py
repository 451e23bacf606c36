"""``quill bench data`` end to end through the real ``quill`` command, on a tiny dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from quill.cli import app

from .conftest import write_printed_dataset

runner = CliRunner()
TINY_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"


@pytest.fixture
def data_config(tmp_path: Path) -> Path:
    """tiny.yaml on 4 printed training lines, augmentation on, 2 lines a batch."""
    write_printed_dataset(tmp_path / "lines", split="train")
    config = {
        "extends": str(TINY_CONFIG),
        "data": {
            "sources": [{"path": str(tmp_path / "lines"), "name": "printed"}],
            "batch_size": 2,
            "augment": True,
        },
    }
    path = tmp_path / "bench-data.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_bench_data_measures_every_mode_with_and_without_augmentation(
    data_config: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    args = ["bench", "data", "--config", str(data_config), "--workers", "0", "--batches", "2"]
    args += ["--out", str(out)]  # default modes: per-sample and cached (+ GPU with CUDA)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"wrote {out / 'data.json'}" in result.output.replace("\n", "")
    payload = json.loads((out / "data.json").read_text())
    assert payload["config"] == str(data_config) and payload["machine"]
    rows = {(row["mode"], row["augment"]): row for row in payload["rows"]}
    modes = ["per-sample", "cached"] + (
        ["cached, GPU augment"] if torch.cuda.is_available() else []
    )
    assert set(rows) == {(m, a) for m in modes for a in (True, False)}
    for row in rows.values():
        assert row["workers"] == 0 and row["samples"] == 4  # 2 timed batches of 2
        assert row["wall_s"] > 0 and row["cpu_s"] >= 0
        assert row["samples_per_s"] > 0 and row["samples_per_cpu_s"] > 0
        assert row["samples_per_s_per_worker"] == row["samples_per_s"]  # 0 workers count as 1
    markdown = (out / "data.md").read_text()
    assert (
        "| loading | augment | workers | samples/s | per worker | per CPU-s | vs per-sample |"
        in (markdown)
    )
    table = [line for line in markdown.splitlines() if line.startswith("| per-sample |")]
    assert len(table) == 2 and all(line.endswith("| 1.0x |") for line in table)
    cached = [line for line in markdown.splitlines() if line.startswith("| cached |")]
    assert len(cached) == 2 and all(line.endswith("x |") for line in cached)
    # the ink cache was built where a training run would find it
    assert list((tmp_path / "lines" / ".ink-cache").glob("lines-*.npy"))


def test_bench_data_refuses_unknown_modes_and_bad_worker_counts(
    data_config: Path, tmp_path: Path
) -> None:
    base = ["bench", "data", "--config", str(data_config), "--out", str(tmp_path / "out")]
    bad_mode = runner.invoke(app, [*base, "--mode", "turbo"])
    assert bad_mode.exit_code == 2
    assert "modes must be among" in bad_mode.output and "per-sample" in bad_mode.output
    bad_workers = runner.invoke(app, [*base, "--workers", "two"])
    assert bad_workers.exit_code == 2 and "error" in bad_workers.output
    missing = runner.invoke(app, ["bench", "data", "--config", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "error" in missing.output
    assert not (tmp_path / "out").exists()
