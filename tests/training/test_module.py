"""LightningModules: sequences, schedules, checkpoint contents, and memorization.

The memorization test is the cheapest proof that loss, gradients, optimiser and decoding fit
together: a small model must learn one batch of real-format line images by heart.
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import pytest
import torch

from quill.evaluation import corpus_cer
from quill.training.config import resolve_config
from quill.training.module import (
    CTCModule,
    Seq2SeqModule,
    bos_eos_sequences,
    build_scheduler,
    create_module,
    load_module,
)
from quill.vocab import Tokenizer

from .conftest import TINY_CONFIG, load_batch


def _module(overrides: list[str] = ()) -> CTCModule | Seq2SeqModule:
    config = resolve_config(TINY_CONFIG, list(overrides))
    return create_module(config, Tokenizer(), config["data"]["preprocess"], "test-version")


def test_bos_eos_sequences_place_eos_after_each_target() -> None:
    targets = torch.tensor([[5, 6, 7], [8, 0, 0], [9, 9, 0]])
    out = bos_eos_sequences(targets, torch.tensor([3, 1, 2]))
    assert out.tolist() == [[1, 5, 6, 7, 2], [1, 8, 2, 0, 0], [1, 9, 9, 2, 0]]


@pytest.mark.parametrize("schedule", ["cosine", "onecycle", "constant"])
def test_schedules_warm_up_then_follow_their_shape(schedule: str) -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    optim = {"lr": 1.0, "warmup": 10, "schedule": schedule, "min_lr_ratio": 0.01}
    optimizer = torch.optim.AdamW([param], lr=1.0)
    scheduler = build_scheduler(optimizer, optim, total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] < 0.2 and max(lrs) == pytest.approx(1.0, rel=0.05)
    assert lrs[5] < lrs[9]  # warming up
    if schedule == "constant":
        assert lrs[-1] == pytest.approx(1.0)
    else:
        assert lrs[-1] < 0.05  # decayed to the floor


def test_unknown_schedule_is_rejected() -> None:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
    with pytest.raises(ValueError, match="optim.schedule"):
        build_scheduler(optimizer, {"lr": 1, "warmup": 0, "schedule": "step"}, 10)


def test_module_family_follows_the_model() -> None:
    assert isinstance(_module(), CTCModule)
    seq2seq = _module(
        ["model.name=line_cnn_transformer", "model.config={height: 32, channels: [16, 32]}"]
    )
    assert isinstance(seq2seq, Seq2SeqModule)


def test_seq2seq_loss_and_label_smoothing(tiny_lines: Path) -> None:
    batch = load_batch(tiny_lines, "train", 32, limit=4)
    overrides = [
        "model.name=line_cnn_transformer",
        "model.config={height: 32, channels: [16, 32], dim: 32, heads: 2, decoder_layers: 1, "
        "ff_dim: 64, dropout: 0.0}",
    ]
    torch.manual_seed(0)
    plain = _module(overrides)
    torch.manual_seed(0)
    smooth = _module([*overrides, "optim.label_smoothing=0.2"])
    loss, smoothed = plain.loss(batch), smooth.loss(batch)
    assert torch.isfinite(loss) and loss > 0
    assert not torch.isclose(loss, smoothed)  # same weights, different objective
    plain.eval()
    with torch.no_grad():
        readings = plain.transcribe(batch)
    assert len(readings) == 4 and all(0.0 <= c <= 1.0 for _, c in readings)


def test_checkpoint_holds_the_contract_hyperparameters(tmp_path: Path) -> None:
    module = _module()
    trainer = L.Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, max_epochs=0
    )
    trainer.strategy.connect(module)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=False)
    hparams = checkpoint["hyper_parameters"]
    assert set(hparams) == {
        "model_name",
        "model_config",
        "tokenizer",
        "preprocess",
        "dataset_version",
        "config",
    }
    assert hparams["model_config"]["hidden"] == 64 and "layers" in hparams["model_config"]
    assert Tokenizer.from_dict(hparams["tokenizer"]) == Tokenizer()
    assert all(key.startswith("model.") for key in checkpoint["state_dict"])
    restored = load_module(str(path))
    for key, value in module.state_dict().items():
        assert torch.equal(value, restored.state_dict()[key])


def memorize(
    batch: dict, module, max_steps: int, budget_s: float
) -> tuple[float, float, int, float]:
    """Train on one batch until it is read back exactly; (loss, cer, steps, CPU seconds).

    The budget is CPU time of this (single-threaded) process, so other jobs on a shared
    machine slow the test down without failing it.
    """
    optimizer = torch.optim.AdamW(module.parameters(), lr=3e-3)
    start, loss, cer = time.process_time(), float("inf"), 1.0
    for step in range(1, max_steps + 1):
        module.train()
        value = module.loss(batch)
        optimizer.zero_grad()
        value.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        loss = float(value.detach())
        if step % 20 == 0:
            module.eval()
            with torch.no_grad():
                texts = [text for text, _ in module.transcribe(batch)]
            cer = corpus_cer(texts, batch["texts"])
            if loss < 0.1 and cer == 0.0:
                break
        if time.process_time() - start > budget_s:
            break
    return loss, cer, step, time.process_time() - start


def test_ctc_model_memorizes_one_batch_in_under_a_minute(tiny_lines: Path) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    batch = load_batch(tiny_lines, "train", 32, limit=8)
    wall = time.perf_counter()
    loss, cer, steps, seconds = memorize(batch, _module(), max_steps=1500, budget_s=60)
    wall = time.perf_counter() - wall
    print(
        f"memorization: loss {loss:.4f}, CER {cer:.3f} after {steps} steps, "
        f"{seconds:.1f} CPU s ({wall:.1f} s wall)"
    )
    assert loss < 0.1 and cer == 0.0, f"loss {loss:.3f}, CER {cer:.3f} after {seconds:.0f} CPU s"


SMALL_SEQ2SEQ = [
    "model.name=line_cnn_transformer",
    "model.config={height: 32, channels: [16, 32, 64], dim: 64, heads: 2, decoder_layers: 1, "
    "ff_dim: 128, dropout: 0.0}",
]


@pytest.mark.slow
def test_seq2seq_model_memorizes_one_batch(tiny_lines: Path) -> None:
    """The harder tier: the Transformer decoder on one batch (the CTC model memorises one in
    the test above, and through the whole training loop in ``quill train --overfit-batches``,
    tests/training/test_train_short_runs.py)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    batch = load_batch(tiny_lines, "train", 32, limit=8)
    loss, cer, steps, seconds = memorize(
        batch, _module(SMALL_SEQ2SEQ), max_steps=3000, budget_s=180
    )
    print(f"seq2seq: loss {loss:.4f}, CER {cer:.3f} after {steps} steps in {seconds:.1f} CPU s")
    assert loss < 0.1 and cer == 0.0, f"seq2seq: loss {loss:.3f}, CER {cer:.3f}"
