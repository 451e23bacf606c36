"""``quill monitor feedback-dataset``: one sample per image, labelled by its latest
correction, when the same photo was sent and corrected more than once."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from quill.cli import app
from quill.data.manifest import Manifest, Sample
from quill.monitoring.records import PredictionRecord, utcnow
from quill.monitoring.store import MonitoringStore


def feedback_dataset(tmp_path: Path, url: str) -> tuple[Manifest, dict]:
    out = tmp_path / "feedback"
    args = ["monitor", "feedback-dataset", "--out", str(out), "--url", url]
    result = CliRunner().invoke(app, [*args, "--images", str(tmp_path / "images")])
    assert result.exit_code == 0, result.output
    return Manifest.load(out), json.loads((out / "import-report.json").read_text())


def test_one_photo_corrected_twice_is_one_sample_with_the_latest_correction(tmp_path, make_line):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    store = MonitoringStore(url, image_dir=tmp_path / "images")
    photo, other = make_line("Correct text", seed=1), make_line("Other line", seed=2)
    now = utcnow()
    # The same photo sent as a, b and c; another photo as d.
    for rid, image, hours in (("a", photo, 4), ("b", photo, 3), ("c", photo, 2), ("d", other, 1)):
        when = now - timedelta(hours=hours)
        store.log_prediction(
            PredictionRecord(rid, "api", "m-1", image, "Corect txt", 0.5, 10.0, timestamp=when)
        )
    store.add_feedback("a", "incorrect", correction="Correct text one")
    store.add_feedback("c", "incorrect", correction="first reading")
    store.add_feedback("b", "incorrect", correction="again correction")  # typed last
    store.add_feedback("d", "incorrect", correction="Other line")
    store.close()

    manifest, report = feedback_dataset(tmp_path, url)
    texts = {s.meta["request_id"]: s.text for s in manifest}
    # b was sent before c, but its correction was typed last: the user's last word.
    assert texts == {"b": "again correction", "d": "Other line"}
    assert len({s.sha256 for s in manifest}) == 2
    skipped = {s["where"]: s["reason"] for s in report["skipped"]}
    assert skipped == {
        "request a": "image corrected again later, in b",
        "request c": "image corrected again later, in b",
    }


def test_typed_corrections_are_normalised_as_scoring_normalises_them(tmp_path, make_line):
    """A tab was reported as a character outside the vocabulary and the sample dropped; an
    accent typed as two code points (e + U+0301) likewise."""
    url = f"sqlite:///{tmp_path / 'm.db'}"
    store = MonitoringStore(url, image_dir=tmp_path / "images")
    corrections = {"tab": "Dear\tSir,  yours", "accent": "cafe\u0301 noir"}
    for seed, (rid, correction) in enumerate(corrections.items()):
        image = make_line(correction, seed=seed)
        store.log_prediction(PredictionRecord(rid, "api", "m-1", image, "x", 0.5, 10.0))
        store.add_feedback(rid, "incorrect", correction=correction)
    store.close()
    out = tmp_path / "feedback"
    args = ["monitor", "feedback-dataset", "--out", str(out), "--url", url]  # latin: the default
    result = CliRunner().invoke(app, [*args, "--images", str(tmp_path / "images")])
    assert result.exit_code == 0, result.output
    texts = {s.meta["request_id"]: s.text for s in Manifest.load(out)}
    assert texts == {"tab": "Dear Sir, yours", "accent": "caf\u00e9 noir"}


def composed_page(words: list[str], render_word) -> bytes:
    """A page of one rendered word per line, well apart (PNG)."""
    import io

    page = Image.new("L", (700, 130 * len(words) + 60), 255)
    for row, word in enumerate(words):
        page.paste(render_word(word, seed=row).resize((480, 72)), (90, 50 + 130 * row))
    encoded = io.BytesIO()
    page.save(encoded, "PNG")
    return encoded.getvalue()


def test_a_page_corrected_line_by_line_gives_a_sample_per_line(tmp_path, smoke_model, render_word):
    """A corrected page was one paragraph sample, which `quill adapt` and a line model
    leave out: people photograph pages, so their corrections taught nothing. Each line the
    model found now comes with its corrected text too (the page sample stays); a
    correction whose lines do not pair up with the lines found is said in the report."""
    from quill.inference.recognizer import Recognizer
    from quill.models.segment import segment_lines
    from quill.preprocess import load_image

    recognizer = Recognizer.from_path(smoke_model, backend="onnx", threads=1)
    url = f"sqlite:///{tmp_path / 'm.db'}"
    store = MonitoringStore(url, image_dir=tmp_path / "images")
    pages = {
        "three": composed_page(["hello", "quill", "ink"], render_word),
        "two": composed_page(["Kew", "ink"], render_word),
    }
    for rid, image in pages.items():
        answer = recognizer.predict([image])[0]
        record = PredictionRecord(
            rid, "app", "m-1", image, answer.text, 0.5, 10.0, lines=list(answer.lines)
        )
        store.log_prediction(record)
    other = composed_page(["hello", "Kew"], render_word)
    learned = [{"text": "x", "box": [10, 20, 410, 100]}, {"text": "y", "box": [10, 150, 400, 230]}]
    store.log_prediction(
        PredictionRecord("boxes", "app", "m-1", other, "x\ny", 0.5, 10.0, lines=learned)
    )
    store.add_feedback("boxes", "incorrect", correction="Kew\nink")
    assert len(store.get_prediction("three").lines) == 3
    store.add_feedback("three", "incorrect", correction="Hello\nquill pen\nink")
    store.add_feedback("two", "incorrect", correction="Kew ink")  # typed on one line
    store.close()

    manifest, report = feedback_dataset(tmp_path, url)
    samples = {(s.meta["request_id"], s.meta.get("line")): s for s in manifest}
    assert {key: s.kind for key, s in samples.items()} == {
        ("three", None): "paragraph",
        ("three", 1): "line",
        ("three", 2): "line",
        ("three", 3): "line",
        ("two", None): "paragraph",  # a page typed on one line: no line image
        ("boxes", None): "paragraph",
        ("boxes", 1): "line",
        ("boxes", 2): "line",
    }
    lines = [samples["three", n] for n in (1, 2, 3)]
    assert [s.text for s in lines] == ["Hello", "quill pen", "ink"]
    assert len({s.split for s in samples.values() if s.meta["request_id"] == "three"}) == 1
    # each line is the segmenter's own straightened cut of the page, at full resolution
    cuts = segment_lines(load_image(pages["three"]))
    for sample, cut in zip(lines, cuts, strict=True):
        assert tuple(sample.meta["box"]) == cut.box
        assert Image.open(manifest.path_of(sample)).size == cut.image.size
    # lines found another way (the learned segmenter): each is cut by its box
    cut = [samples["boxes", n] for n in (1, 2)]
    assert [tuple(s.meta["box"]) for s in cut] == [(10, 20, 410, 100), (10, 150, 400, 230)]
    assert [Image.open(manifest.path_of(s)).size for s in cut] == [(400, 80), (390, 80)]
    skipped = {s["where"]: s["reason"] for s in report["skipped"]}
    assert skipped == {
        "request two (its lines)": "the correction has 1 lines and the model found 2: kept "
        "as a page sample only (correct a page line by line to get line samples)"
    }


def _store_with_corrections(tmp_path: Path, make_line, texts: dict[str, str]) -> list[str]:
    """A store at tmp_path/m.db holding one corrected photo per request id; its CLI args."""
    url = f"sqlite:///{tmp_path / 'm.db'}"
    store = MonitoringStore(url, image_dir=tmp_path / "images")
    for seed, (rid, text) in enumerate(texts.items()):
        record = PredictionRecord(rid, "api", "m-1", make_line(text, seed=seed), "x", 0.5, 9.0)
        store.log_prediction(record)
        store.add_feedback(rid, "incorrect", correction=text)
    store.close()
    return ["--url", url, "--images", str(tmp_path / "images")]


def _annotated_dataset(root: Path, make_line) -> dict[str, bytes]:
    """A dataset folder as `quill annotate import` writes one; its files and their bytes."""
    (root / "images").mkdir(parents=True)
    image = root / "images" / "t1-l01.png"
    image.write_bytes(make_line("Annotated line", seed=9))
    sample = Sample("images/t1-l01.png", "Annotated line", "train", "labelstudio", "ab", "ls:1")
    Manifest(root, [sample]).save()
    return _files(root)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _feedback_dataset(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["monitor", "feedback-dataset", *(str(a) for a in args)])
    return result.exit_code, result.output


def test_a_dataset_in_out_is_replaced_only_with_overwrite(tmp_path, make_line):
    """--out an annotation dataset lost its samples: the folder was written over unasked."""
    store = _store_with_corrections(tmp_path, make_line, {"r1": "Dear Sir"})
    out = tmp_path / "annotated"
    before = _annotated_dataset(out, make_line)
    code, output = _feedback_dataset("--out", out, *store)
    assert code == 2, output
    assert output == f"error: {out} already holds a dataset: use --overwrite to replace it\n"
    assert _files(out) == before

    code, output = _feedback_dataset("--out", out, "--overwrite", *store)
    assert code == 0, output
    assert [s.meta["request_id"] for s in Manifest.load(out)] == ["r1"]
    assert sorted(_files(out)) == ["images/r1.png", "import-report.json", "manifest.jsonl"]


def test_nothing_to_write_leaves_the_dataset_as_it_was(tmp_path, make_line):
    """Once retention had purged the images, a rebuild replaced the manifest with an empty
    one (and exited 1): the dataset was gone."""
    store = _store_with_corrections(tmp_path, make_line, {"r1": "Dear Sir", "r2": "Kew"})
    out = tmp_path / "feedback"
    code, output = _feedback_dataset("--out", out, *store)
    assert code == 0, output
    before = _files(out)
    purged = CliRunner().invoke(app, ["monitor", "purge", "--images-older-than", "0", *store])
    assert purged.exit_code == 0, purged.output
    code, output = _feedback_dataset("--out", out, "--overwrite", *store)
    assert code == 1, output
    assert "request r1: image not retained" in output
    assert output.endswith(f"error: no sample to write: the dataset {out} is left as it was\n")
    assert _files(out) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no scratch


def test_the_out_folder_cannot_be_merged_into_itself(tmp_path, make_line):
    """--merge X --out X read X's samples while X was being replaced: they were lost."""
    store = _store_with_corrections(tmp_path, make_line, {"r1": "Dear Sir"})
    out = tmp_path / "annotated"
    before = _annotated_dataset(out, make_line)
    for merge in (out, tmp_path / "." / "annotated"):
        code, output = _feedback_dataset("--out", out, "--merge", merge, "--overwrite", *store)
        assert code == 2, output
        assert "is the --out folder" in output
    assert _files(out) == before


def test_a_rebuilt_dataset_holds_only_the_images_its_manifest_names(tmp_path, make_line):
    """After `quill monitor delete --request-id r1` a rebuilt dataset no longer listed r1,
    but images/r1.png, the deleted user's photo, stayed in its folder."""
    store = _store_with_corrections(tmp_path, make_line, {"r1": "Dear Sir", "r2": "Kew"})
    out = tmp_path / "feedback"
    code, output = _feedback_dataset("--out", out, *store)
    assert code == 0, output
    assert (out / "images" / "r1.png").is_file()
    deleted = CliRunner().invoke(app, ["monitor", "delete", "--request-id", "r1", *store])
    assert deleted.exit_code == 0, deleted.output
    code, output = _feedback_dataset("--out", out, "--overwrite", *store)
    assert code == 0, output
    manifest = Manifest.load(out)
    assert [s.meta["request_id"] for s in manifest] == ["r2"]
    named = {s.image for s in manifest}
    assert {f for f in _files(out) if f.startswith("images/")} == named == {"images/r2.png"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no scratch
