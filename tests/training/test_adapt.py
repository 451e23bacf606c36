"""Adapting a line model to one writer's lines (``quill.training.adapt``), on the smoke model:
it learns a word it has never read from four renderings of it, and refuses lines it cannot
write."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from quill.inference.recognizer import Recognizer
from quill.models.onnx_export import export_interface
from quill.runtimes.backends import TorchModuleRuntime, ctc_decoder
from quill.staged_model import StagedModel
from quill.staging.adapt import base_network
from quill.staging.parity import render_line
from quill.staging.smoke import on_noisy_paper
from quill.training.adapt import AdaptConfig, adapt_network
from quill.training.adapt_lines import AdaptError, AdaptLine, held_out

#: A word the smoke model never trained on, of letters it did ("ink").
NEW_WORD = "wink"
#: What teaches the tiny model a word in a few seconds (the shipped defaults suit real models).
FAST = AdaptConfig(steps=60, learning_rate=3e-3)


def _writer_lines(word: str) -> list[AdaptLine]:
    return [AdaptLine(render_line(word), word, "clean.png")] + [
        AdaptLine(on_noisy_paper(render_line(word), seed), word, f"noisy-{seed}.png")
        for seed in range(3)
    ]


def _reads(model: StagedModel, network: nn.Module, word: str) -> str:
    runtime = TorchModuleRuntime(export_interface(network), "ctc", 0, ctc_decoder(model))
    unseen = on_noisy_paper(render_line(word), seed=99)  # a rendering it did not adapt on
    (prediction,) = Recognizer(model, runtime, None, 1).predict([unseen], kind="line")
    return prediction.text


def test_a_new_word_is_read_after_adapting_on_four_lines_of_it(smoke_model: Path) -> None:
    model = StagedModel.load(smoke_model)
    network = base_network(model)
    assert _reads(model, network, NEW_WORD) != NEW_WORD
    losses = adapt_network(
        network, model.tokenizer, model.preprocess, _writer_lines(NEW_WORD), FAST
    )
    assert len(losses) == FAST.steps and losses[-1] < 0.2 * losses[0]
    assert _reads(model, network, NEW_WORD) == NEW_WORD
    assert not network.training  # left ready to read


def test_the_same_lines_and_seed_give_the_same_network(smoke_model: Path) -> None:
    model = StagedModel.load(smoke_model)
    config = AdaptConfig(steps=3, learning_rate=3e-3, seed=7)
    first, second = base_network(model), base_network(model)
    for network in (first, second):
        adapt_network(network, model.tokenizer, model.preprocess, _writer_lines("Kew"), config)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert (a == b).all(), name


def test_lines_the_model_cannot_write_are_named_and_nothing_trains(smoke_model: Path) -> None:
    model = StagedModel.load(smoke_model)
    network = base_network(model)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    lines = [
        AdaptLine(render_line("ink"), "ink", "ok.png"),
        AdaptLine(render_line("x"), "x☃y", "bad.png"),
        AdaptLine(render_line("Kew"), "Kew", "ok-too.png"),
    ]
    with pytest.raises(AdaptError, match=r"bad\.png: '☃'") as caught:
        adapt_network(network, model.tokenizer, model.preprocess, lines, FAST)
    assert "ok.png" not in str(caught.value)
    # a transcription left empty would teach the model to read that ink as nothing
    lines[1] = AdaptLine(render_line("x"), " ", "forgot.png")
    with pytest.raises(AdaptError, match=r"lines without text .*: forgot\.png$"):
        adapt_network(network, model.tokenizer, model.preprocess, lines, FAST)
    # one or two lines read the writer worse than no adapting at all (docs/training.md)
    with pytest.raises(AdaptError, match=r"2 line\(s\) are too few to adapt on: give at least 3"):
        adapt_network(network, model.tokenizer, model.preprocess, lines[::2], FAST)
    assert all((network.state_dict()[k] == v).all() for k, v in before.items())


def test_settings_and_hold_out_are_checked() -> None:
    with pytest.raises(AdaptError, match="at least 1"):
        AdaptConfig(steps=0)
    lines = [AdaptLine(str(i), "x") for i in range(3)]
    assert [line.image for line in held_out(lines, 0)[1]] == []
    with pytest.raises(AdaptError, match="keep at least one"):
        held_out(lines, 3)
