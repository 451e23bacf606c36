"""A store written by an older Quill opens with the columns added since (``runtime``)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import String, create_engine, event, inspect, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from typer.testing import CliRunner

from quill.cli import app
from quill.monitoring.async_logger import AsyncPredictionLogger
from quill.monitoring.migrate import SchemaUpgradeError, add_missing_columns
from quill.monitoring.records import PredictionRecord
from quill.monitoring.schema import Base
from quill.monitoring.store import MonitoringStore

REPO = Path(__file__).resolve().parents[2]

#: The predictions table as Quill created it before it recorded the runtime, written out by
#: hand (what SQLAlchemy emitted for each dialect), with its indexes.
OLD_PREDICTIONS = """
CREATE TABLE predictions (
    id {id_type} NOT NULL,
    request_id VARCHAR(128) NOT NULL,
    created_at {time_type} NOT NULL,
    client VARCHAR(32) NOT NULL,
    model_version VARCHAR(128) NOT NULL,
    image_sha256 VARCHAR(64),
    image_ext VARCHAR(8),
    text TEXT NOT NULL,
    confidence FLOAT,
    latency_ms FLOAT,
    lines JSON,
    PRIMARY KEY (id)
)
"""
OLD_INDEXES = (
    "CREATE INDEX ix_predictions_created_at ON predictions (created_at)",
    "CREATE UNIQUE INDEX ix_predictions_request_id ON predictions (request_id)",
    "CREATE INDEX ix_predictions_client ON predictions (client)",
    "CREATE INDEX ix_predictions_image_sha256 ON predictions (image_sha256)",
    "CREATE INDEX ix_predictions_model_version ON predictions (model_version)",
)
TYPES = {
    "sqlite": {"id_type": "INTEGER", "time_type": "DATETIME"},
    "postgresql": {"id_type": "SERIAL", "time_type": "TIMESTAMP WITHOUT TIME ZONE"},
}
ADDED_LOG = "added column predictions.runtime"


def create_old_store(url: str) -> None:
    """The old predictions table with one prediction in it, through raw SQL only."""
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(OLD_PREDICTIONS.format(**TYPES[engine.dialect.name])))
        for index in OLD_INDEXES:
            connection.execute(text(index))
        connection.execute(
            text(
                "INSERT INTO predictions (request_id, created_at, client, model_version, text,"
                " confidence, latency_ms) VALUES ('old', '2024-05-01 10:00:00', 'api', 'm-1',"
                " 'Dear Sir', 0.9, 12.5)"
            )
        )
    engine.dispose()


def prediction_columns(store: MonitoringStore) -> list[str]:
    return [c["name"] for c in inspect(store.engine).get_columns("predictions")]


def test_an_old_store_gains_the_runtime_column_once(store_url, tmp_path, make_line, caplog):
    create_old_store(store_url)
    caplog.set_level(logging.INFO, logger="quill.monitoring.migrate")
    store = MonitoringStore(store_url, image_dir=tmp_path / "images")
    try:
        assert caplog.text.count(ADDED_LOG) == 1
        assert "runtime" in prediction_columns(store)
        old = store.get_prediction("old")
        assert old is not None and (old.text, old.model_version) == ("Dear Sir", "m-1")
        assert old.runtime is None
        image = make_line()
        store.log_prediction(
            PredictionRecord("batch", "api", "m-1", image, "t", 0.5, 1.0, runtime="onnx-int8")
        )
        with AsyncPredictionLogger(store, durable=True) as logger:
            logger.log(
                PredictionRecord("durable", "api", "m-1", image, "t", 0.5, 1.0, runtime="onnx")
            )
            assert logger.stats()["committed_before_answer"] == 1
        runtimes = {p.request_id: p.runtime for p in store.predictions()}
        assert runtimes == {"old": None, "batch": "onnx-int8", "durable": "onnx"}
        columns = prediction_columns(store)
    finally:
        store.close()

    caplog.clear()
    for _ in range(2):  # opening it again changes nothing
        again = MonitoringStore(store_url, image_dir=tmp_path / "images")
        try:
            assert prediction_columns(again) == columns
            assert add_missing_columns(again.engine, Base.metadata) == []
            assert {p.request_id: p.runtime for p in again.predictions()} == runtimes
        finally:
            again.close()
    assert ADDED_LOG not in caplog.text


def test_a_column_another_process_added_first_is_not_an_error(store_url):
    """Two API workers open the same old store: the second one's ADD COLUMN fails because
    the first has just added it. Here the other worker adds it just before this one's
    ``ALTER TABLE`` runs, every time."""
    create_old_store(store_url)
    engine, other_worker = create_engine(store_url), create_engine(store_url)
    other_added: list[tuple[str, str]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _the_other_worker_is_faster(_conn, _cursor, statement, *_args) -> None:
        if statement.startswith("ALTER TABLE") and not other_added:
            other_added.extend(add_missing_columns(other_worker, Base.metadata))

    try:
        Base.metadata.create_all(engine)
        assert add_missing_columns(engine, Base.metadata) == []
        assert other_added == [("predictions", "runtime")]
        names = [c["name"] for c in inspect(engine).get_columns("predictions")]
        assert names.count("runtime") == 1
    finally:
        engine.dispose()
        other_worker.dispose()


class GadgetBase(DeclarativeBase):
    pass


class Gadget(GadgetBase):
    """A model that gained two columns since its table was made: one nullable, one not."""

    __tablename__ = "gadgets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(String(32), nullable=True)
    colour: Mapped[str] = mapped_column(String(16))


def test_a_missing_not_null_column_stops_the_upgrade_naming_it(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'gadgets.db'}")
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE gadgets (id INTEGER PRIMARY KEY, name TEXT)"))
        with pytest.raises(SchemaUpgradeError, match="table 'gadgets'.*column 'colour'.*NOT NULL"):
            add_missing_columns(engine, GadgetBase.metadata)
        # Nothing was half done: the nullable column was not added either.
        assert [c["name"] for c in inspect(engine).get_columns("gadgets")] == ["id", "name"]
    finally:
        engine.dispose()


def test_the_report_counts_predictions_per_model_version_and_runtime(tmp_path, make_line):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    store = MonitoringStore(url, image_dir=tmp_path / "images")
    served = [("m-1", "onnx"), ("m-1", "onnx"), ("m-1", "onnx-int8"), ("m-2", None)]
    for i, (version, runtime) in enumerate(served):
        store.log_prediction(
            PredictionRecord(
                f"r{i}", "api", version, make_line(seed=i), "t", 0.9, 5.0, runtime=runtime
            )
        )
    store.close()
    out = tmp_path / "report.html"
    config = REPO / "configs" / "monitoring.yaml"
    arguments = ["--url", url, "--images", str(tmp_path / "images"), "--config", str(config)]
    result = CliRunner().invoke(app, ["monitor", "report", "--out", str(out), *arguments])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    table = html[html.index('<table id="models-table">') :]
    table = table[: table.index("</table>")]
    assert '<td>m-1</td><td>onnx</td><td class="num">2</td>' in table
    assert '<td>m-1</td><td>onnx-int8</td><td class="num">1</td>' in table
    assert '<td>m-2</td><td class="muted">not recorded</td><td class="num">1</td>' in table
