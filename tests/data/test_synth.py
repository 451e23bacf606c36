"""Synthetic handwriting: fonts, corpus, determinism, held-out fonts and the manifest."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from quill.data.manifest import DatasetExistsError, Manifest, file_sha256
from quill.data.synth import corpus as corpus_module
from quill.data.synth.fonts import FONTS, glyph_coverage, load_fonts
from quill.data.synth.generate import SynthConfig, generate, render_sample
from quill.vocab import Tokenizer

REPO = Path(__file__).resolve().parents[2]
VOCAB = Tokenizer().characters
#: Characters a font may lack (rare in the corpus); letters, digits and common punctuation
#: must all be there.
OPTIONAL = set("£`%~^{}|<>@\\[]_$*+=#")


@pytest.fixture(scope="module")
def lines(tmp_path_factory) -> Manifest:
    """40 synthetic lines, rendered once for the module in two worker processes."""
    return generate(tmp_path_factory.mktemp("synth") / "lines", "line", n=40, seed=3, workers=2)


def test_registry_is_installed_and_consistent():
    fonts, absent = load_fonts(VOCAB)
    assert not absent, f"run scripts/install_fonts.sh: missing {[s.name for s in absent]}"
    handwriting = [f for f in fonts if f.spec.style == "handwriting"]
    assert len(handwriting) >= 20
    assert len({f.name for f in fonts}) == len(fonts) == len(FONTS)
    for font in fonts:
        assert font.spec.licence and font.spec.family
        assert font.missing <= OPTIONAL, f"{font.name} lacks {sorted(font.missing - OPTIONAL)}"
        assert 0.2 < font.x_height < 0.9
    by_split = Counter((f.spec.split, f.spec.style) for f in fonts)
    for split in ("val", "test"):
        assert by_split[(split, "handwriting")] >= 3
        assert by_split[(split, "printed")] >= 1


def test_every_font_package_is_installed_by_the_setup_files():
    apt = (REPO / "requirements" / "apt.txt").read_text().split()
    npm = json.loads((REPO / "assets" / "fonts" / "package.json").read_text())["dependencies"]
    for spec in FONTS:
        if spec.source == "debian":
            assert spec.package in apt, spec.package
        else:
            assert spec.package in npm, spec.package
    assert "r-cran-janeaustenr" in apt


def test_glyph_coverage_reports_missing_characters():
    rufscript = next(s for s in FONTS if s.name == "rufscript")
    assert glyph_coverage(rufscript.path(), "ab£") == {"£"}
    assert glyph_coverage(rufscript.path(), "a b\nc") == frozenset()


def test_corpus_is_real_text_within_the_vocabulary():
    corpus = corpus_module.load_corpus()
    assert len(corpus.paragraphs) > 5000
    assert sum(len(p) for p in corpus.paragraphs) > 3_000_000
    assert any("It is a truth universally acknowledged" in p for p in corpus.paragraphs[:50])
    tokenizer = Tokenizer()
    rng = np.random.default_rng(0)
    for _ in range(200):
        line = corpus.line(rng)
        assert 10 <= len(line) <= 60 and not tokenizer.unknown_characters(line)
        assert "  " not in line and line == line.strip()
    # Austen wrote almost no digits; a share of lines carries an inserted number.
    with_digits = sum(any(c.isdigit() for c in corpus.line(rng)) for _ in range(300))
    assert 20 <= with_digits <= 90
    for _ in range(50):
        paragraph = corpus.paragraph(rng, lines=(3, 3))
        assert paragraph.count("\n") == 2
    assert all(len(line) <= 60 for line in paragraph.split("\n"))


def test_corpus_from_a_user_file(tmp_path):
    text = tmp_path / "book.txt"
    text.write_text(
        "CHAPTER I\n\nThe first paragraph of a small\nbook, long enough to cut.\n\n"
        "Une phrase en français, ignorée.\n",
        encoding="utf-8",
    )
    corpus = corpus_module.load_corpus(text)
    assert corpus.paragraphs == ["The first paragraph of a small book, long enough to cut."]
    assert corpus.dropped == 1
    with pytest.raises(corpus_module.CorpusError, match="not found"):
        corpus_module.load_corpus(tmp_path / "absent.txt")
    only_foreign = tmp_path / "foreign.txt"
    only_foreign.write_text("Ελληνικά κείμενα μόνο εδώ.\n", encoding="utf-8")
    with pytest.raises(corpus_module.CorpusError, match="no paragraph"):
        corpus_module.load_corpus(only_foreign)


def test_same_seed_same_dataset_whatever_the_workers(lines, tmp_path):
    again = generate(tmp_path / "again", "line", n=12, seed=3, workers=1)
    first_twelve = lines.samples[:12]
    assert [s.sha256 for s in again] == [s.sha256 for s in first_twelve]
    assert [s.text for s in again] == [s.text for s in first_twelve]
    other = generate(tmp_path / "other", "line", n=12, seed=4, workers=1)
    assert [s.sha256 for s in other] != [s.sha256 for s in again]


def test_held_out_fonts_never_train(lines):
    split_of = {spec.name: spec.split for spec in FONTS}
    for sample in lines:
        assert split_of[sample.group] == sample.split
    assert {s.split for s in lines} == {"train", "val", "test"}
    # A bigger draw of labels only (rendering skipped) still never crosses splits.
    config = SynthConfig()
    drawn = [render_sample(i, 11, config) for i in range(30)]
    assert all(split_of[d.meta["font"]] == d.split for d in drawn)


def test_manifest_is_valid_and_labels_are_in_vocabulary(lines):
    loaded = Manifest.load(lines.root)
    assert loaded.version == lines.version and len(loaded) == 40
    tokenizer = Tokenizer()
    for sample in loaded:
        assert sample.source == "synthetic" and sample.kind == "line"
        assert not tokenizer.unknown_characters(sample.text) and sample.text.strip()
        path = loaded.path_of(sample)
        assert file_sha256(path) == sample.sha256
        with Image.open(path) as image:
            assert image.mode == "RGB"
            assert image.size == (sample.meta["width"], sample.meta["height"])
            assert 24 <= image.height <= 200 and image.width > image.height
    info = json.loads((lines.root / "synth.json").read_text())
    assert info["version"] == lines.version and info["seed"] == 3
    assert "Austen" in info["corpus"]["source"]
    assert sum(f["samples"] for f in info["fonts"]) == 40


def test_ink_is_visible_in_both_polarities(lines):
    """Every image has contrast between ink and paper, inverted or not."""
    for sample in lines:
        gray = np.asarray(Image.open(lines.path_of(sample)).convert("L"), dtype=np.float32)
        assert np.percentile(gray, 99) - np.percentile(gray, 1) > 40, sample.image


def test_paragraphs(tmp_path):
    manifest = generate(tmp_path / "para", "paragraph", n=2, seed=0, workers=1)
    assert len(manifest) == 2
    for sample in manifest:
        assert sample.kind == "paragraph" and "\n" in sample.text
        with Image.open(manifest.path_of(sample)) as image:
            assert image.height > 80


def test_refuses_to_overwrite_unless_asked(lines, tmp_path):
    target = tmp_path / "twice"
    generate(target, "line", n=2, seed=0, workers=1)
    with pytest.raises(DatasetExistsError, match="already holds a dataset"):
        generate(target, "line", n=2, seed=0, workers=1)
    replaced = generate(target, "line", n=3, seed=1, workers=1, overwrite=True)
    assert len(Manifest.load(target)) == 3 == len(list((target / "images").iterdir()))
    assert replaced.version == Manifest.load(target).version


def test_partial_font_install_still_generates_and_says_what_is_missing(tmp_path, monkeypatch):
    """Without the npm fonts (an empty font dir) the Debian fonts still cover every split."""
    (tmp_path / "no-fonts").mkdir()
    monkeypatch.setenv("QUILL_FONT_DIR", str(tmp_path / "no-fonts"))
    manifest = generate(tmp_path / "debian-only", "line", n=3, seed=0, workers=1)
    info = json.loads((manifest.root / "synth.json").read_text())
    npm_fonts = {spec.name for spec in FONTS if spec.source == "npm"}
    assert set(info["fonts_not_installed"]) == npm_fonts
    assert not {s.group for s in manifest} & npm_fonts
