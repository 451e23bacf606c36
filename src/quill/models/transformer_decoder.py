"""Transformer decoder with a key/value cache for incremental decoding.

The reference system decoded greedily by re-running the decoder on the whole prefix at every
step, O(L^2) work per token. Here :meth:`TransformerDecoder.step` feeds only the newest token:
self-attention keys/values of earlier steps are kept in a :class:`DecoderCache`, and the
cross-attention keys/values of the encoder memory are projected once per image. The same
weights serve teacher-forced training (:meth:`TransformerDecoder.forward`, causal mask) and
cached inference, and the two are tested to agree.

Layers are pre-norm (LayerNorm before each sub-layer), which trains stably without warmup
tricks at the small sizes used on CPU. Attention is ``F.scaled_dot_product_attention`` (fused
kernels; exports to ONNX; TorchScript compatible).
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from quill.models.generation import (
    greedy_pick,
    mean_confidence,
    start_tokens,
    token_log_probs,
    trim_padding,
)
from quill.models.positional import PositionalEncoding1D
from quill.vocab import Tokenizer


class DecoderCache(NamedTuple):
    """Per-layer keys/values, stacked on dim 0 so a step graph has four tensor inputs.

    self_keys/self_values: (layers, B, heads, t, head_dim), t = tokens decoded so far;
    cross_keys/cross_values: (layers, B, heads, S, head_dim), S = encoder memory length.
    """

    self_keys: torch.Tensor
    self_values: torch.Tensor
    cross_keys: torch.Tensor
    cross_values: torch.Tensor


class Attention(nn.Module):
    """Multi-head attention split into "project keys/values" and "attend", so that keys and
    values can be computed once and reused (cache) instead of on every call."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"model dimension {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.head_dim = dim // heads
        self.dropout = dropout
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, length, _ = x.shape
        return x.reshape(b, length, self.heads, self.head_dim).transpose(1, 2)  # (B, H, L, Dh)

    @torch.jit.export
    def project_key_value(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S, D) -> keys, values, each (B, H, S, Dh)."""
        keys, values = self.key_value(source).chunk(2, dim=-1)
        return self._split(keys), self._split(values)

    @torch.jit.export
    def attend(
        self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, causal: bool
    ) -> torch.Tensor:
        """Queries from x (B, L, D) over keys/values (B, H, S, Dh) -> (B, L, D)."""
        b, length, dim = x.shape
        out = F.scaled_dot_product_attention(
            self._split(self.query(x)),
            keys,
            values,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=causal,
        )  # (B, H, L, Dh)
        return self.out(out.transpose(1, 2).reshape(b, length, dim))


class DecoderLayer(nn.Module):
    """Pre-norm layer: causal self-attention, cross-attention to memory, feed-forward."""

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.self_attention = Attention(dim, heads, dropout)
        self.cross_attention = Attention(dim, heads, dropout)
        self.feed_forward = nn.Sequential(
            nn.Linear(dim, ff_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_dim, dim)
        )
        self.norm_self = nn.LayerNorm(dim)
        self.norm_cross = nn.LayerNorm(dim)
        self.norm_ff = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def _cross_and_feed_forward(
        self, x: torch.Tensor, cross_keys: torch.Tensor, cross_values: torch.Tensor
    ) -> torch.Tensor:
        x = x + self.dropout(
            self.cross_attention.attend(self.norm_cross(x), cross_keys, cross_values, False)
        )
        return x + self.dropout(self.feed_forward(self.norm_ff(x)))

    def forward(
        self, x: torch.Tensor, cross_keys: torch.Tensor, cross_values: torch.Tensor
    ) -> torch.Tensor:
        """Whole target sequence at once (training): x (B, L, D) -> (B, L, D)."""
        normed = self.norm_self(x)
        keys, values = self.self_attention.project_key_value(normed)
        x = x + self.dropout(self.self_attention.attend(normed, keys, values, True))
        return self._cross_and_feed_forward(x, cross_keys, cross_values)

    @torch.jit.export
    def step(
        self,
        x: torch.Tensor,
        past_keys: torch.Tensor,
        past_values: torch.Tensor,
        cross_keys: torch.Tensor,
        cross_values: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One new position x (B, 1, D) attending to the cached past; returns the output and
        the keys/values extended by this position (B, H, t+1, Dh)."""
        normed = self.norm_self(x)
        new_keys, new_values = self.self_attention.project_key_value(normed)
        keys = torch.cat([past_keys, new_keys], dim=2)
        values = torch.cat([past_values, new_values], dim=2)
        # No mask: the one query is the newest position, so every cached key is in its past.
        x = x + self.dropout(self.self_attention.attend(normed, keys, values, False))
        return self._cross_and_feed_forward(x, cross_keys, cross_values), keys, values


class TransformerDecoder(nn.Module):
    """Token embedding + sinusoidal positions + pre-norm layers + output projection.

    Carries the special token ids as plain attributes so that generation code compiled by
    TorchScript (which cannot read Python globals) finds them.
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        layers: int,
        heads: int,
        ff_dim: int,
        dropout: float,
        max_length: int = 4096,
    ):
        super().__init__()
        self.dim = dim
        self.heads = heads
        self.pad_id = Tokenizer.pad_id
        self.bos_id = Tokenizer.bos_id
        self.eos_id = Tokenizer.eos_id
        self.embedding = nn.Embedding(num_classes, dim)
        self.position = PositionalEncoding1D(dim, max_length=max_length, dropout=dropout)
        self.layers = nn.ModuleList(
            [DecoderLayer(dim, heads, ff_dim, dropout) for _ in range(layers)]
        )
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, num_classes)
        self.scale = dim**0.5

    def _embed(self, tokens: torch.Tensor, offset: int) -> torch.Tensor:
        return self.position(self.embedding(tokens) * self.scale, offset)  # (B, L, D)

    def forward(self, tokens: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: tokens (B, L) starting with BOS, memory (B, S, D) -> (B, L, C).

        Position i sees tokens 0..i only (causal self-attention).
        """
        x = self._embed(tokens, 0)
        for layer in self.layers:
            # A ModuleList yields nn.Module, whose attributes torch types as Tensor | Module (two
            # mypy codes; TorchScript reads only a bare or one-code ignore at the end of a line).
            keys, values = layer.cross_attention.project_key_value(memory)  # type: ignore
            x = layer(x, keys, values)
        return self.classifier(self.norm(x))

    @torch.jit.export
    def init_cache(self, memory: torch.Tensor) -> DecoderCache:
        """Project the memory (B, S, D) for every layer once; empty self-attention cache."""
        cross_keys: list[torch.Tensor] = []
        cross_values: list[torch.Tensor] = []
        for layer in self.layers:
            # A ModuleList yields nn.Module, whose attributes torch types as Tensor | Module (two
            # mypy codes; TorchScript reads only a bare or one-code ignore at the end of a line).
            keys, values = layer.cross_attention.project_key_value(memory)  # type: ignore
            cross_keys.append(keys)
            cross_values.append(values)
        b = memory.shape[0]
        empty = memory.new_zeros(len(self.layers), b, self.heads, 0, self.dim // self.heads)
        return DecoderCache(empty, empty, torch.stack(cross_keys), torch.stack(cross_values))

    @torch.jit.export
    def step(self, tokens: torch.Tensor, cache: DecoderCache) -> tuple[torch.Tensor, DecoderCache]:
        """Decode one position: tokens (B, 1) (the latest token) -> logits (B, C), new cache."""
        x = self._embed(tokens, cache.self_keys.shape[3])  # (B, 1, D)
        self_keys: list[torch.Tensor] = []
        self_values: list[torch.Tensor] = []
        for index, layer in enumerate(self.layers):
            # layer: nn.Module (a ModuleList item, as above)
            x, keys, values = layer.step(  # type: ignore[operator]
                x,
                cache.self_keys[index],
                cache.self_values[index],
                cache.cross_keys[index],
                cache.cross_values[index],
            )
            self_keys.append(keys)
            self_values.append(values)
        logits = self.classifier(self.norm(x))[:, 0]  # (B, C)
        new_cache = DecoderCache(
            torch.stack(self_keys), torch.stack(self_values), cache.cross_keys, cache.cross_values
        )
        return logits, new_cache

    @torch.jit.export
    def generate_greedy(
        self, memory: torch.Tensor, max_length: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy decoding with the KV cache: memory (B, S, D) -> ids (B, L), confidence (B,)."""
        if max_length < 1:
            raise ValueError("max_length must be at least 1, got " + str(max_length))
        b = memory.shape[0]
        cache = self.init_cache(memory)
        tokens = start_tokens(memory, b, self.bos_id)  # (B, 1): only the newest token is fed
        finished = torch.zeros(b, dtype=torch.bool, device=memory.device)
        total_log_prob = torch.zeros(b, device=memory.device)
        outputs: list[torch.Tensor] = []
        for _ in range(max_length):
            logits, cache = self.step(tokens, cache)  # (B, C)
            best, log_prob = greedy_pick(logits, finished, self.pad_id, self.bos_id)
            total_log_prob = total_log_prob + log_prob
            outputs.append(best)
            finished = finished | (best == self.eos_id)
            if bool(finished.all()):
                break
            tokens = best.unsqueeze(1)
        ids = torch.stack(outputs, dim=1)  # (B, L)
        return ids, mean_confidence(total_log_prob, ids, self.eos_id)

    @torch.jit.export
    def generate_beam(
        self,
        memory: torch.Tensor,
        max_length: int,
        beam_size: int,
        length_penalty: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Beam search with the KV cache: memory (B, S, D) -> ids (B, L), confidence (B,).

        Hypotheses are ranked by summed log-probability while searching; the final choice among
        the ``beam_size`` survivors divides by ``length ** length_penalty`` (1.0 = mean log-prob),
        so a hypothesis is not preferred merely for being short. Stops when every beam has ended.
        """
        if max_length < 1:
            raise ValueError("max_length must be at least 1, got " + str(max_length))
        b, k = memory.shape[0], beam_size
        device = memory.device
        cache = self.init_cache(memory.repeat_interleave(k, dim=0))  # rows: B*K
        tokens = start_tokens(memory, b * k, self.bos_id)
        # Only the first beam is alive at the start, or all K would expand the same prefix.
        scores = torch.full((b, k), float("-inf"), device=device)
        scores[:, 0] = 0.0
        lengths = torch.zeros(b, k, device=device)
        finished = torch.zeros(b, k, dtype=torch.bool, device=device)
        history = torch.zeros(b, k, 0, dtype=torch.long, device=device)
        rows = torch.arange(b, device=device).unsqueeze(1)  # (B, 1)
        for _ in range(max_length):
            logits, cache = self.step(tokens, cache)
            log_probs = token_log_probs(logits, self.pad_id, self.bos_id)
            log_probs = log_probs.view(b, k, -1)  # (B, K, C)
            num_classes = log_probs.shape[-1]
            # A finished beam can only continue with PAD, at no cost.
            pad_only = torch.full_like(log_probs, float("-inf"))
            pad_only[..., self.pad_id] = 0.0
            log_probs = torch.where(finished.unsqueeze(-1), pad_only, log_probs)
            candidates = (scores.unsqueeze(-1) + log_probs).view(b, k * num_classes)
            scores, flat = candidates.topk(k, dim=-1)  # (B, K)
            beam, token = flat // num_classes, flat % num_classes
            finished = finished[rows, beam]
            lengths = lengths[rows, beam] + (~finished).float()
            history = torch.cat([history[rows, beam], token.unsqueeze(-1)], dim=-1)
            # A beam with no probability left (more beams than live candidates) is over too.
            finished = finished | (token == self.eos_id) | torch.isinf(scores)
            cache = reorder_cache(cache, (rows * k + beam).view(-1))
            tokens = token.view(b * k, 1)
            if bool(finished.all()):
                break
        normalised = scores / lengths.clamp(min=1.0) ** length_penalty
        best = normalised.argmax(dim=-1)  # (B,)
        every = torch.arange(b, device=device)
        confidence = torch.exp(scores[every, best] / lengths[every, best].clamp(min=1.0))
        return trim_padding(history[every, best], self.pad_id), confidence  # ids (B, L)


def reorder_cache(cache: DecoderCache, index: torch.Tensor) -> DecoderCache:
    """Select batch rows ``index`` (beam search keeps the surviving hypotheses)."""
    return DecoderCache(
        cache.self_keys.index_select(1, index),
        cache.self_values.index_select(1, index),
        cache.cross_keys.index_select(1, index),
        cache.cross_values.index_select(1, index),
    )
