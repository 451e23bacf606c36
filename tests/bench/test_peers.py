"""The peers, run for real when installed (skipped with the reason when not)."""

from __future__ import annotations

import pytest

from quill.bench.inputs import compose_paragraphs
from quill.bench.peers import INSTALL_HINT, PeerError, TesseractPeer, load_peer
from quill.bench.systems import SystemUnavailable
from quill.evaluation import score

from .conftest import LINES, render_line


def test_unknown_peer_names_the_known_ones() -> None:
    with pytest.raises(SystemUnavailable, match="known peers: tesseract, rapidocr"):
        load_peer("abbyy")


def test_missing_tesseract_program_says_how_to_install() -> None:
    with pytest.raises(SystemUnavailable) as caught:
        TesseractPeer(binary="no-such-tesseract-binary")
    assert INSTALL_HINT in str(caught.value)


def test_a_tesseract_that_does_not_run_is_unavailable_not_a_crash() -> None:
    with pytest.raises(SystemUnavailable, match="does not run"):
        TesseractPeer(binary="false")  # on PATH, exits 1 for every call


@pytest.mark.parametrize("peer_name", ["tesseract", "rapidocr"])
def test_peer_reads_printed_lines_of_both_polarities(peer_name: str, request) -> None:
    peer = request.getfixturevalue(peer_name)
    texts = peer.read([render_line(text, inverted) for text, _, inverted in LINES], "line")
    assert score(texts, [text for text, _, _ in LINES]).cer < 0.05, texts


@pytest.mark.parametrize("peer_name", ["tesseract", "rapidocr"])
def test_peer_reads_a_paragraph_as_lines(peer_name: str, request, printed_dataset) -> None:
    from quill.bench.datasets import load_dataset

    peer = request.getfixturevalue(peer_name)
    dark = [
        s for s in load_dataset(str(printed_dataset)).samples if s.slices["inverted"] == "False"
    ]
    paragraph = compose_paragraphs(dark, count=1, lines_per_paragraph=2)[0]
    (text,) = peer.read([paragraph.image], "paragraph")
    assert text.count("\n") == 1, text
    assert score([text], [paragraph.text]).cer < 0.1, text


def test_tesseract_failure_names_the_exit_status(tesseract) -> None:
    with pytest.raises(PeerError, match="tesseract exited"):
        tesseract.read([b"this is not an image"], "line")


def test_rapidocr_line_calls_never_inherit_detection(rapidocr) -> None:
    """RapidOCR remembers use_det from the previous call: a line read after a paragraph read
    must still skip detection (the wrapper passes every flag on every call)."""
    line = render_line("Kew Gardens, London")
    rapidocr.read([line], "paragraph")
    assert rapidocr._engine.use_det is True
    (text,) = rapidocr.read([line], "line")
    assert rapidocr._engine.use_det is False
    assert text == "Kew Gardens, London"


def test_descriptions_record_versions(tesseract, rapidocr) -> None:
    assert tesseract.describe()["version"].startswith("tesseract 5")
    assert tesseract.describe()["psm"] == "line=7, paragraph=6, page=6"
    assert rapidocr.describe()["recognizer"].startswith("PP-OCR")


@pytest.mark.parametrize("peer_name", ["tesseract", "rapidocr"])
def test_peer_reads_a_page_with_a_box_per_line(peer_name: str, request) -> None:
    from .test_pages import PAGE_LINES, compose_page

    peer = request.getfixturevalue(peer_name)
    image, boxes = compose_page(PAGE_LINES)
    reading = peer.read_page(image)
    assert score([reading.text], ["\n".join(PAGE_LINES)]).cer < 0.1, reading.text
    from quill.bench.detection import detect_score

    found = detect_score(reading.boxes, boxes)
    assert found.recall == 1.0 and found.precision == 1.0, (reading.lines, boxes)
