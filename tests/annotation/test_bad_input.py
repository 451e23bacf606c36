"""Bad input to ``quill annotate``: one line naming the file, URL or server, exit 2, and no
pre-annotation for a page the model reads as nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from quill.annotation.cli import register
from quill.annotation.tasks import build_tasks, collect_images, prediction_for
from quill.errors import EXIT_ERROR
from quill.inference.recognizer import LinePrediction, Prediction

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = REPO_ROOT / "models" / "default"
needs_proc = pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")


def annotate(*args: object, env: dict[str, str] | None = None) -> tuple[int, str]:
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["annotate", *map(str, args)], env=env)
    return result.exit_code, result.output


def blank_page_prediction() -> Prediction:
    """What a model answers for a blank white page: one page-wide line read as nothing."""
    return Prediction(
        text="",
        confidence=1.0,
        lines=[LinePrediction("", 1.0, (0, 0, 400, 300))],
        timings={},
        model_version="m-1",
    )


def test_lines_read_as_nothing_are_not_pre_annotated() -> None:
    assert prediction_for(blank_page_prediction(), "blank.png", 400, 300) is None
    page = blank_page_prediction()
    page.lines.append(LinePrediction("Kew", 0.8, (10, 20, 200, 60)))
    converted = prediction_for(page, "page.png", 400, 300)
    assert converted is not None
    assert [r["value"]["text"] for r in converted["result"] if r["type"] == "textarea"] == [["Kew"]]


def test_a_blank_page_gets_a_task_without_pre_annotation(tmp_path: Path) -> None:
    Image.new("RGB", (400, 300), "white").save(tmp_path / "blank.png")
    tasks, notes = build_tasks(
        collect_images([str(tmp_path)]),
        tmp_path,
        predictor=lambda paths: [blank_page_prediction() for _ in paths],
    )
    assert len(tasks) == 1 and "predictions" not in tasks[0] and notes == []


@pytest.mark.skipif(not (DEFAULT_MODEL / "model.onnx").is_file(), reason="no models/default")
def test_the_shipped_model_does_not_pre_annotate_a_blank_page(tmp_path: Path) -> None:
    pages = tmp_path / "pages"
    pages.mkdir()
    Image.new("RGB", (900, 600), "white").save(pages / "blank.png")
    out = tmp_path / "tasks.json"
    code, output = annotate(
        "tasks", pages, "-o", out, "--model", DEFAULT_MODEL, "--threads", "1",
        "--document-root", tmp_path,
    )  # fmt: skip
    assert code == 0, output
    assert "wrote 1 tasks (0 pre-annotated)" in output


def test_a_list_that_is_not_text_is_named(tmp_path: Path) -> None:
    binary = tmp_path / "binary.txt"
    binary.write_bytes(bytes(range(128, 256)))
    code, output = annotate("tasks", binary, "-o", tmp_path / "t.json")
    assert code == EXIT_ERROR, output
    assert f"{binary}: not a UTF-8 list of image paths and URLs" in output
    assert not (tmp_path / "t.json").exists()


@needs_proc
def test_tasks_refuse_an_unwritable_output(tmp_path: Path) -> None:
    Image.new("RGB", (40, 30), "white").save(tmp_path / "blank.png")
    code, output = annotate("tasks", tmp_path, "-o", "/proc/nope/t.json")
    assert code == EXIT_ERROR, output
    assert "/proc/nope/t.json: cannot write in /proc" in output


def test_config_refuses_a_file_as_its_folder(tmp_path: Path) -> None:
    a_file = tmp_path / "config"
    a_file.write_text("x")
    code, output = annotate("config", "-o", a_file)
    assert code == EXIT_ERROR, output
    assert f"--out {a_file}: is a file, not a folder" in output


@needs_proc
def test_config_refuses_an_unwritable_folder() -> None:
    code, output = annotate("config", "-o", "/proc/nope")
    assert code == EXIT_ERROR, output
    assert "/proc/nope: cannot write in /proc" in output


def test_an_unparsable_url_is_one_line(tmp_path: Path) -> None:
    code, output = annotate(
        "pull", "--url", "http://[::1", "-o", tmp_path / "x.json",
        env={"LABEL_STUDIO_API_KEY": "token"},
    )  # fmt: skip
    assert code == EXIT_ERROR, output
    assert "not a Label Studio URL: 'http://[::1'" in output and "Traceback" not in output


@pytest.fixture
def web_server(tmp_path: Path) -> Iterator[str]:
    """A plain static web server on localhost (not Label Studio): every API path is 404."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("command", ["pull", "push"])
def test_a_server_that_is_not_label_studio_is_one_short_line(
    tmp_path: Path, web_server: str, command: str
) -> None:
    tasks = tmp_path / "tasks.json"
    tasks.write_text("[]\n")
    args = ["pull", "-o", tmp_path / "x.json"] if command == "pull" else ["push", tasks]
    code, output = annotate(*args, "--url", web_server, env={"LABEL_STUDIO_API_KEY": "token"})
    assert code == EXIT_ERROR, output
    assert "HTTP 404: an HTML page, not an answer of Label Studio's API" in output
    assert "<html" not in output.lower() and len(output.strip().splitlines()) == 1
