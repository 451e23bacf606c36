"""Tensor helpers of seq2seq decoding, and the uncached greedy baseline.

The decoding loops themselves, cached greedy and beam search, are methods of
:class:`~quill.models.transformer_decoder.TransformerDecoder` (``generate_greedy``,
``generate_beam``): TorchScript compiles a method once per module type, whereas a free
function taking the decoder would be compiled for the first decoder it met and refuse a
second configuration in the same process. Both loops feed one token per step through the KV
cache and stop as soon as every sequence has produced EOS. Output contract (shared by every
seq2seq model): ids (B, L) LongTensor, each row ending at its EOS and padded with PAD after
it (L = the longest row), and a confidence (B,) in [0, 1] = exp(mean log-probability of the
chosen tokens, EOS included).

``greedy_uncached`` recomputes the whole prefix each step, as the reference system did; it is
the baseline that tests and benchmarks compare the cached decoder with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from quill.models.transformer_decoder import TransformerDecoder


def token_log_probs(logits: torch.Tensor, pad_id: int, bos_id: int) -> torch.Tensor:
    """Log-probabilities (..., C) over the tokens a decoder may emit.

    PAD and BOS are never valid outputs (PAD only pads finished rows, BOS only starts), so
    they are excluded and the rest renormalised; then PAD in an output always means padding.
    """
    logits = logits.float().clone()
    logits[..., pad_id] = float("-inf")
    logits[..., bos_id] = float("-inf")
    return logits.log_softmax(dim=-1)


def start_tokens(memory: torch.Tensor, rows: int, bos_id: int) -> torch.Tensor:
    return torch.full((rows, 1), bos_id, dtype=torch.long, device=memory.device)


def greedy_pick(
    logits: torch.Tensor, finished: torch.Tensor, pad_id: int, bos_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best next token (B,) (PAD for finished rows) and its log-probability (0 if finished)."""
    best_log_prob, best = token_log_probs(logits, pad_id, bos_id).max(dim=-1)
    best = best.masked_fill(finished, pad_id)
    return best, best_log_prob.masked_fill(finished, 0.0)


def mean_confidence(total_log_prob: torch.Tensor, ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """exp(mean log-prob) over each row's tokens up to and including its EOS."""
    ended_before = (ids == eos_id).long().cumsum(dim=1) - (ids == eos_id).long()
    counted = (ended_before == 0).sum(dim=1).clamp(min=1)
    return torch.exp(total_log_prob / counted.float())


def greedy_uncached(
    decoder: TransformerDecoder, memory: torch.Tensor, max_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding by full recomputation of the prefix at each step (no cache)."""
    b = memory.shape[0]
    prefix = start_tokens(memory, b, decoder.bos_id)  # (B, t): the whole prefix is fed
    finished = torch.zeros(b, dtype=torch.bool, device=memory.device)
    total_log_prob = torch.zeros(b, device=memory.device)
    for _ in range(max_length):
        best, log_prob = greedy_pick(
            decoder(prefix, memory)[:, -1], finished, decoder.pad_id, decoder.bos_id
        )
        total_log_prob = total_log_prob + log_prob
        prefix = torch.cat([prefix, best.unsqueeze(1)], dim=1)
        finished = finished | (best == decoder.eos_id)
        if bool(finished.all()):
            break
    ids = prefix[:, 1:]
    return ids, mean_confidence(total_log_prob, ids, decoder.eos_id)


def trim_padding(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Drop trailing all-PAD columns (beams may run longer than the chosen hypothesis)."""
    used = (ids != pad_id).any(dim=0).nonzero()
    return ids[:, : int(used.max()) + 1] if used.numel() else ids[:, :0]
