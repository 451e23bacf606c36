"""Seq2seq models and their decoding: causal masks, KV cache == recomputation, early stop,
beam search against exhaustive search, memorization."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from quill.models import build_model
from quill.models.generation import greedy_uncached, token_log_probs
from quill.vocab import Tokenizer

from .conftest import targets_batch

PAD_ID, BOS_ID, EOS_ID = Tokenizer.pad_id, Tokenizer.bos_id, Tokenizer.eos_id

TINY_DECODER = {"dim": 32, "heads": 4, "decoder_layers": 2, "ff_dim": 64, "dropout": 0.0}
TINY = {
    "line_cnn_transformer": {"channels": (8, 8, 16, 16), **TINY_DECODER},
    "resnet_transformer": {"resnet_blocks": (1, 1), "resnet_widths": (8, 16), **TINY_DECODER},
}
IMAGE_SHAPE = {"line_cnn_transformer": (1, 64, 96), "resnet_transformer": (1, 64, 80)}
NAMES = list(TINY)


def tiny(name: str, num_classes: int = 12):
    return build_model(name, num_classes=num_classes, **TINY[name]).eval()


def images(name: str, batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, *IMAGE_SHAPE[name])


@pytest.mark.parametrize("name", NAMES)
def test_forward_shape(name):
    model = tiny(name)
    logits = model(images(name, 3), torch.randint(0, 12, (3, 7)))
    assert logits.shape == (3, 7, 12)


@pytest.mark.parametrize("name", NAMES)
def test_self_attention_is_causal(name):
    """Changing later tokens must not change the logits of earlier positions."""
    model = tiny(name)
    x = images(name)
    tokens = torch.randint(3, 12, (2, 6))
    changed = tokens.clone()
    changed[:, 4:] = torch.randint(3, 12, (2, 2))
    with torch.no_grad():
        before, after = model(x, tokens), model(x, changed)
    torch.testing.assert_close(before[:, :4], after[:, :4])
    assert not torch.allclose(before[:, 4:], after[:, 4:])


@pytest.mark.parametrize("name", NAMES)
def test_cached_greedy_equals_full_recomputation(name):
    model = tiny(name, num_classes=40)
    with torch.no_grad():
        memory = model.encode(images(name, 3))
        cached_ids, cached_conf = model.decoder.generate_greedy(memory, max_length=25)
        full_ids, full_conf = greedy_uncached(model.decoder, memory, max_length=25)
    assert torch.equal(cached_ids, full_ids)
    torch.testing.assert_close(cached_conf, full_conf)


def test_cached_step_logits_equal_teacher_forced_logits():
    model = tiny("line_cnn_transformer", num_classes=40)
    tokens = torch.randint(3, 40, (2, 9))
    with torch.no_grad():
        memory = model.encode(images("line_cnn_transformer"))
        expected = model.decoder(tokens, memory)  # (B, L, C)
        cache = model.decoder.init_cache(memory)
        steps = []
        for t in range(tokens.shape[1]):
            logits, cache = model.decoder.step(tokens[:, t : t + 1], cache)
            steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, dim=1), expected, atol=1e-5, rtol=1e-5)
    assert cache.self_keys.shape == (2, 2, 4, 9, 8)  # (layers, B, heads, t, head_dim)


def test_generate_stops_as_soon_as_every_sequence_ended():
    model = tiny("line_cnn_transformer")
    with torch.no_grad():
        model.decoder.classifier.bias[EOS_ID] = 50.0  # EOS first, always
    calls = 0
    real_step = model.decoder.step

    def counting_step(*args):
        nonlocal calls
        calls += 1
        return real_step(*args)

    model.decoder.step = counting_step
    ids, confidence = model.generate(images("line_cnn_transformer"), max_length=50)
    assert calls == 1
    assert ids.tolist() == [[EOS_ID], [EOS_ID]]
    assert torch.all(confidence > 0.99)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_rows_end_at_eos_and_are_padded(beam_size):
    model = tiny("line_cnn_transformer", num_classes=5)
    ids, confidence = model.generate(images("line_cnn_transformer", 6), 40, beam_size)
    assert ids.shape[0] == 6 and ids.shape[1] <= 40
    assert not torch.any(ids == BOS_ID)
    assert torch.all((confidence > 0) & (confidence <= 1))
    for row in ids.tolist():
        end = row.index(EOS_ID) if EOS_ID in row else len(row)
        assert PAD_ID not in row[:end]  # PAD is never emitted, only pads
        assert all(token == PAD_ID for token in row[end + 1 :])
    if ids.shape[1] < 40:  # stopped early: then every row has ended
        assert all(EOS_ID in row for row in ids.tolist())


def test_beam_size_one_is_greedy():
    model = tiny("resnet_transformer", num_classes=30)
    x = images("resnet_transformer", 3)
    greedy = model.generate(x, max_length=12)
    beam = model.generate(x, max_length=12, beam_size=1)
    assert torch.equal(greedy[0], beam[0])


def sequence_scores(model, image, sequences):
    """Mean log-probability of each candidate output, by teacher forcing (brute force)."""
    scores = []
    for sequence in sequences:
        tokens = torch.tensor([[Tokenizer.bos_id, *sequence[:-1]]])
        with torch.no_grad():
            log_probs = token_log_probs(model(image, tokens), PAD_ID, BOS_ID)[0]
        total = sum(log_probs[t, token].item() for t, token in enumerate(sequence))
        scores.append(total / len(sequence))
    return scores


def test_wide_beam_search_is_exhaustive_search():
    """With a beam wider than the hypothesis space, beam search must return the sequence
    of best mean log-probability among all that end in EOS or reach max_length."""
    classes, max_length = 6, 3
    model = tiny("line_cnn_transformer", num_classes=classes)
    image = images("line_cnn_transformer", 1)
    candidates = []
    for length in range(1, max_length + 1):
        for sequence in itertools.product(range(EOS_ID, classes), repeat=length):
            ends = sequence[-1] == EOS_ID or length == max_length
            if ends and EOS_ID not in sequence[:-1]:
                candidates.append(list(sequence))
    scores = sequence_scores(model, image, candidates)
    best = max(range(len(candidates)), key=scores.__getitem__)
    ids, confidence = model.generate(image, max_length, beam_size=len(candidates))
    assert ids[0].tolist() == candidates[best] + [PAD_ID] * (ids.shape[1] - len(candidates[best]))
    assert confidence.item() == pytest.approx(torch.tensor(scores[best]).exp().item(), rel=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_torchscript_generate_matches_eager(name, tmp_path):
    model = tiny(name, num_classes=20)
    torch.jit.save(torch.jit.script(model), tmp_path / "model.pt")
    loaded = torch.jit.load(tmp_path / "model.pt")
    x = images(name)
    for beam_size in (1, 3):
        eager_ids, eager_conf = model.generate(x, 12, beam_size)
        script_ids, script_conf = loaded.generate(x, 12, beam_size)
        assert torch.equal(script_ids, eager_ids)
        torch.testing.assert_close(script_conf, eager_conf)


@pytest.mark.parametrize("name", NAMES)
def test_two_configurations_of_one_class_script_in_one_process(name):
    """The decoding loops are decoder methods, compiled per module type: a second, differently
    sized decoder must not meet a loop compiled for the first."""
    wider = {**TINY[name], "dim": 48, "decoder_layers": 1, "ff_dim": 96}
    for model in (tiny(name), build_model(name, num_classes=12, **wider).eval()):
        scripted = torch.jit.script(model)
        x = images(name)
        assert torch.equal(scripted.generate(x, 8, 2)[0], model.generate(x, 8, 2)[0])


def test_generate_defaults_to_config_limit_and_may_exceed_it():
    model = build_model(
        "line_cnn_transformer", 12, **TINY["line_cnn_transformer"], max_output_length=4
    )
    with torch.no_grad():
        model.eval().decoder.classifier.bias[EOS_ID] = -1e4  # never ends by itself
    assert model.generate(images("line_cnn_transformer"))[0].shape == (2, 4)
    assert model.generate(images("line_cnn_transformer"), max_length=30)[0].shape == (2, 30)


def test_beam_size_must_be_positive():
    with pytest.raises(ValueError, match="beam_size must be at least 1"):
        tiny("line_cnn_transformer").generate(images("line_cnn_transformer"), 5, beam_size=0)


@pytest.mark.parametrize("name", NAMES)
def test_memorizes_a_tiny_batch(name, tokenizer):
    model = build_model(name, num_classes=len(tokenizer), **TINY[name]).train()
    x = images(name)
    targets, lengths = targets_batch(tokenizer, ["ab\ncd", "x y"])
    bos = torch.full((2, 1), tokenizer.bos_id)
    decoder_input = torch.cat([bos, targets], dim=1)  # [BOS, y...]
    expected = torch.cat([targets, torch.zeros(2, 1, dtype=torch.long)], dim=1)
    expected[torch.arange(2), lengths] = tokenizer.eos_id  # [y..., EOS, PAD...]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        logits = model(x, decoder_input)
        loss = F.cross_entropy(logits.transpose(1, 2), expected, ignore_index=tokenizer.pad_id)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    model.eval()
    ids, _ = model.generate(x, max_length=10)
    assert [tokenizer.decode(row) for row in ids.tolist()] == ["ab\ncd", "x y"]


def test_numpy_greedy_loop_matches_torch_generate():
    """The NumPy loop used with ONNX graphs, driven here by the torch step, == generate."""
    from quill.models.decoding import seq2seq_greedy_decode
    from quill.models.transformer_decoder import DecoderCache

    model = tiny("line_cnn_transformer", num_classes=8)
    x = images("line_cnn_transformer", 4)
    with torch.no_grad():
        cache = model.decoder.init_cache(model.encode(x))

    def run_step(tokens, self_keys, self_values):
        state = DecoderCache(
            torch.from_numpy(self_keys),
            torch.from_numpy(self_values),
            cache.cross_keys,
            cache.cross_values,
        )
        with torch.no_grad():
            logits, state = model.decoder.step(torch.from_numpy(tokens), state)
        return logits.numpy(), state.self_keys.numpy(), state.self_values.numpy()

    decoded = seq2seq_greedy_decode(run_step, cache.cross_keys.numpy(), max_length=20)
    ids, confidence = model.generate(x, max_length=20)
    for (numpy_ids, numpy_conf), row, conf in zip(decoded, ids.tolist(), confidence, strict=True):
        assert numpy_ids == row[: len(numpy_ids)]
        assert all(t == PAD_ID for t in row[len(numpy_ids) :])
        assert numpy_conf == pytest.approx(float(conf), rel=1e-4)


@pytest.mark.slow
def test_onnx_encoder_and_step_graphs_decode_like_torch(tmp_path):
    """Exported encoder + cached step graph, looped in NumPy, == torch greedy generation."""
    import numpy as np
    import onnxruntime as ort

    from quill.models.decoding import seq2seq_greedy_decode
    from quill.models.onnx_export import export_seq2seq_onnx

    model = tiny("line_cnn_transformer", num_classes=20)
    files = export_seq2seq_onnx(model, tmp_path, images("line_cnn_transformer"), optimize=False)
    assert {f.name for f in files} >= {"encoder.onnx", "decoder_step.onnx"}
    encoder = ort.InferenceSession(str(tmp_path / "encoder.onnx"))
    step = ort.InferenceSession(str(tmp_path / "decoder_step.onnx"))
    x = torch.rand(3, 1, 64, 152)  # another batch size and width than exported with
    cross_keys, cross_values = encoder.run(None, {"images": x.numpy()})

    def run_step(tokens, self_keys, self_values):
        feeds = {"tokens": tokens, "self_keys": self_keys, "self_values": self_values}
        return step.run(None, {**feeds, "cross_keys": cross_keys, "cross_values": cross_values})

    decoded = seq2seq_greedy_decode(run_step, cross_keys, max_length=15)
    ids, confidence = model.generate(x, max_length=15)
    for (onnx_ids, onnx_conf), row, conf in zip(decoded, ids.tolist(), confidence, strict=True):
        assert onnx_ids == row[: len(onnx_ids)] and all(t == PAD_ID for t in row[len(onnx_ids) :])
        assert onnx_conf == pytest.approx(float(conf), rel=1e-4)
    assert np.isfinite([c for _, c in decoded]).all()
