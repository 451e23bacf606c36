"""CTCLineModel: CNN + BiLSTM (or Transformer encoder) + CTC, the fast line HTR baseline.

Shapes (defaults: height 64, four blocks, width reduced x4)::

    images (B, 1, 64, W)
      -> CNN (channels-last)    (B, C=128, 4, W/4)   height halved per block
      -> collapse height        (B, W/4, 512)        channels x rows become features
      -> linear projection      (B, W/4, 256)
      -> BiLSTM x2 | Transformer (B, W/4, 256)
      -> linear + log_softmax   (B, T=W/4, num_classes)   blank = 0

Forward has no data-dependent Python branching, so it exports to ONNX and TorchScript with a
dynamic batch and width. Padded columns are not masked (forward takes only images): the
padding is blank paper, which the model learns to read as blanks, so a batched line and the
same line alone give nearly (not bit-) identical outputs.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn

from quill.models.blocks import line_cnn, rows_after
from quill.models.config import ModelConfig
from quill.models.positional import PositionalEncoding1D


@dataclasses.dataclass(frozen=True)
class CTCLineConfig(ModelConfig):
    """Architecture of :class:`CTCLineModel` (defaults: ~1.0 M parameters, ~4 MB)."""

    #: Input height; must equal ``PreprocessConfig.height`` and be divisible by 2**blocks.
    height: int = 64
    #: Output channels of each CNN block (one block per entry; each halves the height).
    channels: tuple[int, ...] = (16, 32, 64, 128)
    convs_per_block: int = 1
    #: Blocks that also halve the width: frames T = W // 2**width_pool_blocks.
    width_pool_blocks: int = 2
    #: Sequence encoder over the frames.
    encoder: Literal["lstm", "transformer"] = "lstm"
    #: Feature size of the sequence encoder (BiLSTM: both directions together).
    hidden: int = 256
    layers: int = 2
    #: Transformer encoder only.
    heads: int = 4
    dropout: float = 0.2


class CTCLineModel(nn.Module):
    """Line image -> per-frame log-probabilities for CTC (see module docstring for shapes)."""

    family = "ctc"
    __jit_unused_properties__ = ["onnx_dynamo"]  # read by torch.jit.script

    def __init__(self, num_classes: int, config: CTCLineConfig | None = None):
        super().__init__()
        config = config or CTCLineConfig()
        rows = rows_after(config.height, len(config.channels))
        if config.encoder not in ("lstm", "transformer"):
            raise ValueError(f"encoder must be 'lstm' or 'transformer', got {config.encoder!r}")
        if config.hidden % 2:
            raise ValueError(f"hidden must be even (two LSTM directions), got {config.hidden}")
        self.config = config
        self.num_classes = num_classes
        self.stride = 2**config.width_pool_blocks
        self.cnn = line_cnn(config.channels, config.convs_per_block, config.width_pool_blocks)
        # torch's stubs omit Module.to(memory_format=), which it accepts.
        self.cnn.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.project = nn.Sequential(
            nn.Linear(config.channels[-1] * rows, config.hidden), nn.Dropout(config.dropout)
        )
        self.encoder: nn.Module
        if config.encoder == "lstm":
            self.encoder = _BiLSTM(config.hidden, config.layers, config.dropout)
        else:
            self.encoder = _TransformerEncoder(
                config.hidden, config.layers, config.heads, config.dropout
            )
        self.classifier = nn.Linear(config.hidden, num_classes)

    @property
    def onnx_dynamo(self) -> bool:
        """Whether torch's dynamo ONNX exporter handles this model (see ``onnx_export``)."""
        return self.config.encoder == "transformer"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # channels-last makes CPU max-pooling ~8x faster in eager mode (same values).
        features = self.cnn(images.contiguous(memory_format=torch.channels_last))  # (B, C, H', T)
        b, c, h, t = features.shape
        features = features.permute(0, 3, 1, 2).reshape(b, t, c * h)  # (B, T, C*H')
        encoded = self.encoder(self.project(features))  # (B, T, hidden)
        return self.classifier(encoded).log_softmax(dim=-1)  # (B, T, num_classes)

    @torch.jit.export
    def output_lengths(self, widths: torch.Tensor) -> torch.Tensor:
        """Valid frames for each true image width: exactly what forward gives a lone image."""
        return torch.div(widths, self.stride, rounding_mode="floor")


class _BiLSTM(nn.Module):
    def __init__(self, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.lstm = nn.LSTM(
            hidden,
            hidden // 2,
            num_layers=layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if layers > 1 else 0.0,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0]  # (B, T, hidden)


class _TransformerEncoder(nn.Module):
    def __init__(self, hidden: int, layers: int, heads: int, dropout: float):
        super().__init__()
        self.position = PositionalEncoding1D(hidden)
        layer = nn.TransformerEncoderLayer(
            hidden, heads, 4 * hidden, dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.position(x))  # (B, T, hidden)
