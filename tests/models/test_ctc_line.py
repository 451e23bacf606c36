"""CTCLineModel: shapes, output lengths, export parity (ONNX, TorchScript), memorization."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from quill.models import build_model
from quill.models.ctc_line import CTCLineConfig, CTCLineModel
from quill.models.decoding import ctc_greedy_decode
from quill.models.onnx_export import export_ctc_onnx
from quill.preprocess import batch_images, preprocess
from quill.staging.parity import render_line

from .conftest import targets_batch

TINY = {"channels": (8, 16, 16, 32), "hidden": 64}


@pytest.mark.parametrize("encoder", ["lstm", "transformer"])
def test_forward_shape_and_log_softmax(encoder):
    model = build_model("ctc_line", num_classes=30, encoder=encoder, **TINY).eval()
    with torch.no_grad():
        log_probs = model(torch.rand(3, 1, 64, 120))
    assert log_probs.shape == (3, 30, 30)  # T = 120 // 4
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(3, 30), atol=1e-5)


@pytest.mark.parametrize("width_pool_blocks", [2, 3])
def test_output_lengths_match_forward_for_every_width(width_pool_blocks):
    model = build_model(
        "ctc_line", num_classes=10, width_pool_blocks=width_pool_blocks, **TINY
    ).eval()
    widths = torch.tensor([8, 9, 15, 16, 17, 63, 100])
    expected = model.output_lengths(widths)
    with torch.no_grad():
        actual = [model(torch.rand(1, 1, 64, int(w))).shape[1] for w in widths]
    assert expected.tolist() == actual


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="height 60 is not divisible"):
        CTCLineModel(10, CTCLineConfig(height=60))
    with pytest.raises(ValueError, match=r"unknown CTCLineConfig field\(s\) \['hiden'\]"):
        build_model("ctc_line", num_classes=10, hiden=3)
    with pytest.raises(ValueError, match="encoder must be"):
        build_model("ctc_line", num_classes=10, encoder="gru")


def test_config_round_trips_through_json_types():
    model = build_model("ctc_line", num_classes=10, **TINY)
    as_json = model.config.to_dict()
    assert as_json["channels"] == [8, 16, 16, 32]
    assert build_model("ctc_line", num_classes=10, **as_json).config == model.config


def test_default_size_is_a_few_megabytes(tokenizer):
    model = build_model("ctc_line", num_classes=len(tokenizer))
    params = sum(p.numel() for p in model.parameters())
    assert 500_000 < params < 4_000_000


@pytest.mark.parametrize(
    "encoder",
    # The dynamo exporter (Transformer encoder) takes 15-60 s on a busy 2-core machine.
    ["lstm", pytest.param("transformer", marks=pytest.mark.slow)],
)
def test_onnx_export_matches_eager_with_dynamic_batch_and_width(tmp_path, encoder):
    model = build_model("ctc_line", num_classes=20, encoder=encoder, **TINY).eval()
    files = export_ctc_onnx(model, tmp_path / "model.onnx", height=64).files
    assert files[0].name == "model.onnx"
    session = ort.InferenceSession(str(files[0]), providers=["CPUExecutionProvider"])
    for shape in [(1, 1, 64, 40), (3, 1, 64, 200)]:
        images = torch.rand(*shape)
        with torch.no_grad():
            expected = model(images).numpy()
        (actual,) = session.run(None, {"images": images.numpy()})
        np.testing.assert_allclose(actual, expected, atol=1e-4)
        # The ONNX path decodes with NumPy alone, identically.
        onnx_decoded, eager_decoded = ctc_greedy_decode(actual), ctc_greedy_decode(expected)
        assert [ids for ids, _ in onnx_decoded] == [ids for ids, _ in eager_decoded]
        assert [c for _, c in onnx_decoded] == pytest.approx([c for _, c in eager_decoded])


def test_torchscript_matches_eager(tmp_path):
    model = build_model("ctc_line", num_classes=20, **TINY).eval()
    scripted = torch.jit.script(model)
    torch.jit.save(scripted, tmp_path / "model.pt")
    loaded = torch.jit.load(tmp_path / "model.pt")
    images = torch.rand(2, 1, 64, 72)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images))
    assert loaded.output_lengths(torch.tensor([72, 40])).tolist() == [18, 10]


@pytest.mark.parametrize(
    ("encoder", "steps"),
    [
        # measured over seeds 0-5: read right from step 20-120 (transformer) or 420-940 (lstm:
        # its all-blank plateau lasts longer); the fixture seeds 0 (20 and 420)
        ("transformer", 200),
        pytest.param("lstm", 1000, marks=pytest.mark.slow),
    ],
)
def test_memorizes_a_tiny_batch(tokenizer, encoder, steps):
    """Optimizer steps on one batch of two printed lines: the CTC loss falls and greedy
    decoding then reads both lines right: the model can learn."""
    texts = ["ab", "c"]
    model = build_model("ctc_line", num_classes=len(tokenizer), encoder=encoder, **TINY)
    batch, true_widths = batch_images([preprocess(render_line(text)) for text in texts])
    images, widths = torch.from_numpy(batch), torch.from_numpy(true_widths)
    targets, target_lengths = targets_batch(tokenizer, texts)
    frames = model.output_lengths(widths)
    loss_fn = nn.CTCLoss(blank=tokenizer.blank_id, zero_infinity=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        log_probs = model(images)  # (B, T, C)
        loss = loss_fn(log_probs.transpose(0, 1), targets, frames, target_lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    with torch.no_grad():
        decoded = ctc_greedy_decode(model(images), frames, blank=tokenizer.blank_id)
    assert [tokenizer.decode(ids) for ids, _ in decoded] == texts
