"""An int8 copy of a staged CTC model's graph, checked against the float one: the
``onnx-int8`` runtime (``quill model quantize DIR``).

ONNX Runtime's dynamic quantisation stores the weights of the matrix products (MatMul/Gemm,
LSTM, attention) as int8 and quantises their inputs on the fly, with no calibration data.
The convolutions stay float32: ONNX Runtime's ``ConvInteger`` has no fast CPU kernel, and
quantising them made a CTC line model about 8x *slower* here. The shipped default's
BiLSTM, 61% of a line's network time in float32, runs in 0.41 of that time in int8.

An int8 graph reads almost, not exactly, as the float one does, so staging's rule (every
text identical) cannot be its check. Instead the copy reads the parity samples and its
readings are scored against the float graph's, as CER: above :data:`MAX_DRIFT_CER` nothing is
written. The model's version changes (it hashes the int8 file too), and ``auto`` serves with
the copy wherever it is measured faster than the float graph.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from quill.errors import QuillError
from quill.model_files import ONNX_INT8_FILE
from quill.preprocess import ImageError, ImageSource
from quill.runtimes.backends import load_backend
from quill.staged_model import BackendFiles, ModelLoadError, StagedModel
from quill.staging.parity import check_parity, sample_inputs

#: Operators quantised (see the module docstring for why convolutions are not).
QUANTIZED_OPS = ("MatMul", "Gemm", "LSTM", "Attention")
#: The most the int8 copy's readings of the samples may differ from the float graph's, as
#: CER with the float readings as reference. The default's copy read 48 val lines 1.33%
#: apart (and the held-out test lines within 0.3 points of float32); the Hooker specialist's
#: read them 2.7% apart and was refused.
MAX_DRIFT_CER = 0.02


class QuantizeError(QuillError, RuntimeError):
    """The model could not be quantised, or its copy reads too differently; the message
    says which."""

    code = "quantize_failed"


class Int8Drift(QuantizeError):
    """The int8 copy reads the samples too differently from the float graph."""

    code = "int8_drift"


def quantize_onnx(source: Path, target: Path) -> None:
    """Write ``source`` (an ONNX graph) with int8 matrix products to ``target``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs a generic advice warning on root
    try:
        quantize_dynamic(
            source, target, weight_type=QuantType.QInt8, op_types_to_quantize=list(QUANTIZED_OPS)
        )
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises untyped errors
        raise QuantizeError(f"cannot quantise {source}: {exc}") from exc
    finally:
        root.setLevel(level)


def add_int8(
    model_dir: Path, samples: Sequence[ImageSource] = (), max_drift: float = MAX_DRIFT_CER
) -> StagedModel:
    """Give the staged CTC model in ``model_dir`` its int8 copy (``model-int8.onnx``), checked
    on ``samples`` (default: staging's rendered sentences) to read them at most ``max_drift``
    apart from the float graph, and return the model as saved: with the ``onnx-int8``
    backend, its check in ``parity``, and a new version.

    Raises :class:`QuantizeError` (the folder unchanged) for a model that is not CTC, that has
    no ONNX graph or a sample that cannot be read, :class:`Int8Drift` when the copy reads the
    samples more than ``max_drift`` apart.
    """
    try:
        model = StagedModel.load(model_dir)
    except ModelLoadError as exc:
        raise QuantizeError(str(exc)) from exc
    if model.family != "ctc":
        raise QuantizeError(f"{model_dir} is a {model.family} model; only CTC models have int8")
    source = model.files_of("onnx")
    if not source or not source[0].is_file():
        raise QuantizeError(f"{model_dir} has no ONNX graph to quantise")
    try:  # read before quantising: an unreadable sample costs nothing and leaves no scratch
        inputs = sample_inputs(model.preprocess, samples)
    except ImageError as exc:
        raise QuantizeError(f"a sample to check the int8 copy on: {exc}") from exc
    scratch = Path(tempfile.mkdtemp(dir=model.path, prefix=".int8-"))
    try:
        quantize_onnx(source[0], scratch / ONNX_INT8_FILE)
        details = {
            "quantization": f"dynamic int8 ({', '.join(QUANTIZED_OPS)})",
            "quantized_from": source[0].name,
        }
        trial = dataclasses.replace(
            model,
            backends={
                **model.backends,
                "onnx-int8": BackendFiles((f"{scratch.name}/{ONNX_INT8_FILE}",), details),
            },
        )
        reference = load_backend("onnx", model, threads=1)
        report = check_parity(
            reference, {"onnx-int8": load_backend("onnx-int8", trial, 1)}, inputs, model.tokenizer
        )
        result = report.backends[0]
        if result.drift_cer > max_drift:
            raise Int8Drift(
                f"the int8 copy reads the {len(inputs)} samples {result.drift_cer:.1%} apart "
                f"from {source[0].name} (at most {max_drift:.0%}); nothing was written. "
                "First differences: "
                + "; ".join(f"{m['eager']!r} vs {m['export']!r}" for m in result.mismatches[:3])
            )
        os.replace(scratch / ONNX_INT8_FILE, model.path / ONNX_INT8_FILE)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    checked = {
        **report.to_dict()["backends"]["onnx-int8"],
        "passed": True,  # within max_drift: not identical, which is an exact export's test
        "max_drift_cer": max_drift,
        "reference": "onnx",
        "reference_median_ms": round(report.eager_median_ms, 3),
    }
    parity = dict(model.parity or {"samples": 0, "eager_median_ms": 0.0, "backends": {}})
    parity["backends"] = {**parity.get("backends", {}), "onnx-int8": checked}
    updated = dataclasses.replace(
        model,
        backends={**model.backends, "onnx-int8": BackendFiles((ONNX_INT8_FILE,), details)},
        parity=parity,
    )
    updated = dataclasses.replace(updated, version=updated.content_version())
    updated.save()
    return updated
