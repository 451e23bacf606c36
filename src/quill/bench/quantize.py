"""An int8 copy of a staged model: ONNX Runtime dynamic quantisation of its ``model.onnx``.

Dynamic quantisation stores weights as int8 and quantises activations on the fly, with no
calibration data. Only the matrix products (MatMul/Gemm, LSTM, attention) are quantised:
ONNX Runtime's ``ConvInteger`` has no fast CPU kernel, and quantising the convolutions made
a CTC line model about 8x *slower* than float32 here, while the matrix products gain.

The copy is a complete staged model directory (metadata saying what was done, ONNX only),
so the benchmark runs it through the same ``Recognizer`` as every other backend.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

from quill.errors import QuillError
from quill.model_files import ONNX_FILE
from quill.staged_model import BackendFiles, ModelLoadError, StagedModel

#: Operators quantised (see module docstring for why convolutions are not).
QUANTIZED_OPS = ("MatMul", "Gemm", "LSTM", "Attention")


class QuantizeError(QuillError, RuntimeError):
    """The model could not be quantised; the message names the file."""

    code = "quantize_failed"


def quantize_staged(model_dir: Path, out_dir: Path) -> Path:
    """Write an int8 staged copy of ``model_dir`` into ``out_dir`` and return ``out_dir``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = model_dir / ONNX_FILE
    if not source.is_file():
        raise QuantizeError(f"{model_dir} has no {ONNX_FILE} to quantise")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / ONNX_FILE
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs a generic advice warning on root
    try:
        quantize_dynamic(
            source,
            target,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(QUANTIZED_OPS),
        )
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises untyped errors
        raise QuantizeError(f"cannot quantise {source}: {exc}") from exc
    finally:
        root.setLevel(level)
    try:
        model = StagedModel.load(model_dir)
    except ModelLoadError as exc:
        raise QuantizeError(str(exc)) from exc
    for lm_file in model.decoding.files() if model.decoding else []:
        # the copy decodes like the original: same language models
        shutil.copyfile(model_dir / lm_file, out_dir / lm_file)
    quantized = BackendFiles(
        (ONNX_FILE,),
        {
            "quantization": f"dynamic int8 ({', '.join(QUANTIZED_OPS)})",
            "quantized_from": str(source),
        },
    )
    copy = dataclasses.replace(
        model, path=out_dir, version=f"{model.version}-int8", backends={"onnx": quantized}
    )
    copy.save()
    return out_dir
