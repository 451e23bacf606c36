"""Seq2seq decoding over a :class:`TransformerDecoder`: cached greedy and beam search.

Both feed one token per step through the KV cache and stop as soon as every sequence has
produced EOS (a short line does not pay for ``max_length`` steps). Output contract (shared by
every seq2seq model): ids (B, L) LongTensor, each row ending at its EOS and padded with PAD
after it (L = the longest row), and a confidence (B,) in [0, 1] = exp(mean log-probability of
the chosen tokens, EOS included).

``greedy_uncached`` recomputes the whole prefix each step, as the reference system did; it is
the baseline that tests and benchmarks compare the cached decoder with.
"""

from __future__ import annotations

import torch

from quill.models.transformer_decoder import TransformerDecoder, reorder_cache


def token_log_probs(logits: torch.Tensor, pad_id: int, bos_id: int) -> torch.Tensor:
    """Log-probabilities (..., C) over the tokens a decoder may emit.

    PAD and BOS are never valid outputs (PAD only pads finished rows, BOS only starts), so
    they are excluded and the rest renormalised; then PAD in an output always means padding.
    """
    logits = logits.float().clone()
    logits[..., pad_id] = float("-inf")
    logits[..., bos_id] = float("-inf")
    return logits.log_softmax(dim=-1)


def _start_tokens(memory: torch.Tensor, rows: int, bos_id: int) -> torch.Tensor:
    return torch.full((rows, 1), bos_id, dtype=torch.long, device=memory.device)


def _greedy_pick(
    logits: torch.Tensor, finished: torch.Tensor, decoder: TransformerDecoder
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best next token (B,) (PAD for finished rows) and its log-probability (0 if finished)."""
    best_log_prob, best = token_log_probs(logits, decoder.pad_id, decoder.bos_id).max(dim=-1)
    best = best.masked_fill(finished, decoder.pad_id)
    return best, best_log_prob.masked_fill(finished, 0.0)


def _mean_confidence(total_log_prob: torch.Tensor, ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """exp(mean log-prob) over each row's tokens up to and including its EOS."""
    ended_before = (ids == eos_id).long().cumsum(dim=1) - (ids == eos_id).long()
    counted = (ended_before == 0).sum(dim=1).clamp(min=1)
    return torch.exp(total_log_prob / counted.float())


def greedy_generate(
    decoder: TransformerDecoder, memory: torch.Tensor, max_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding with the KV cache: memory (B, S, D) -> ids (B, L), confidence (B,)."""
    if max_length < 1:
        raise ValueError("max_length must be at least 1, got " + str(max_length))
    b = memory.shape[0]
    cache = decoder.init_cache(memory)
    tokens = _start_tokens(memory, b, decoder.bos_id)  # (B, 1): only the newest token is fed
    finished = torch.zeros(b, dtype=torch.bool, device=memory.device)
    total_log_prob = torch.zeros(b, device=memory.device)
    outputs: list[torch.Tensor] = []
    for _ in range(max_length):
        logits, cache = decoder.step(tokens, cache)  # (B, C)
        best, log_prob = _greedy_pick(logits, finished, decoder)
        total_log_prob = total_log_prob + log_prob
        outputs.append(best)
        finished = finished | (best == decoder.eos_id)
        if bool(finished.all()):
            break
        tokens = best.unsqueeze(1)
    ids = torch.stack(outputs, dim=1)  # (B, L)
    return ids, _mean_confidence(total_log_prob, ids, decoder.eos_id)


def greedy_uncached(
    decoder: TransformerDecoder, memory: torch.Tensor, max_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding by full recomputation of the prefix at each step (no cache)."""
    b = memory.shape[0]
    prefix = _start_tokens(memory, b, decoder.bos_id)  # (B, t): the whole prefix is fed
    finished = torch.zeros(b, dtype=torch.bool, device=memory.device)
    total_log_prob = torch.zeros(b, device=memory.device)
    for _ in range(max_length):
        best, log_prob = _greedy_pick(decoder(prefix, memory)[:, -1], finished, decoder)
        total_log_prob = total_log_prob + log_prob
        prefix = torch.cat([prefix, best.unsqueeze(1)], dim=1)
        finished = finished | (best == decoder.eos_id)
        if bool(finished.all()):
            break
    ids = prefix[:, 1:]
    return ids, _mean_confidence(total_log_prob, ids, decoder.eos_id)


def beam_generate(
    decoder: TransformerDecoder,
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
    cache = decoder.init_cache(memory.repeat_interleave(k, dim=0))  # rows: B*K
    tokens = _start_tokens(memory, b * k, decoder.bos_id)
    # Only the first beam is alive at the start, or all K would expand the same prefix.
    scores = torch.full((b, k), float("-inf"), device=device)
    scores[:, 0] = 0.0
    lengths = torch.zeros(b, k, device=device)
    finished = torch.zeros(b, k, dtype=torch.bool, device=device)
    history = torch.zeros(b, k, 0, dtype=torch.long, device=device)
    rows = torch.arange(b, device=device).unsqueeze(1)  # (B, 1)
    for _ in range(max_length):
        logits, cache = decoder.step(tokens, cache)
        log_probs = token_log_probs(logits, decoder.pad_id, decoder.bos_id)
        log_probs = log_probs.view(b, k, -1)  # (B, K, C)
        num_classes = log_probs.shape[-1]
        # A finished beam can only continue with PAD, at no cost.
        pad_only = torch.full_like(log_probs, float("-inf"))
        pad_only[..., decoder.pad_id] = 0.0
        log_probs = torch.where(finished.unsqueeze(-1), pad_only, log_probs)
        candidates = (scores.unsqueeze(-1) + log_probs).view(b, k * num_classes)
        scores, flat = candidates.topk(k, dim=-1)  # (B, K)
        beam, token = flat // num_classes, flat % num_classes
        finished = finished[rows, beam]
        lengths = lengths[rows, beam] + (~finished).float()
        history = torch.cat([history[rows, beam], token.unsqueeze(-1)], dim=-1)
        # A beam with no probability left (more beams than live candidates) is over too.
        finished = finished | (token == decoder.eos_id) | torch.isinf(scores)
        cache = reorder_cache(cache, (rows * k + beam).view(-1))
        tokens = token.view(b * k, 1)
        if bool(finished.all()):
            break
    normalised = scores / lengths.clamp(min=1.0) ** length_penalty
    best = normalised.argmax(dim=-1)  # (B,)
    every = torch.arange(b, device=device)
    confidence = torch.exp(scores[every, best] / lengths[every, best].clamp(min=1.0))
    return _trim(history[every, best], decoder.pad_id), confidence  # ids (B, L)


def _trim(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Drop trailing all-PAD columns (beams may run longer than the chosen hypothesis)."""
    used = (ids != pad_id).any(dim=0).nonzero()
    return ids[:, : int(used.max()) + 1] if used.numel() else ids[:, :0]
