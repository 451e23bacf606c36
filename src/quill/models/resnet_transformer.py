"""ResnetTransformer: the reference paragraph model, ResNet encoder + Transformer decoder.

It reads a whole paragraph canvas and writes its text with newline tokens between lines, so
it needs no line segmentation. Shapes (defaults, canvas 576 x 640)::

    images (B, 1, 576, 640)
      -> ResNet (stride 16)           (B, 128, 36, 40)
      -> 1x1 conv to dim, + 2-D sinusoidal positions (B, dim, 36, 40)
      -> flatten rows                 memory (B, S=1440, dim)
    decoder_input (B, L) -> TransformerDecoder(memory) -> logits (B, L, C)

The 2-D encoding tells every memory position its row and column, which is how the decoder
knows where a line ends and the next begins.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from quill.models.positional import PositionalEncoding2D
from quill.models.resnet import ResNet
from quill.models.seq2seq import Seq2SeqConfig, Seq2SeqModel


@dataclasses.dataclass(frozen=True)
class ResnetTransformerConfig(Seq2SeqConfig):
    """Architecture of :class:`ResnetTransformer` (defaults: ~3.5 M parameters).

    ResNet-18-like encoder as in the reference: ``resnet_blocks=(2, 2, 2)``,
    ``resnet_widths=(64, 128, 256)``.
    """

    resnet_blocks: tuple[int, ...] = (1, 1, 1)
    resnet_widths: tuple[int, ...] = (32, 64, 128)
    #: Default ``generate`` limit in tokens: a handwritten paragraph of ~10 lines.
    max_output_length: int = 700


class ResnetTransformer(Seq2SeqModel):
    """Paragraph image -> text with newlines (see module docstring for shapes)."""

    def __init__(self, num_classes: int, config: ResnetTransformerConfig | None = None):
        config = config or ResnetTransformerConfig()
        super().__init__(num_classes, config)
        self.resnet = ResNet(config.resnet_blocks, config.resnet_widths)
        # torch's stubs omit Module.to(memory_format=), which it accepts.
        self.resnet.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.project = nn.Conv2d(self.resnet.out_channels, config.dim, 1)
        self.position = PositionalEncoding2D(config.dim)
        self.dropout = nn.Dropout(config.dropout)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        features = self.resnet(images.contiguous(memory_format=torch.channels_last))
        features = self.position(self.project(features))  # (B, dim, H', W')
        memory = features.flatten(2).transpose(1, 2)  # (B, S=H'*W', dim), row by row
        return self.dropout(memory.contiguous())
