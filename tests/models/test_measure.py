"""``python -m quill.models.measure`` (docs/models.md: sizes and CPU latency for choosing an
architecture) runs and reports each variant of the models it is asked for."""

from __future__ import annotations

import subprocess
import sys


def test_measure_reports_every_variant_of_a_ctc_and_a_seq2seq_model() -> None:
    command = [
        sys.executable, "-m", "quill.models.measure", "--models", "ctc_line",
        "line_cnn_transformer", "--threads", "1", "--repeats", "2", "--line-width", "96",
        "--tokens", "3",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("│")]
    cells = [[cell.strip() for cell in row.strip("│").split("│")] for row in rows]
    assert [(c[0], c[3], c[4], c[5]) for c in cells] == [
        ("ctc_line", "64x96", "1", "eager"),
        ("ctc_line", "64x96", "1", "onnxruntime"),
        ("line_cnn_transformer", "64x96", "1", "encode+3 cached"),
        ("line_cnn_transformer", "64x96", "1", "encode+3 uncached"),
    ]
    assert all(float(c[6]) > 0 and float(c[7]) >= float(c[6]) for c in cells)  # p90 >= p50
