"""`model.init_from`: fine-tuning starts from a staged model's or a checkpoint's weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from quill.models import build_model
from quill.preprocess import PreprocessConfig
from quill.training.init_weights import InitWeightsError, load_initial_weights
from quill.vocab import SPECIAL_TOKENS, Tokenizer

from .conftest import REPO_ROOT

SHIPPED = REPO_ROOT / "models" / "hooker"


def shipped_architecture(num_classes: int | None = None, **changes: object) -> torch.nn.Module:
    meta = json.loads((SHIPPED / "quill-model.json").read_text(encoding="utf-8"))
    config = {**meta["model_config"], **changes}
    return build_model(meta["model_name"], num_classes or len(Tokenizer()), **config)


def test_a_staged_model_gives_its_exported_weights() -> None:
    model = shipped_architecture()
    loaded = load_initial_weights(model, SHIPPED, Tokenizer())
    version = json.loads((SHIPPED / "quill-model.json").read_text(encoding="utf-8"))["version"]
    assert loaded == f"{SHIPPED} ({version})"
    exported = torch.jit.load(str(SHIPPED / "model.pt")).state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, exported[f"model.{name}"]), name


def test_another_architecture_is_refused_with_the_reason() -> None:
    with pytest.raises(InitWeightsError, match="another architecture") as refused:
        load_initial_weights(shipped_architecture(hidden=128), SHIPPED, Tokenizer())
    assert "hidden: 256 in the source, 128 here" in str(refused.value)


def test_an_architecture_whose_tensors_fit_is_refused_too() -> None:
    """Width pooling changes no tensor's shape: the weights loaded, and the run silently
    trained a network that reads at another frame rate than the one it started from."""
    with pytest.raises(InitWeightsError, match="width_pool_blocks: 2 in the source, 3 here"):
        load_initial_weights(shipped_architecture(width_pool_blocks=3), SHIPPED, Tokenizer())
    model = shipped_architecture(dropout=0.5)  # how it trains, not what it computes: allowed
    load_initial_weights(model, SHIPPED, Tokenizer())
    exported = torch.jit.load(str(SHIPPED / "model.pt")).state_dict()
    assert torch.equal(model.classifier.weight, exported["model.classifier.weight"])


def test_tensors_that_do_not_fit_are_named(tmp_path: Path) -> None:
    """A source whose recorded config lacks a field (an older model) is still checked tensor
    by tensor; the reason names the tensors that differ (it was cut to torch's first line,
    which names only the class)."""
    staged = without_hidden(staged_copy(tmp_path, ascii_chars()))
    with pytest.raises(InitWeightsError, match="do not fit this run's model.config") as refused:
        load_initial_weights(shipped_architecture(hidden=128), staged, Tokenizer())
    assert "size mismatch for " in str(refused.value)


def ascii_chars() -> str:
    return Tokenizer().characters


def without_hidden(staged: Path) -> Path:
    """``staged`` as an older model recorded it: its config without the encoder's size, so
    only its tensors can tell that size."""
    meta = json.loads((staged / "quill-model.json").read_text(encoding="utf-8"))
    del meta["model_config"]["hidden"]
    (staged / "quill-model.json").write_text(json.dumps(meta), encoding="utf-8")
    return staged


def staged_copy(tmp_path: Path, characters: str) -> Path:
    """The shipped model's weights, staged as if trained with ``characters``."""
    staged = tmp_path / "staged"
    shutil.copytree(SHIPPED, staged, ignore=shutil.ignore_patterns("*.onnx", "lm.json"))
    meta = json.loads((staged / "quill-model.json").read_text(encoding="utf-8"))
    meta["tokenizer"]["characters"] = characters
    (staged / "quill-model.json").write_text(json.dumps(meta), encoding="utf-8")
    return staged


