"""A ResNet written here (torchvision does not import beside the pinned torch).

BasicBlock stages as in He et al. 2016, for single-channel ink maps, with the depth and
width of each stage configurable. ``blocks=(2, 2, 2, 2), widths=(64, 128, 256, 512)`` is
ResNet-18; the reference paragraph model used ResNet-18's first three stages
(``(2, 2, 2), (64, 128, 256)``, output stride 16); Quill's CPU default is a slimmer
``(1, 1, 1), (32, 64, 128)`` with the same stride.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """Stem (7x7 stride-2 conv, 3x3 stride-2 max-pool) then one stage per ``blocks`` entry;
    stages after the first halve the resolution.

    Output: (B, widths[-1], H / stride, W / stride) with ``stride = 4 * 2**(stages - 1)``
    (up to rounding for sizes that are not multiples of the stride).

    >>> net = ResNet(blocks=(1, 1), widths=(8, 16))
    >>> net(torch.zeros(1, 1, 64, 96)).shape, net.stride
    (torch.Size([1, 16, 8, 12]), 8)
    """

    def __init__(self, blocks: Sequence[int], widths: Sequence[int], in_channels: int = 1):
        super().__init__()
        if len(blocks) != len(widths) or not blocks:
            raise ValueError(
                f"ResNet needs one width per stage: blocks={tuple(blocks)}, widths={tuple(widths)}"
            )
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages: list[nn.Module] = []
        previous = widths[0]
        for index, (count, width) in enumerate(zip(blocks, widths, strict=True)):
            stride = 1 if index == 0 else 2
            layers = [BasicBlock(previous, width, stride)]
            layers += [BasicBlock(width, width, 1) for _ in range(count - 1)]
            stages.append(nn.Sequential(*layers))
            previous = width
        self.stages = nn.Sequential(*stages)
        self.out_channels = previous
        self.stride = 4 * 2 ** (len(blocks) - 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        # Zero the last BN of each block: every block starts as identity (Goyal et al. 2017).
        for module in self.modules():
            if isinstance(module, BasicBlock):
                last = module.body[-1]
                assert isinstance(last, nn.BatchNorm2d)
                nn.init.zeros_(last.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))
