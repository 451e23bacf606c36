"""The monitoring store on SQLite and on a real Postgres server."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import inspect, text

from quill.monitoring import projections as proj
from quill.monitoring.async_logger import AsyncPredictionLogger
from quill.monitoring.predictions import UnknownRequestError
from quill.monitoring.records import PredictionRecord, ShadowRecord, utcnow
from quill.monitoring.schema import Base
from quill.monitoring.store import MonitoringStore
from quill.preprocess import read_image


def _log(store: MonitoringStore, request_id: str, image: bytes | None, text: str = "hello", **kw):
    store.log_prediction(PredictionRecord(request_id, "api", "m-1", image, text, 0.9, 12.5, **kw))


def test_prediction_round_trip_with_image_by_hash(store, make_line):
    image = make_line("Kew, 4 May 1860")
    lines = [{"text": "Kew, 4 May 1860", "confidence": 0.8, "box": [0, 0, 320, 48]}]
    _log(store, "r1", image, "Kew, 4 May 1860", lines=lines)

    got = store.get_prediction("r1")
    assert got is not None
    assert (got.client, got.model_version, got.text) == ("api", "m-1", "Kew, 4 May 1860")
    assert got.lines == lines
    assert got.image_ext == "png"
    # The image is a file named by its hash, byte-identical, and not in the database.
    location = Path(store.image_location(got))
    assert location.name == f"{got.image_sha256}.png"
    assert location.read_bytes() == image == store.image_bytes(got)
    columns = {c["name"] for c in inspect(store.engine).get_columns("predictions")}
    assert not columns & {"image", "image_bytes", "data"}
    # Projections were computed on write, inputs and outputs.
    assert set(got.projections) == set(proj.REGISTRY)
    assert got.projections["width"] == 320
    assert got.projections["polarity"] == 1.0
    assert got.projections["confidence"] == pytest.approx(0.9)


def test_same_image_is_stored_once_and_request_ids_are_unique(store, make_line, caplog):
    image = make_line()
    _log(store, "a", image)
    _log(store, "b", image)
    _log(store, "a", image, text="a retry")  # a retried write must not duplicate
    assert [p.request_id for p in store.predictions()] == ["a", "b"]
    assert store.get_prediction("a").text == "hello"
    assert len(list(Path(store.images.root).rglob("*.png"))) == 1
    assert "already stored" in caplog.text


def test_feedback_attaches_latest_flag_and_correction(store, make_line):
    _log(store, "r1", make_line(), "Dcar Sir")
    store.add_feedback("r1", "incorrect", comment="first word wrong")
    store.add_feedback("r1", None, correction="Dear Sir")
    got = store.get_prediction("r1")
    assert (got.flag, got.correction, got.comment) == ("incorrect", "Dear Sir", "first word wrong")
    assert [p.request_id for p in store.predictions(flagged=True)] == ["r1"]


def test_feedback_errors_name_the_problem(store):
    with pytest.raises(ValueError, match="flag must be one of"):
        store.add_feedback("r1", "wrong")
    with pytest.raises(ValueError, match="needs a flag"):
        store.add_feedback("r1", None)
    with pytest.raises(UnknownRequestError):
        store.add_feedback("nope", "other", strict=True)
    # Not strict: kept, because the prediction may still be queued.
    store.add_feedback("later", "offensive")
    _log(store, "later", None)
    assert store.get_prediction("later").flag == "offensive"


def test_without_image_retention_only_projections_are_kept(store_url, tmp_path, make_line):
    store = MonitoringStore(store_url, image_dir=tmp_path / "images", retain_images=False)
    _log(store, "r1", make_line(dark_on_light=False))
    got = store.get_prediction("r1")
    assert got.image_sha256 is None and store.image_bytes(got) is None
    assert not (tmp_path / "images").exists()
    assert got.projections["polarity"] == 0.0
    store.close()


def test_delete_request_erases_rows_and_unshared_images(store, make_line):
    shared, own = make_line("shared"), make_line("own")
    _log(store, "keep", shared)
    _log(store, "gone", shared)
    _log(store, "gone2", own)
    store.add_feedback("gone", "incorrect", correction="x")
    assert store.delete_request("gone") and store.delete_request("gone2")
    assert not store.delete_request("never-was")
    assert [p.request_id for p in store.predictions()] == ["keep"]
    files = list(Path(store.images.root).rglob("*.png"))
    assert [f.read_bytes() for f in files] == [shared]  # still used by "keep"
    with store.engine.connect() as conn:
        assert conn.execute(text("select count(*) from feedback")).scalar() == 0
        assert conn.execute(text("select count(*) from projections")).scalar() == len(proj.REGISTRY)


def test_retention_purge(store, make_line):
    now = utcnow()
    _log(store, "old", make_line("old"), timestamp=now - timedelta(days=40))
    _log(store, "mid", make_line("mid"), timestamp=now - timedelta(days=10))
    _log(store, "new", make_line("new"), timestamp=now)
    store.add_feedback("old", "other")

    images = store.purge(timedelta(days=7), images_only=True)
    assert images["images"] == 2 and images["predictions"] == images["feedback"] == 0
    kept = {p.request_id: p for p in store.predictions()}
    assert kept["mid"].image_sha256 is None and kept["mid"].projections["width"] == 320
    assert kept["new"].image_sha256 is not None

    counts = store.purge(timedelta(days=30))
    assert counts == {
        "predictions": 1,
        "projections": len(proj.REGISTRY),
        "feedback": 1,
        "shadow_predictions": 0,
        "images": 0,
    }
    assert [p.request_id for p in store.predictions()] == ["mid", "new"]


def test_purge_zero_days_deletes_every_kind_of_row_and_stray_image(store, make_line):
    """``timedelta(0)``: everything stored until now goes, each kind of row by its own
    time: feedback for a request never stored, shadow answers, and image files no row
    refers to (a crash between storing the image and the row leaves one)."""
    now = utcnow()
    _log(store, "old", make_line("old"), timestamp=now - timedelta(days=40))
    _log(store, "new", make_line("new"))
    store.add_feedback("new", "incorrect", correction="new")
    store.add_feedback("never-stored", "offensive", comment="no such prediction")
    store.log_shadow(ShadowRecord("new", "m-2", "m-1", "neu", 0.4, 5.0, 0.5))
    store.log_shadow(ShadowRecord("gone", "m-2", "m-1", "x", 0.4, 5.0, 1.0))
    stray = store.images.put(make_line("stray"))  # no row refers to it
    store.save_baseline("default", [{"length": 3.0}])
    # files written a moment ago are "older than now" too
    time.sleep(0.05)

    counts = store.purge(timedelta(0))
    assert counts["predictions"] == 2 and counts["feedback"] == 2
    assert counts["shadow_predictions"] == 2 and counts["images"] == 3
    assert store.counts() == {
        "predictions": 0,
        "feedback": 0,
        "shadow_predictions": 0,
        "baselines": 1,  # test-set projections, not user data: kept
    }
    assert not store.images.exists(*stray)
    with store.engine.connect() as conn:
        assert conn.execute(text("select count(*) from projections")).scalar() == 0


def test_purge_keeps_recent_feedback_for_unknown_requests_until_it_ages(store):
    store.add_feedback("unknown", "other", comment="a flag for a prediction never stored")
    assert store.purge(timedelta(days=1))["feedback"] == 0
    assert store.counts()["feedback"] == 1
    assert store.purge(timedelta(0))["feedback"] == 1
    with pytest.raises(ValueError, match="negative"):
        store.purge(timedelta(days=-1))


def test_backfill_computes_a_new_projection_over_stored_data(store, make_line):
    _log(store, "r1", make_line(size=(200, 50)), "abc")
    _log(store, "r2", make_line(size=(400, 40)), "abcdef")

    @proj.projection("test_pixels", "input")
    def test_pixels(data: proj.ProjectionInput) -> float | None:
        """Pixel count (a projection added after the data was stored)."""
        return None if data.image is None else data.image.width * data.image.height

    try:
        assert store.backfill() == 2  # only the missing values
        assert store.backfill() == 0
        got = {p.request_id: p.projections["test_pixels"] for p in store.predictions()}
        assert got == {"r1": 10_000, "r2": 16_000}
        # A recompute replaces values rather than duplicating rows.
        assert store.backfill(["length"], recompute=True) == 2
        assert store.get_prediction("r2").projections["length"] == 6
    finally:
        del proj.REGISTRY["test_pixels"]


def test_baseline_round_trip(store):
    rows = [{"length": 3.0, "polarity": 1.0}, {"length": 5.0, "polarity": None}]
    store.save_baseline("default", rows, dataset_version="abc123", model_version="m-1")
    store.save_baseline("default", rows[:1])  # replaces
    baseline = store.load_baseline("default")
    assert baseline.values == {"length": [3.0], "polarity": [1.0]} and len(baseline) == 1
    with pytest.raises(KeyError, match="no baseline named 'other'.*default"):
        store.load_baseline("other")


def test_async_logger_batches_off_the_request_path(store, make_line):
    """Best-effort mode (durable=False): log() only queues."""
    image = make_line()
    with AsyncPredictionLogger(store, batch_size=16, flush_interval=0.05, durable=False) as logger:
        for i in range(100):
            logger.log(PredictionRecord(f"r{i}", "api", "m-1", image, f"text {i}", 0.5, 3.0))
        assert logger.stats()["committed_before_answer"] == 0  # queued, not written, by log()
        assert logger.flush(timeout=60)
        assert logger.stats()["written"] == 100
    assert len(store.predictions()) == 100


def test_queued_records_keep_decoded_images_up_to_a_budget(store, make_line, monkeypatch):
    """A record may carry the image serving decoded: its projections then need no decode.
    Beyond ``max_decoded_pixels`` a queued record keeps only its bytes (decoded when
    written), with the same projections."""
    image = make_line()
    decoded = read_image(image)  # what serving decodes: L or RGB
    budget = 2 * decoded.width * decoded.height
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(1) or real_open(*a, **k))
    with AsyncPredictionLogger(
        store, flush_interval=60, durable=False, max_decoded_pixels=budget
    ) as logger:
        for i in range(5):
            record = PredictionRecord(f"p{i}", "api", "m-1", image, "t", 0.5, 1.0)
            logger.log(replace(record, decoded=decoded))
        assert logger.flush(timeout=60)
    assert len(opened) == 3  # two projected from the decoded image, three from their bytes
    projections = [p.projections for p in store.predictions()]
    assert len(projections) == 5 and all(p == projections[0] for p in projections)
    assert projections[0]["width"] == decoded.width


def test_durable_logger_commits_before_returning_and_projects_later(store, make_line):
    """The default: when log() returns the row is committed (a fresh connection sees it);
    projections and shadow answers follow from the writer thread. The commit is cheap."""
    images = [make_line(seed=i) for i in range(60)]
    with AsyncPredictionLogger(store, batch_size=1000, flush_interval=60) as logger:
        assert logger.durable
        for i, image in enumerate(images):
            logger.log(PredictionRecord(f"d{i}", "api", "m-1", image, f"text {i}", 0.5, 3.0))
        reader = MonitoringStore(store.url, image_dir=store.images.root)
        stored = reader.predictions()
        assert {p.request_id for p in stored} == {f"d{i}" for i in range(60)}
        assert all(not p.projections for p in stored)  # still queued: the writer is idle
        assert all(reader.image_bytes(p) is not None for p in stored)  # local image store
        stats = logger.stats()
        assert stats["committed_before_answer"] == 60 and stats["queued"] == 60
        assert logger.flush(timeout=60)
    projected = reader.predictions()
    assert all(p.projections.get("mean_intensity") is not None for p in projected)
    reader.close()


def test_predictions_committed_but_not_projected_are_projected_at_the_next_start(store, make_line):
    """What a killed process leaves: rows without projections. The next logger projects
    them from the stored image when it starts."""
    for i in range(3):
        store.commit_prediction(
            PredictionRecord(f"k{i}", "api", "m-1", make_line(seed=i), "text", 0.5, 3.0)
        )
    assert all(not p.projections for p in store.predictions())
    with AsyncPredictionLogger(store, flush_interval=0.05) as logger:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(p.projections for p in store.predictions()):
            time.sleep(0.05)
        assert logger.stats()["healthy"]
    assert all(p.projections.get("contrast") is not None for p in store.predictions())


def test_async_logger_survives_a_failing_store_and_catches_up(store, make_line, caplog):
    logger = AsyncPredictionLogger(store, batch_size=8, flush_interval=0.02, max_backoff=0.1)
    Base.metadata.drop_all(store.engine)  # the database breaks under the running service
    for i in range(20):
        logger.log(PredictionRecord(f"r{i}", "api", "m-1", make_line(seed=i), "t", 0.5, 1.0))
    deadline = time.monotonic() + 30
    while logger.stats()["failed_writes"] < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    stats = logger.stats()
    assert not stats["healthy"] and stats["queued"] == 20 and stats["last_error"]
    assert "monitoring store write failed" in caplog.text

    Base.metadata.create_all(store.engine)  # repaired
    assert logger.close(timeout=30)
    assert logger.stats()["written"] == 20 and logger.stats()["healthy"]
    assert len(store.predictions()) == 20


def test_records_queued_at_exit_are_flushed(tmp_path, make_line):
    """A process that exits without calling close() still writes what it queued (atexit).

    One backend suffices: the flush is the logger's, the write path is tested on both."""
    store_url = f"sqlite:///{tmp_path / 'exit.db'}"
    (tmp_path / "line.png").write_bytes(make_line())
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from quill.monitoring.async_logger import AsyncPredictionLogger
        from quill.monitoring.records import PredictionRecord
        from quill.monitoring.store import MonitoringStore
        store = MonitoringStore({store_url!r}, image_dir={str(tmp_path / "images")!r})
        logger = AsyncPredictionLogger(store, batch_size=1000, flush_interval=60)
        image = Path({str(tmp_path / "line.png")!r}).read_bytes()
        for i in range(50):
            logger.log(PredictionRecord(f"exit-{{i}}", "lambda", "m-1", image, "t", 0.5, 1.0))
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    store = MonitoringStore(store_url, image_dir=tmp_path / "images")
    assert len(store.predictions(client="lambda")) == 50
    store.close()


def test_a_record_the_database_refuses_does_not_block_the_queue(store, make_line, caplog):
    """One bad record (lines that are not JSON, an id longer than the column) is dropped
    and reported by request id; the rest of its batch is written."""
    image = make_line()
    with AsyncPredictionLogger(store, batch_size=50, flush_interval=0.05) as logger:
        for i in range(5):
            logger.log(PredictionRecord(f"ok-{i}", "api", "m-1", image, "t", 0.5, 1.0))
        logger.log(PredictionRecord("bad-lines", "api", "m-1", image, "t", 0.5, 1.0, [object()]))
        logger.log(PredictionRecord("x" * 300, "api", "m-1", image, "t", 0.5, 1.0))
        assert logger.flush(timeout=60)
        stats = logger.stats()
    stored = {p.request_id for p in store.predictions()}
    assert {f"ok-{i}" for i in range(5)} <= stored and "bad-lines" not in stored
    assert stats["written"] == len(stored) and stats["healthy"]
    assert stats["rejected"] == 7 - len(stored)  # SQLite accepts the long id, Postgres not
    assert "rejected request bad-lines" in caplog.text