def classifier_rows(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    return model.classifier.weight.detach().clone(), model.classifier.bias.detach().clone()


def test_an_ascii_model_warm_starts_a_latin_one_row_by_row() -> None:
    ascii_, latin = Tokenizer(), Tokenizer.named("latin")
    torch.manual_seed(0)
    model = shipped_architecture(num_classes=len(latin))
    fresh_weight, fresh_bias = classifier_rows(model)
    loaded = load_initial_weights(model, SHIPPED, latin)
    version = json.loads((SHIPPED / "quill-model.json").read_text(encoding="utf-8"))["version"]
    assert loaded == f"{SHIPPED} ({version}) (97 of 174 characters from the source; 77 new)"

    exported = torch.jit.load(str(SHIPPED / "model.pt")).state_dict()
    source_weight, source_bias = (
        exported["model.classifier.weight"],
        exported["model.classifier.bias"],
    )
    weight, bias = classifier_rows(model)
    for char in ("a", "Z", " ", "£", "^"):
        run, source = latin.encode(char)[0], ascii_.encode(char)[0]
        assert torch.equal(weight[run], source_weight[source]), char
        assert bias[run] == source_bias[source], char
    assert torch.equal(weight[: len(ascii_)], source_weight)  # the blank and BOS/EOS by index
    for char in ("é", "œ", "’", "ſ"):  # characters the source never had keep their fresh rows
        run = latin.encode(char)[0]
        assert torch.equal(weight[run], fresh_weight[run]), char
        assert bias[run] == fresh_bias[run], char
    assert not torch.equal(weight[latin.encode("é")[0]], weight[latin.encode("e")[0]])
    for name, tensor in model.state_dict().items():
        if not name.startswith("classifier."):
            assert torch.equal(tensor, exported[f"model.{name}"]), name


def test_a_reordered_vocabulary_is_mapped_by_character(tmp_path: Path) -> None:
    ascii_ = Tokenizer()
    characters = ascii_.characters
    reordered = Tokenizer(characters=characters[::-1])  # same size: shapes alone cannot tell
    source = shipped_architecture()
    load_initial_weights(source, staged_copy(tmp_path, reordered.characters), reordered)
    model = shipped_architecture()
    loaded = load_initial_weights(model, tmp_path / "staged", ascii_)
    assert loaded.endswith("(97 of 97 characters from the source; 0 new)")
    assert not torch.equal(model.classifier.weight, source.classifier.weight)

    images = torch.rand(2, 1, 48, 160)
    with torch.no_grad():
        expected, got = source.eval()(images), model.eval()(images)
    # the same distribution over the same characters, summed in another order
    specials = slice(0, len(SPECIAL_TOKENS))
    assert torch.allclose(got[..., specials], expected[..., specials], atol=1e-5)
    for char in "ae Z\n£^1":
        run, old = ascii_.encode(char)[0], reordered.encode(char)[0]
        assert run != old
        assert torch.allclose(got[..., run], expected[..., old], atol=1e-5), char
    every = [reordered.encode(c)[0] for c in characters]  # each run class, in the source
    assert torch.allclose(got[..., len(SPECIAL_TOKENS) :], expected[..., every], atol=1e-5)


def test_a_vocabulary_sharing_no_character_is_refused(tmp_path: Path) -> None:
    foreign = "".join(chr(0x4E00 + i) for i in range(len(Tokenizer().characters)))
    staged = staged_copy(tmp_path, foreign)
    with pytest.raises(InitWeightsError, match="shares no character"):
        load_initial_weights(shipped_architecture(), staged, Tokenizer())


def test_across_vocabularies_every_other_tensor_must_still_fit(tmp_path: Path) -> None:
    latin = Tokenizer.named("latin")
    model = shipped_architecture(num_classes=len(latin), hidden=128)
    with pytest.raises(InitWeightsError, match="do not fit this run's model.config"):
        load_initial_weights(model, without_hidden(staged_copy(tmp_path, ascii_chars())), latin)


def test_a_run_that_cannot_write_some_of_the_source_characters_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Latin model warm-starting an ASCII run loads, and the lineage and the log say which
    of its characters the run gives up (they were dropped without a word)."""
    default = REPO_ROOT / "models" / "default"
    meta = json.loads((default / "quill-model.json").read_text(encoding="utf-8"))
    model = build_model(meta["model_name"], len(Tokenizer()), **meta["model_config"])
    with caplog.at_level("WARNING", logger="quill.training.init_weights"):
        loaded = load_initial_weights(model, default, Tokenizer())
    assert loaded.endswith(
        "(97 of 97 characters from the source; 0 new; 77 of the source's "
        "characters this run cannot write)"
    )
    assert "77 characters this run's vocabulary lacks" in caplog.text
    assert "é" in caplog.text


def tiny_seq2seq_checkpoint(path: Path, tokenizer: Tokenizer) -> torch.nn.Module:
    """A Quill .ckpt of a tiny LineCNNTransformer trained (never) with ``tokenizer``."""
    config = {"height": 32, "channels": [8, 16], "dim": 32, "heads": 2, "decoder_layers": 1,
              "ff_dim": 64, "width_pool_blocks": 1}  # fmt: skip
    model = build_model("line_cnn_transformer", len(tokenizer), **config)
    hyper = {
        "model_name": "line_cnn_transformer",
        "model_config": config,
        "tokenizer": tokenizer.to_dict(),
        "preprocess": PreprocessConfig(height=32).to_dict(),
    }
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"hyper_parameters": hyper, "state_dict": state}, path)
    return model


def test_a_seq2seq_checkpoint_maps_its_embedding_and_classifier(tmp_path: Path) -> None:
    ascii_, run = Tokenizer(), Tokenizer(characters="éab\n")  # a small foreign vocabulary
    torch.manual_seed(1)
    source = tiny_seq2seq_checkpoint(tmp_path / "tiny.ckpt", ascii_)
    model = build_model("line_cnn_transformer", len(run), **{
        "height": 32, "channels": [8, 16], "dim": 32, "heads": 2, "decoder_layers": 1,
        "ff_dim": 64, "width_pool_blocks": 1})  # fmt: skip
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    loaded = load_initial_weights(model, tmp_path / "tiny.ckpt", run)
    assert loaded == (
        f"{tmp_path / 'tiny.ckpt'} (3 of 4 characters from the source; 1 new; 94 of the "
        "source's characters this run cannot write)"
    )
    state, old = model.state_dict(), source.state_dict()
    for name in (
        "decoder.embedding.weight",
        "decoder.classifier.weight",
        "decoder.classifier.bias",
    ):
        assert state[name].shape[0] == len(run) and old[name].shape[0] == len(ascii_)
        for index in range(len(SPECIAL_TOKENS)):
            assert torch.equal(state[name][index], old[name][index]), name
        for char in "ab\n":
            assert torch.equal(state[name][run.encode(char)[0]], old[name][ascii_.encode(char)[0]])
        assert torch.equal(state[name][run.encode("é")[0]], fresh[name][run.encode("é")[0]])
    assert torch.equal(state["decoder.norm.weight"], old["decoder.norm.weight"])


MULTI48 = REPO_ROOT.parent / "shared" / "checkpoints" / "multi48" / "model.ckpt"


@pytest.mark.skipif(not MULTI48.is_file(), reason="../shared/checkpoints/multi48 is not here")
def test_the_multi48_checkpoint_warm_starts_a_latin_model() -> None:
    from quill.training.checkpoint import load_checkpoint

    latin = Tokenizer.named("latin")
    source = load_checkpoint(MULTI48)
    model = build_model(source.model_name, len(latin), **source.model_config)
    loaded = load_initial_weights(model, MULTI48, latin)
    assert loaded.endswith("(97 of 174 characters from the source; 77 new)")
    run, old = latin.encode("a")[0], source.tokenizer.encode("a")[0]
    assert torch.equal(model.classifier.weight[run], source.model.classifier.weight[old])


def test_missing_or_foreign_sources_are_clear_errors(tmp_path: Path) -> None:
    model = shipped_architecture()
    with pytest.raises(InitWeightsError, match="does not exist"):
        load_initial_weights(model, tmp_path / "nowhere.ckpt", Tokenizer())
    with pytest.raises(InitWeightsError, match="not a staged model"):
        load_initial_weights(model, tmp_path, Tokenizer())
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(b"PK\x03\x04 not a whole file")
    with pytest.raises(InitWeightsError, match="cannot read"):
        load_initial_weights(model, truncated, Tokenizer())
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": model.state_dict()}, foreign)
    with pytest.raises(InitWeightsError, match="not a Quill training checkpoint"):
        load_initial_weights(model, foreign, Tokenizer())
