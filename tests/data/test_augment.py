"""Augmentation: reproducible, keeps the writing readable after preprocessing, bounded cost."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from quill.data.augment import AugmentConfig, Augmenter
from quill.errors import ConfigError
from quill.preprocess import PreprocessConfig, preprocess

from .conftest import draw_page

NOTHING = AugmentConfig(
    **{k: 0.0 for k, v in AugmentConfig().to_dict().items() if isinstance(v, float)}
)


def _line() -> Image.Image:
    image, _ = draw_page(["Augment me, please"], size=(320, 60), origin=(10, 10))
    return image


def test_same_generator_seed_same_result_and_seeds_differ():
    augment = Augmenter()
    a = augment(_line(), np.random.default_rng(7))
    b = augment(_line(), np.random.default_rng(7))
    assert np.array_equal(np.asarray(a), np.asarray(b))
    others = [np.asarray(augment(_line(), np.random.default_rng(s))) for s in range(4)]
    assert any(o.shape != others[0].shape or not np.array_equal(o, others[0]) for o in others)


def test_writing_survives_every_augmentation():
    """Each distortion at full probability still leaves one line of ink the model can read."""
    original = preprocess(_line())
    ink = float(original.sum())
    for name in ("slant", "rotate", "elastic", "baseline_wave", "stroke_width", "perspective",
                 "recolour", "invert", "contrast", "downscale", "blur", "noise"):  # fmt: skip
        augment = Augmenter(AugmentConfig(**{**NOTHING.to_dict(), name: 1.0}))
        for seed in range(3):
            out = preprocess(augment(_line(), np.random.default_rng(seed)))
            assert out.shape[0] == 64
            assert 0.4 * ink < float(out.sum()) < 2.5 * ink, (name, seed)


def test_inverted_recoloured_image_preprocesses_like_the_original():
    augment = Augmenter(AugmentConfig(**{**NOTHING.to_dict(), "recolour": 1.0, "invert": 1.0}))
    changed = augment(_line(), np.random.default_rng(0))
    assert np.asarray(changed).mean() < 128  # light ink on dark paper now
    a, b = preprocess(_line()), preprocess(changed)
    width = min(a.shape[1], b.shape[1])
    assert np.corrcoef(a[:, :width].ravel(), b[:, :width].ravel())[0, 1] > 0.7


def test_disabled_augmentation_is_identity_and_large_images_are_shrunk_first():
    image = _line()
    same = Augmenter(NOTHING)(image, np.random.default_rng(0))
    assert np.array_equal(np.asarray(same.convert("L")), np.asarray(image))
    big = image.resize((3200, 600))
    small = Augmenter(NOTHING, PreprocessConfig(height=64))(big, np.random.default_rng(0))
    assert small.height == 96 and small.width == 512


def test_from_dict_round_trips_and_refuses_unknown_keys():
    config = AugmentConfig(invert=0.9, blur_sigma=(0.1, 0.4))
    assert AugmentConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError, match=r"'invret' \(did you mean 'invert'\?\); allowed: slant"):
        AugmentConfig.from_dict({"invret": 0.5})
    with pytest.raises(ValueError, match="data.augment: unknown key 'hieght'"):
        AugmentConfig.from_dict({"hieght": 48}, where="data.augment")
