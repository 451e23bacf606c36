"""ONNX export: CTC models as one graph, seq2seq models as an encoder + a decoder-step graph.

CTC: input ``images`` (B, 1, H, W) -> ``log_probs`` (B, T, C), batch and width dynamic. Which
exporter works depends on the encoder, checked with torch 2.13: the dynamo exporter
(torch's default) cannot decompose an LSTM over a symbolic sequence length, and the
TorchScript-based exporter bakes the sequence length into the reshapes of
``nn.MultiheadAttention``. So the BiLSTM model uses ``dynamo=False`` and the Transformer
encoder ``dynamo=True``; both are checked against eager in ``tests/models``.

Seq2seq: exporting an unrolled generation loop takes the exporter many minutes, so the loop
stays in the runtime (:func:`quill.models.decoding.seq2seq_greedy_decode`, NumPy) and two
graphs are exported: ``encoder.onnx`` (images -> the decoder's cross-attention keys/values)
and ``decoder_step.onnx`` (one token + the KV cache -> logits + the extended cache).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import cast

import torch
from torch import nn

from quill.models.seq2seq import Seq2SeqModel
from quill.models.transformer_decoder import DecoderCache

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


ENCODER_FILE = "encoder.onnx"
STEP_FILE = "decoder_step.onnx"
STEP_INPUTS = ("tokens", "self_keys", "self_values", "cross_keys", "cross_values")
STEP_OUTPUTS = ("logits", "new_self_keys", "new_self_values")


class _EncoderGraph(nn.Module):
    """images (B, 1, H, W) -> cross_keys, cross_values (layers, B, heads, S, head_dim)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = cast(Seq2SeqModel, model)  # export_seq2seq_onnx takes seq2seq models

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cache = self.model.decoder.init_cache(self.model.encode(images))
        return cache.cross_keys, cache.cross_values


class _StepGraph(nn.Module):
    """One cached decoder step with the cache as four plain tensors."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.decoder = cast(Seq2SeqModel, model).decoder

    def forward(
        self,
        tokens: torch.Tensor,
        self_keys: torch.Tensor,
        self_values: torch.Tensor,
        cross_keys: torch.Tensor,
        cross_values: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cache = DecoderCache(self_keys, self_values, cross_keys, cross_values)
        logits, cache = self.decoder.step(tokens, cache)
        return logits, cache.self_keys, cache.self_values


def export_seq2seq_onnx(
    model: nn.Module, directory: str | Path, example_images: torch.Tensor, optimize: bool = True
) -> list[Path]:
    """Write ``encoder.onnx`` and ``decoder_step.onnx`` for a seq2seq model into ``directory``.

    ``example_images`` (B >= 2, 1, H, W) fixes nothing but the channel count and, for a
    paragraph model, the canvas (batch, width and memory length are dynamic). Returns the
    files written, ``.onnx.data`` weight files included.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if example_images.shape[0] < 2:
        raise ValueError("export with a batch of at least 2, or the batch size is frozen to 1")
    was_training = model.training
    model.eval()
    batch, width = torch.export.Dim("batch"), torch.export.Dim("width")
    past, memory = torch.export.Dim("past"), torch.export.Dim("memory")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            encoder = _EncoderGraph(model)
            cross_keys, cross_values = encoder(example_images)
            torch.onnx.export(
                encoder,
                (example_images,),
                str(directory / ENCODER_FILE),
                dynamo=True,
                optimize=optimize,
                input_names=["images"],
                output_names=["cross_keys", "cross_values"],
                dynamic_shapes={"images": {0: batch, 3: width}},
                verbose=False,
            )
            layers, b, heads, _, head_dim = cross_keys.shape
            # A non-empty past (3 steps) so the exporter keeps its length symbolic.
            self_cache = torch.zeros(layers, b, heads, 3, head_dim)
            tokens = torch.full((b, 1), 3, dtype=torch.long)
            cache_shape = {1: batch, 3: past}
            torch.onnx.export(
                _StepGraph(model),
                (tokens, self_cache, self_cache.clone(), cross_keys, cross_values),
                str(directory / STEP_FILE),
                dynamo=True,
                optimize=optimize,
                input_names=list(STEP_INPUTS),
                output_names=list(STEP_OUTPUTS),
                dynamic_shapes={
                    "tokens": {0: batch},
                    "self_keys": cache_shape,
                    "self_values": cache_shape,
                    "cross_keys": {1: batch, 3: memory},
                    "cross_values": {1: batch, 3: memory},
                },
                verbose=False,
            )
    finally:
        model.train(was_training)
    names = (ENCODER_FILE, ENCODER_FILE + ".data", STEP_FILE, STEP_FILE + ".data")
    return [directory / n for n in names if (directory / n).exists()]
