"""Shared behaviour of the encoder-decoder models (family "seq2seq").

A subclass supplies ``encode(images) -> memory (B, S, dim)``; this base adds teacher-forced
``forward`` and ``generate`` (cached greedy or beam search) with the output contract of
:mod:`quill.models.generation`. Splitting encode from the decoder step is also what lets
staging export two small graphs (encoder; one cached decoder step) instead of an unrolled
loop, which the ONNX exporter takes minutes over.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from quill.models.config import ModelConfig
from quill.models.transformer_decoder import TransformerDecoder


@dataclasses.dataclass(frozen=True)
class Seq2SeqConfig(ModelConfig):
    """The Transformer decoder's part of every encoder-decoder model's config."""

    dim: int = 256
    heads: int = 4
    decoder_layers: int = 3
    ff_dim: int = 1024
    dropout: float = 0.2
    #: Default ``generate`` limit in tokens (EOS included).
    max_output_length: int = 128


class Seq2SeqModel(nn.Module):
    """Image encoder + :class:`TransformerDecoder`. Subclasses call ``super().__init__``
    with their config and implement :meth:`encode`."""

    family = "seq2seq"

    def __init__(self, num_classes: int, config: Seq2SeqConfig):
        super().__init__()
        self.config = config
        self.num_classes = num_classes
        self.max_output_length = config.max_output_length
        self.decoder = TransformerDecoder(
            num_classes,
            config.dim,
            config.decoder_layers,
            config.heads,
            config.ff_dim,
            config.dropout,
        )

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 1, H, W) -> memory (B, S, dim)."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor, decoder_input: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: decoder_input (B, L) starts with BOS -> logits (B, L, C)."""
        return self.decoder(decoder_input, self.encode(images))

    @torch.jit.export
    def generate(
        self, images: torch.Tensor, max_length: int | None = None, beam_size: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Read images (B, 1, H, W): ids (B, L) ending at EOS and padded with PAD, and a
        confidence (B,) in [0, 1]. Call in eval mode (dropout would make it random)."""
        if beam_size < 1:
            raise ValueError("beam_size must be at least 1, got " + str(beam_size))
        limit = self.max_output_length if max_length is None else max_length
        with torch.no_grad():
            memory = self.encode(images)
            if beam_size == 1:
                return self.decoder.generate_greedy(memory, limit)
            return self.decoder.generate_beam(memory, limit, beam_size)
