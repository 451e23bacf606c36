"""ONNX export, the one exporter: CTC models as one graph, seq2seq models as an encoder + a
decoder-step graph. Staging (``quill.staging.export``) and model measurements call it.

CTC: :func:`export_interface` wraps a network as :class:`CTCExport`, ``(images (B,1,H,W),
widths (B,)) -> (log_probs (B,T,C), lengths (B,))``, what a staged model ships, so inference
needs neither torch nor the model's stride to find the valid frames; the bare network exports
as ``images -> log_probs``. Batch and width are dynamic. Which of torch's exporters works
depends on the encoder, checked with torch 2.13: the dynamo exporter cannot decompose an LSTM
over a symbolic sequence length, and the TorchScript-based exporter bakes the sequence length
into the reshapes of ``nn.MultiheadAttention``. A model states its need with ``onnx_dynamo``
(the BiLSTM model: False, the Transformer encoder: True); one that does not say gets the
TorchScript-based exporter first (about a second, one file). If the first exporter fails,
the other is tried; staging's parity check catches a wrong but successful export (a frozen
width decodes other widths differently).

Seq2seq: exporting an unrolled generation loop takes the exporter many minutes, so the loop
stays in the runtime (:func:`quill.models.decoding.seq2seq_greedy_decode`, NumPy) and two
graphs are exported: ``encoder.onnx`` (images -> the decoder's cross-attention keys/values)
and ``decoder_step.onnx`` (one token + the KV cache -> logits + the extended cache).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from quill.errors import QuillError
from quill.model_files import DECODER_STEP_FILE, ENCODER_FILE
from quill.models.seq2seq import Seq2SeqModel
from quill.models.transformer_decoder import DecoderCache

ONNX_OPSET = 18
#: The exported CTC interface's inputs and outputs (the bare network: the first of each).
INPUT_NAMES = ("images", "widths")
OUTPUT_NAMES = ("log_probs", "lengths")
INPUT_NAME, OUTPUT_NAME = INPUT_NAMES[0], OUTPUT_NAMES[0]


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


def export_interface(model: nn.Module) -> nn.Module:
    """The module every export of a staged model traces, in eval mode: a CTC model behind
    :class:`CTCExport`; a seq2seq model as it is (TorchScript keeps its cached ``generate``)."""
    if model.family == "ctc":
        return CTCExport(model).eval()
    if model.family == "seq2seq":
        return model.eval()
    raise ModelExportError(f"cannot export a model of family {model.family!r}")


@dataclass
class OnnxExport:
    """The files one ONNX export wrote (weights may add ``<file>.data``) and the exporter."""

    files: list[Path]
    exporter: str


def ctc_example_inputs(height: int, widths: bool = True) -> tuple[torch.Tensor, ...]:
    """A batch of 2 (a batch of 1 would freeze the batch dimension) of unequal widths that are
    not round numbers (an exporter may specialise on a width it can factor); with ``widths``
    the true widths too, as :class:`CTCExport` takes them."""
    images = torch.rand(2, 1, height, 136)
    return (images, torch.tensor([136, 96])) if widths else (images,)


def export_ctc_onnx(
    model: nn.Module, path: str | Path, height: int, opset: int = ONNX_OPSET
) -> OnnxExport:
    """Write ``model`` to ``path``: a :class:`CTCExport` as ``(images, widths) -> (log_probs,
    lengths)``, a bare CTC network as ``images (B, 1, height, W) -> log_probs (B, T, C)``,
    batch and width dynamic. Raises :class:`ModelExportError` if both exporters fail.

    The dynamo exporter may add ``<path>.data`` with the weights, which must be shipped beside
    the ``.onnx`` file: it is in the returned files.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    interface = isinstance(model, CTCExport)
    network = model.model if isinstance(model, CTCExport) else model
    inputs = ctc_example_inputs(height, widths=interface)
    order = ["torchscript", "dynamo"]
    if getattr(network, "onnx_dynamo", False):
        order.reverse()
    was_training = model.training
    model.eval()
    errors = []
    try:
        for exporter in order:
            try:
                with warnings.catch_warnings(), torch.no_grad():
                    warnings.simplefilter("ignore")
                    _export_graph(model, inputs, path, opset, exporter)
            except Exception as exc:  # noqa: BLE001 - any tracing failure: try the other one
                errors.append(f"{exporter}: {exc}")
                continue
            written = [p for p in (path, path.with_name(path.name + ".data")) if p.exists()]
            return OnnxExport(written, exporter)
    finally:
        model.train(was_training)
    raise ModelExportError("ONNX export failed with both exporters: " + "; ".join(errors))


def _export_graph(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path, opset: int, exporter: str
) -> None:
    """``torch.onnx.export`` with batch and width dynamic, by the TorchScript-based exporter
    (``dynamic_axes``) or the dynamo one (``dynamic_shapes``)."""
    input_names = list(INPUT_NAMES[: len(inputs)])
    output_names = list(OUTPUT_NAMES[: len(inputs)])
    dynamic: dict[str, Any]
    if exporter == "dynamo":
        batch, width = torch.export.Dim("batch"), torch.export.Dim("width")
        shapes = {"images": {0: batch, 3: width}, "widths": {0: batch}}
        dynamic = {"dynamic_shapes": {n: shapes[n] for n in input_names}, "verbose": False}
    else:
        axes = {
            "images": {0: "batch", 3: "width"},
            "widths": {0: "batch"},
            "log_probs": {0: "batch", 1: "frames"},
            "lengths": {0: "batch"},
        }
        dynamic = {"dynamic_axes": {n: axes[n] for n in input_names + output_names}}
    torch.onnx.export(
        model,
        inputs,
        str(path),
        input_names=input_names,
        output_names=output_names,
        opset_version=opset,
        dynamo=exporter == "dynamo",
        **dynamic,
    )


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
                str(directory / DECODER_STEP_FILE),
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
    names = (ENCODER_FILE, ENCODER_FILE + ".data", DECODER_STEP_FILE, DECODER_STEP_FILE + ".data")
    return [directory / n for n in names if (directory / n).exists()]
