"""The shipped default (the multiwriter) reads French with its French language model and
Hooker's English pages with its main one, and says which it used."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from quill.evaluation import corpus_cer
from quill.inference.recognizer import Recognizer

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="module")
def multiwriter() -> Recognizer:
    return Recognizer.from_path(REPO / "models" / "default", backend="onnx", threads=1)


def test_french_lines_are_read_with_the_french_lm_and_an_english_page_with_the_main_one(
    multiwriter: Recognizer,
) -> None:
    labels = SHARED / "copiste" / "labels.tsv"
    page = SHARED / "hooker-letters" / "pages" / "JDH_2_16_146_001.jpg"
    if not labels.is_file() or not page.is_file():
        pytest.skip(f"the shared datasets are not at {SHARED}")
    with labels.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))[:8]
    french = multiwriter.predict([str(labels.parent / row["file"]) for row in rows], kind="line")
    assert sum(p.language == "fr" for p in french) >= 7
    assert corpus_cer([p.text for p in french], [row["text"] for row in rows]) < 0.25
    [english] = multiwriter.predict([str(page)], kind="auto")
    assert english.language is None and len(english.lines) >= 15
    assert "My dear Dyer" in english.text
