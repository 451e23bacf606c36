"""Fixtures for model tests: real tokenizer, tiny configs, one thread (the CPU is shared)."""

from __future__ import annotations

import pytest
import torch

from quill.vocab import Tokenizer


@pytest.fixture(autouse=True)
def _one_thread_and_seed():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    return Tokenizer()


def targets_batch(tokenizer: Tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch-format targets: (B, L) ids padded with 0 and (B,) lengths."""
    encoded = [tokenizer.encode(t) for t in texts]
    lengths = torch.tensor([len(e) for e in encoded])
    targets = torch.zeros(len(texts), int(lengths.max()), dtype=torch.long)
    for row, ids in enumerate(encoded):
        targets[row, : len(ids)] = torch.tensor(ids)
    return targets, lengths
