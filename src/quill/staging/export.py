"""Write a rebuilt network's exports into a staged folder: ONNX (the primary runtime) and
TorchScript (compatibility, and the weights the eager runtime and fine-tuning reload).

The graphs themselves come from the one exporter, :mod:`quill.models.onnx_export`: a CTC
model as ONE graph ``(images (B,1,H,W), widths (B,)) -> (log_probs (B,T,C), lengths (B,))``
with a dynamic batch and width; a seq2seq model as ``encoder.onnx`` and ``decoder_step.onnx``
(one decoder step with its KV cache as tensors; inference loops over it in NumPy). The
TorchScript file scripts the same module (:func:`~quill.models.onnx_export.export_interface`),
so its ``state_dict`` keys are ``model.<key>`` for a CTC model, and a seq2seq model keeps its
cached ``generate``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from quill.model_files import ONNX_FILE, TORCHSCRIPT_FILE
from quill.models.onnx_export import (
    ONNX_OPSET,
    CTCExport,
    ModelExportError,
    export_ctc_onnx,
    export_seq2seq_onnx,
)
from quill.staged_model import BackendFiles


@dataclass
class ExportResult:
    """What one export wrote and how (recorded in ``quill-model.json``)."""

    backend: str
    files: list[str]
    details: dict[str, Any]

    def backend_files(self) -> BackendFiles:
        return BackendFiles(tuple(self.files), dict(self.details))


def export_onnx(module: nn.Module, example: torch.Tensor, out_dir: Path) -> ExportResult:
    """ONNX files of ``module`` (an :func:`~quill.models.onnx_export.export_interface`);
    ``example`` (2, 1, H, W) fixes the input height (and a paragraph model's canvas)."""
    if isinstance(module, CTCExport):
        written = export_ctc_onnx(module, out_dir / ONNX_FILE, example.shape[2])
        files = sorted(p.name for p in written.files)
        return ExportResult("onnx", files, {"exporter": written.exporter, "opset": ONNX_OPSET})
    return _export_seq2seq_onnx(module, example, out_dir)


def _export_seq2seq_onnx(model: nn.Module, example: torch.Tensor, out_dir: Path) -> ExportResult:
    """``encoder.onnx`` + ``decoder_step.onnx`` (one cached decoder step): exporting the whole
    greedy loop unrolled takes the exporter many minutes; two graphs take seconds."""
    try:
        files = export_seq2seq_onnx(model, out_dir, example)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; name the step
        raise ModelExportError(
            f"ONNX export of the encoder and decoder step failed: {exc}"
        ) from exc
    names = sorted(p.name for p in files)
    return ExportResult("onnx", names, {"exporter": "dynamo", "graphs": "encoder + decoder_step"})


def export_torchscript(module: nn.Module, out_dir: Path) -> ExportResult:
    """Write ``model.pt``: the scripted interface (scripting keeps shapes dynamic)."""
    path = out_dir / TORCHSCRIPT_FILE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scripted = torch.jit.script(module)
            scripted.save(str(path))
    except Exception as exc:  # noqa: BLE001 - TorchScript raises many types; name the step
        raise ModelExportError(f"TorchScript export failed: {exc}") from exc
    return ExportResult("torchscript", [TORCHSCRIPT_FILE], {"method": "script"})
