"""An int8 copy of a staged CTC model's graph, checked against the float one: the
``onnx-int8`` runtime (``quill model quantize DIR``).

Two kinds of int8 in one graph, each where it is fast on a CPU:

- **Convolutions: static int8**, calibrated. The samples are run through the float graph to
  fix each convolution's input and output scales; weights are int8 per output channel. ONNX
  Runtime fuses the quantise/convolve/dequantise steps into ``QLinearConv`` and runs the
  2x2 pools between them on uint8 (VNNI where the CPU has it). The first convolution of a
  greyscale model, one input channel, stays float: its int8 kernel took 5.2 ms against 0.9 ms
  for three Hooker-width lines. (Dynamic quantisation of convolutions, ``ConvInteger``, has
  no fast CPU kernel: it made a line model about 8x slower.)
- **Matrix products: dynamic int8** (MatMul/Gemm, LSTM, attention): int8 weights, inputs
  quantised on the fly, no calibration. The shipped default's BiLSTM, 61% of a line's
  network time in float32, runs in 0.41 of that time in int8.

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

import numpy as np
import onnx

from quill.errors import QuillError
from quill.model_files import ONNX_INT8_FILE
from quill.preprocess import ImageError, ImageSource
from quill.runtimes.backends import load_backend
from quill.staged_model import BackendFiles, ModelLoadError, StagedModel
from quill.staging.parity import check_parity, sample_inputs

#: Operators quantised dynamically, with no calibration (the module docstring says why).
DYNAMIC_OPS = ("MatMul", "Gemm", "LSTM", "Attention")
#: How the copy is described in the model's metadata and card.
QUANTIZATION = f"static int8 convolutions, dynamic int8 ({', '.join(DYNAMIC_OPS)})"
#: The most the int8 copy's readings of the samples may differ from the float graph's, as
#: CER with the float readings as reference. The default's first copy (matrix products only)
#: read 48 val lines 1.33% apart, and the Hooker specialist's 2.7% (refused). Real training
#: lines of four datasets are harder: on 64 of them (``--samples`` of each data folder) that
#: copy drifted 1.7% and the one with int8 convolutions 2.2%, so the default's was made with
#: ``--max-drift 0.025``; both read the held-out test lines within 0.1 point of float32.
MAX_DRIFT_CER = 0.02


class QuantizeError(QuillError, RuntimeError):
    """The model could not be quantised, or its copy reads too differently; the message
    says which."""

    code = "quantize_failed"


class Int8Drift(QuantizeError):
    """The int8 copy reads the samples too differently from the float graph."""

    code = "int8_drift"


def quantize_onnx(source: Path, target: Path, calibration: Sequence[np.ndarray]) -> None:
    """Write ``source`` (an ONNX CTC graph) to ``target`` with int8 convolutions, their scales
    calibrated on ``calibration`` (model inputs, (H, W) each), and int8 matrix products."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantisers log generic advice warnings on root
    try:
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".convolutions-") as scratch:
            convolutions = Path(scratch) / "convolutions.onnx"
            quantize_static(
                source,
                convolutions,
                _Calibration(calibration),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["Conv"],
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=_single_channel_convolutions(onnx.load(str(source))),
            )
            graph = onnx.load(str(convolutions))
            _keep_pools_blocked(graph)
            onnx.save(graph, str(convolutions))
            quantize_dynamic(
                convolutions,
                target,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=list(DYNAMIC_OPS),
            )
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises untyped errors
        raise QuantizeError(f"cannot quantise {source}: {exc}") from exc
    finally:
        root.setLevel(level)


class _Calibration:
    """The samples, one at a time, as the graph's inputs (images (1, 1, H, W), widths (1,)):
    what ``quantize_static`` runs to find each convolution's ranges."""

    def __init__(self, inputs: Sequence[np.ndarray]) -> None:
        self._inputs = iter(inputs)

    def get_next(self) -> dict[str, np.ndarray] | None:
        image = next(self._inputs, None)
        if image is None:
            return None
        return {
            "images": image[None, None].astype(np.float32),
            "widths": np.array([image.shape[1]], np.int64),
        }


def _single_channel_convolutions(model: onnx.ModelProto) -> list[str]:
    """Names of the convolutions reading one input channel (a greyscale image): kept float."""
    weights = {w.name: w.dims for w in model.graph.initializer}
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "Conv"
        and len(weights.get(node.input[1], ())) == 4
        and weights[node.input[1]][1] == 1
    ]


def _keep_pools_blocked(model: onnx.ModelProto) -> None:
    """Put a 1x1 identity convolution between each float pool and the quantisation of its
    output, in place.

    ONNX Runtime runs a float pool in its blocked (NCHWc) layout only when a blocked
    convolution reads its output; one that feeds the first quantised convolution falls back
    to the plain layout, 7.6 ms against 0.5 ms for three Hooker-width lines of the default,
    more than int8 saves. The identity costs 0.2 ms and changes no value.
    """
    graph = model.graph
    shapes = {
        info.name: [d.dim_value for d in info.type.tensor_type.shape.dim]
        for info in onnx.shape_inference.infer_shapes(model).graph.value_info
    }
    producers = {out: node for node in graph.node for out in node.output}
    nodes = list(graph.node)
    for quantize in [n for n in nodes if n.op_type == "QuantizeLinear"]:
        pool = producers.get(quantize.input[0])
        channels = shapes.get(quantize.input[0], [0, 0])[1]
        if pool is None or pool.op_type != "MaxPool" or channels <= 0:
            continue
        identity = f"{pool.name}/identity"
        weight = np.eye(channels, dtype=np.float32).reshape(channels, channels, 1, 1)
        graph.initializer.append(onnx.numpy_helper.from_array(weight, f"{identity}/weight"))
        convolution = onnx.helper.make_node(
            "Conv",
            [quantize.input[0], f"{identity}/weight"],
            [f"{identity}/output"],
            name=identity,
            kernel_shape=[1, 1],
        )
        quantize.input[0] = convolution.output[0]
        nodes.insert(nodes.index(quantize), convolution)
    graph.ClearField("node")
    graph.node.extend(nodes)


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
        quantize_onnx(source[0], scratch / ONNX_INT8_FILE, inputs)
        details = {
            "quantization": QUANTIZATION,
            "calibration_samples": len(inputs),
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
                f"from {source[0].name} (at most {max_drift * 100:g}%); nothing was written. "
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
