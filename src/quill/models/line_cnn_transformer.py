"""LineCNNTransformer: the reference line model, a CNN line encoder + Transformer decoder.

Shapes (defaults)::

    images (B, 1, 64, W)
      -> CNN (channels-last)        (B, 128, 4, W/8)   width reduced x8
      -> collapse height, project   (B, S=W/8, dim)
      -> + 1-D sinusoidal positions memory (B, S, dim)
    decoder_input (B, L) [BOS, y1, ...] -> TransformerDecoder(memory) -> logits (B, L, C)

Compared with the reference: the width is reduced x8 rather than read through overlapping
windows (fewer memory positions, cheaper cross-attention), and decoding uses the KV cache.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from quill.models.blocks import line_cnn, rows_after
from quill.models.positional import PositionalEncoding1D
from quill.models.seq2seq import Seq2SeqConfig, Seq2SeqModel


@dataclasses.dataclass(frozen=True)
class LineCNNTransformerConfig(Seq2SeqConfig):
    """Architecture of :class:`LineCNNTransformer` (defaults: ~3.5 M parameters)."""

    height: int = 64
    channels: tuple[int, ...] = (16, 32, 64, 128)
    convs_per_block: int = 1
    #: Memory positions S = W // 2**width_pool_blocks.
    width_pool_blocks: int = 3


class LineCNNTransformer(Seq2SeqModel):
    """Line image -> text tokens, autoregressively (see module docstring for shapes)."""

    def __init__(self, num_classes: int, config: LineCNNTransformerConfig | None = None):
        config = config or LineCNNTransformerConfig()
        super().__init__(num_classes, config)
        rows = rows_after(config.height, len(config.channels))
        self.cnn = line_cnn(config.channels, config.convs_per_block, config.width_pool_blocks)
        # torch's stubs omit Module.to(memory_format=), which it accepts.
        self.cnn.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.project = nn.Linear(config.channels[-1] * rows, config.dim)
        self.position = PositionalEncoding1D(config.dim, dropout=config.dropout)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        features = self.cnn(images.contiguous(memory_format=torch.channels_last))  # (B,C,H',S)
        b, c, h, s = features.shape
        features = features.permute(0, 3, 1, 2).reshape(b, s, c * h)  # (B, S, C*H')
        return self.position(self.project(features))  # (B, S, dim)
