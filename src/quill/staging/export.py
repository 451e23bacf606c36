"""Export a rebuilt network to ONNX (the primary runtime) and TorchScript (compatibility).

A CTC model exports as ONE graph ``(images (B,1,H,W), widths (B,)) -> (log_probs (B,T,C),
lengths (B,))`` with a dynamic batch and width, so inference needs neither torch nor the
model's stride to find the valid frames. The TorchScript file wraps the same module, which
also lets the eager backend reload the exact weights (its ``state_dict`` keys are
``model.<key>``) without a training checkpoint.

A seq2seq model exports as two ONNX graphs, ``encoder.onnx`` and ``decoder_step.onnx`` (one
decoder step with its KV cache as tensors; inference loops over it in NumPy), and as the
scripted model itself, whose ``generate`` runs the cached greedy loop in TorchScript.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from quill.errors import QuillError

ONNX_FILE = "model.onnx"
TORCHSCRIPT_FILE = "model.pt"
ONNX_OPSET = 18
INPUT_NAMES = ("images", "widths")
OUTPUT_NAMES = ("log_probs", "lengths")


class ModelExportError(QuillError, RuntimeError):
    """An export failed; the message names the format and the model."""

    code = "model_export_failed"


class CTCExport(nn.Module):
    """The exported interface of a CTC model: images and true widths in, frames and lengths out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self, images: torch.Tensor, widths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        log_probs = self.model(images)  # (B, T, C)
        # lengths (B,); self.model: nn.Module, whose attributes torch types as Tensor | Module
        lengths = self.model.output_lengths(widths)  # type: ignore[operator]
        return log_probs, lengths


@dataclass
class ExportResult:
    """What one export wrote and how (recorded in ``quill-model.json``)."""

    backend: str
    files: list[str]
    details: dict[str, Any]


def export_interface(model: nn.Module) -> nn.Module:
    """The module every export traces, in eval mode: a CTC model behind :class:`CTCExport`;
    a seq2seq model as it is (TorchScript keeps its cached ``generate``)."""
    if model.family == "ctc":
        return CTCExport(model).eval()
    if model.family == "seq2seq":
        return model.eval()
    raise ModelExportError(f"cannot export a model of family {model.family!r}")


def ctc_example_inputs(height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of 2 (a batch of 1 would freeze the batch dimension) of unequal widths that are
    not round numbers (an exporter may specialise on a width it can factor)."""
    images = torch.rand(2, 1, height, 136)
    return images, torch.tensor([136, 96])


def export_onnx(module: nn.Module, example: torch.Tensor, out_dir: Path) -> ExportResult:
    """ONNX files of ``module`` (see :func:`export_interface`); ``example`` (2, 1, H, W)
    fixes the input height (and a paragraph model's canvas)."""
    if isinstance(module, CTCExport):
        return _export_ctc_onnx(module, example.shape[2], out_dir)
    return _export_seq2seq_onnx(module, example, out_dir)


def _export_seq2seq_onnx(model: nn.Module, example: torch.Tensor, out_dir: Path) -> ExportResult:
    """``encoder.onnx`` + ``decoder_step.onnx`` (one cached decoder step): exporting the whole
    greedy loop unrolled takes the exporter many minutes; two graphs take seconds."""
    from quill.models.onnx_export import export_seq2seq_onnx

    try:
        files = export_seq2seq_onnx(model, out_dir, example)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; name the step
        raise ModelExportError(
            f"ONNX export of the encoder and decoder step failed: {exc}"
        ) from exc
    names = sorted(p.name for p in files)
    return ExportResult("onnx", names, {"exporter": "dynamo", "graphs": "encoder + decoder_step"})


def _export_ctc_onnx(module: nn.Module, height: int, out_dir: Path) -> ExportResult:
    """Write ``model.onnx`` with dynamic batch and width.

    Which exporter handles which encoder differs (torch 2.13): the TorchScript-based one
    exports the BiLSTM in about a second as one file but bakes the sequence length into
    ``nn.MultiheadAttention``'s reshapes; the dynamo one handles attention but not an LSTM
    over a symbolic length. A model states its need with ``onnx_dynamo``; otherwise the
    TorchScript-based exporter goes first. The parity check catches a wrong but successful
    export (a frozen width decodes other widths differently).
    """
    path = out_dir / ONNX_FILE
    inputs = ctc_example_inputs(height)
    order = ["dynamo", "torchscript"]
    if not getattr(module.model, "onnx_dynamo", False):
        order.reverse()
    errors = []
    for exporter in order:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                _EXPORTERS[exporter](module, inputs, path)
        except Exception as exc:  # noqa: BLE001 - any tracing failure: try the other exporter
            errors.append(f"{exporter}: {exc}")
            continue
        files = sorted(p.name for p in out_dir.glob(f"{ONNX_FILE}*"))
        return ExportResult("onnx", files, {"exporter": exporter, "opset": ONNX_OPSET})
    raise ModelExportError("ONNX export failed with both exporters: " + "; ".join(errors))


def _export_torchscript_based(module: nn.Module, inputs: tuple, path: Path) -> None:
    torch.onnx.export(
        module,
        inputs,
        str(path),
        input_names=list(INPUT_NAMES),
        output_names=list(OUTPUT_NAMES),
        dynamic_axes={
            "images": {0: "batch", 3: "width"},
            "widths": {0: "batch"},
            "log_probs": {0: "batch", 1: "frames"},
            "lengths": {0: "batch"},
        },
        opset_version=ONNX_OPSET,
        dynamo=False,
    )


def _export_dynamo(module: nn.Module, inputs: tuple, path: Path) -> None:
    batch, width = torch.export.Dim("batch"), torch.export.Dim("width")
    torch.onnx.export(
        module,
        inputs,
        str(path),
        input_names=list(INPUT_NAMES),
        output_names=list(OUTPUT_NAMES),
        dynamic_shapes={"images": {0: batch, 3: width}, "widths": {0: batch}},
        opset_version=ONNX_OPSET,
        dynamo=True,
        verbose=False,
    )


_EXPORTERS = {"torchscript": _export_torchscript_based, "dynamo": _export_dynamo}


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
