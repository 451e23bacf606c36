"""Small convolutional building blocks shared by the line encoders."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def conv_bn_relu(
    in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1
) -> list[nn.Module]:
    """3x3 convolution (same padding, no bias: BatchNorm supplies it), BatchNorm, ReLU;
    ``stride`` 2 halves each side, ``dilation`` widens what it sees at the same cost."""
    return [
        nn.Conv2d(
            in_channels, out_channels, 3, stride, padding=dilation, dilation=dilation, bias=False
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def line_cnn(
    channels: Sequence[int], convs_per_block: int, width_pool_blocks: int, in_channels: int = 1
) -> nn.Sequential:
    """A VGG-style stack: each block is ``convs_per_block`` conv-BN-ReLU then a max-pool.

    Every block halves the height; only the first ``width_pool_blocks`` halve the width too,
    so the sequence keeps enough frames per character (a 64-px line is ~2-4 px per frame after
    a x4 reduction, which CTC needs: at least one frame per character plus blanks between
    repeats). Pools use floor division, so an input of width W gives W // 2**width_pool_blocks
    frames, which is what the models' ``output_lengths`` compute.
    """
    layers: list[nn.Module] = []
    previous = in_channels
    for index, out in enumerate(channels):
        for conv in range(convs_per_block):
            layers += conv_bn_relu(previous if conv == 0 else out, out)
        layers.append(nn.MaxPool2d((2, 2) if index < width_pool_blocks else (2, 1)))
        previous = out
    return nn.Sequential(*layers)


def rows_after(height: int, blocks: int) -> int:
    """Rows left after ``blocks`` height halvings; the height must divide evenly.

    >>> rows_after(64, 4)
    4
    """
    if height % 2**blocks or height < 2**blocks:
        raise ValueError(
            f"height {height} is not divisible by 2**{blocks} (one halving per CNN block)"
        )
    return height // 2**blocks
