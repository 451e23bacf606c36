"""Positional encodings: 1-D sinusoidal for sequences, 2-D sinusoidal for feature maps.

Sinusoids need no parameters and extend to any length, so a model trained on short lines
still reads a longer one; the encodings are precomputed buffers sliced by the input size
(slicing exports to ONNX with dynamic shapes, unlike building the table in forward).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn


def sinusoid_table(length: int, dim: int) -> torch.Tensor:
    """(length, dim) table of Vaswani et al.: sin on even, cos on odd channels.

    >>> sinusoid_table(4, 6).shape
    torch.Size([4, 6])
    >>> float(sinusoid_table(3, 4)[0, 1])  # cos(0)
    1.0
    """
    if dim % 2:
        raise ValueError(f"sinusoidal encoding needs an even dimension, got {dim}")
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)  # (L, 1)
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(1e4) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table


class PositionalEncoding1D(nn.Module):
    """Adds a sinusoidal position code to a (B, L, D) sequence, starting at ``offset``.

    ``offset`` lets an incremental decoder encode step t without re-encoding 0..t-1.
    """

    if TYPE_CHECKING:  # a buffer, (max_length, dim); declared for mypy only (TorchScript
        table: torch.Tensor  # cannot read this module's string annotations on the class)

    def __init__(self, dim: int, max_length: int = 4096, dropout: float = 0.0):
        super().__init__()
        self.register_buffer("table", sinusoid_table(max_length, dim), persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        length = x.shape[1]
        return self.dropout(x + self.table[offset : offset + length].unsqueeze(0))


class PositionalEncoding2D(nn.Module):
    """Adds a 2-D sinusoidal code to a (B, D, H, W) feature map.

    Half the channels encode the row, half the column, so after flattening to a sequence each
    position still knows where on the page it came from (needed to read lines in order).
    """

    if TYPE_CHECKING:  # buffers, (dim / 2, max_height) and (dim / 2, max_width), as above
        rows: torch.Tensor
        cols: torch.Tensor

    def __init__(self, dim: int, max_height: int = 512, max_width: int = 2048):
        super().__init__()
        if dim % 4:
            raise ValueError(f"2-D sinusoidal encoding needs a dimension divisible by 4, got {dim}")
        half = dim // 2
        self.register_buffer("rows", sinusoid_table(max_height, half).T, persistent=False)
        self.register_buffer("cols", sinusoid_table(max_width, half).T, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, height, width = x.shape
        rows = self.rows[:, :height].unsqueeze(2).expand(-1, height, width)  # (D/2, H, W)
        cols = self.cols[:, :width].unsqueeze(1).expand(-1, height, width)  # (D/2, H, W)
        return x + torch.cat([rows, cols], dim=0).unsqueeze(0)
