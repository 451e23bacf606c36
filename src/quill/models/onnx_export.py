"""ONNX export of the CTC line models with a dynamic batch and width.

Which exporter works depends on the encoder, checked with torch 2.13: the dynamo exporter
(torch's default) cannot decompose an LSTM over a symbolic sequence length, and the
TorchScript-based exporter bakes the sequence length into the reshapes of
``nn.MultiheadAttention``. So the BiLSTM model uses ``dynamo=False`` and the Transformer
encoder ``dynamo=True``; both are checked against eager in ``tests/models``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

INPUT_NAME = "images"
OUTPUT_NAME = "log_probs"


def export_ctc_onnx(model: nn.Module, path: str | Path, height: int, opset: int = 18) -> list[Path]:
    """Write ``model`` (a CTC-family model) to ``path``: input ``images`` (B, 1, height, W),
    output ``log_probs`` (B, T, C), batch and width dynamic.

    Returns the files written: the dynamo exporter may add ``<path>.data`` with the weights,
    which must be shipped beside the ``.onnx`` file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Batch 2 and a width that is not a round number, or the exporter may freeze them.
    example = (torch.rand(2, 1, height, 136),)
    was_training = model.training
    model.eval()
    use_dynamo = bool(getattr(model, "onnx_dynamo", True))
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            if use_dynamo:
                batch, width = torch.export.Dim("batch"), torch.export.Dim("width")
                torch.onnx.export(
                    model,
                    example,
                    str(path),
                    dynamo=True,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_shapes={INPUT_NAME: {0: batch, 3: width}},
                    opset_version=opset,
                    verbose=False,
                )
            else:
                torch.onnx.export(
                    model,
                    example,
                    str(path),
                    dynamo=False,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={
                        INPUT_NAME: {0: "batch", 3: "width"},
                        OUTPUT_NAME: {0: "batch", 1: "frames"},
                    },
                    opset_version=opset,
                )
    finally:
        model.train(was_training)
    return [p for p in (path, path.with_name(path.name + ".data")) if p.exists()]
