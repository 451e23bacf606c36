"""The shipped default's int8 copy, what `auto` serves where it is faster: the file its version
hashes, and real lines read as the float graph reads them, within the drift staging allows."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from quill.evaluation import corpus_cer
from quill.inference.recognizer import Recognizer
from quill.model_files import ONNX_INT8_FILE
from quill.staged_model import StagedModel
from quill.staging.quantize import MAX_DRIFT_CER

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "models" / "default"
SHARED = REPO.parent / "shared" / "datasets"


def test_the_version_covers_the_int8_copy() -> None:
    model = StagedModel.load(DEFAULT)
    assert model.files_of("onnx-int8") == [DEFAULT / ONNX_INT8_FILE]
    assert model.content_version() == model.version
    check = model.parity["backends"]["onnx-int8"]
    # quantised with --max-drift 0.025 (hard training lines; quill.staging.quantize)
    assert check["drift_cer"] <= check["max_drift_cer"] <= 1.25 * MAX_DRIFT_CER


def test_int8_reads_real_lines_as_float32_does_within_the_allowed_drift() -> None:
    labels = SHARED / "copiste" / "labels.tsv"
    if not labels.is_file():
        pytest.skip(f"the shared datasets are not at {SHARED}")
    with labels.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))[::61][:16]
    images = [str(labels.parent / row["file"]) for row in rows]
    truth = [row["text"] for row in rows]
    read = {
        backend: [
            p.text
            for p in Recognizer.from_path(DEFAULT, backend=backend, threads=1).predict(
                images, kind="line"
            )
        ]
        for backend in ("onnx", "onnx-int8")
    }
    assert corpus_cer(read["onnx-int8"], read["onnx"]) <= 2 * MAX_DRIFT_CER
    assert abs(corpus_cer(read["onnx-int8"], truth) - corpus_cer(read["onnx"], truth)) < 0.02
