"""push/pull over HTTP against the stand-in Label Studio API, and the full round trip:
images -> tasks -> push -> (simulated annotators) -> pull -> import -> DataModule batch.

The server here is tests/annotation/standin_labelstudio.py: a real HTTP server on 127.0.0.1
implementing the endpoints Quill calls, not Label Studio itself (see docs/annotation.md).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import typer
from typer.testing import CliRunner

from quill.annotation.cli import register
from quill.annotation.client import LabelStudioClient, LabelStudioError
from quill.annotation.config import labeling_config
from quill.annotation.server import (
    DATABASE_FILE,
    EMPTY_DATABASE_FILE,
    PASSWORD_VAR,
    TOKEN_VAR,
    USERNAME_VAR,
    LabelStudioProcess,
    ServeSettings,
)
from quill.data.manifest import Manifest
from quill.ports import free_port
from quill.preprocess import PreprocessConfig, preprocess

SIZE = (700, 400)
PAGES = {
    "p1.png": [("Kew Gardens", 40, 60, 0.0), ("my dear Gray", 50, 170, 3.0)],
    "p2.png": [("seeds sent", 60, 80, -2.0), ("by the mail", 60, 200, 0.0)],
    "p3.png": [("thank you", 40, 90, 0.0)],
}


def cli(standin, *args, token: str | None = None):
    app = typer.Typer()
    register(app)
    env = {"LABEL_STUDIO_URL": standin.url, "LABEL_STUDIO_API_KEY": token or standin.token}
    return CliRunner().invoke(app, ["annotate", *map(str, args)], env=env)


def draw_scans(root: Path, ls) -> dict:
    """The pages above, drawn into a server's document root under scans/: their lines."""
    folder = root / "scans"
    folder.mkdir()
    lines = {}
    for name, specs in PAGES.items():
        page, lines[name] = ls.draw_page(specs, SIZE)
        page.save(folder / name)
    return lines


@pytest.fixture
def drawn(standin, ls):
    return draw_scans(standin.root, ls)


def annotations(tasks, ls, drawn) -> list[tuple[int, dict]]:
    """What simulated annotators send for ``tasks``, as (task id, annotation): every line
    boxed and typed; page 3 also skipped by someone (an annotation marked cancelled)."""
    sent = []
    for task in tasks:
        name = task["data"]["image_path"].split("/")[-1]
        result = []
        for i, line in enumerate(drawn[name]):
            result += ls.region(f"{name}-{i}", line.box, line.text, SIZE)
        sent.append((task["id"], {"result": result}))
        if name == "p3.png":
            sent.append((task["id"], {"result": [], "was_cancelled": True}))
    return sent


def round_trip(
    tmp_path, server, annotate, project: str = "Letters", scans: str = "scans", *task_args
) -> list:
    """tasks (of ``server.root / scans``, with ``task_args``) -> push to ``project`` ->
    ``annotate(project)`` -> pull -> import, through the CLI against ``server`` (its url,
    token and document root); returns the four commands' outputs."""
    tasks_file = tmp_path / "tasks.json"
    made = cli(server, "tasks", server.root / scans, "-o", tasks_file,
               "--document-root", server.root, *task_args)  # fmt: skip
    pushed = cli(server, "push", tasks_file, "--project", project,
                 "--document-root", server.root)  # fmt: skip
    for result in (made, pushed):
        assert result.exit_code == 0, result.output
    annotate(project)
    export = tmp_path / "export.json"
    pulled = cli(server, "pull", "--project", project, "-o", export)
    splits = ("--val-fraction", 0, "--test-fraction", 0)
    imported = cli(server, "import", export, "--images-root", server.root,
                   "-o", tmp_path / "dataset", *splits)  # fmt: skip
    for result in (pulled, imported):
        assert result.exit_code == 0, result.output
    return [made, pushed, pulled, imported]


def standin_round_trip(tmp_path, standin, ls, drawn) -> list:
    def annotate(title: str) -> None:
        [project] = [p for p in standin.state.projects.values() if p["title"] == title]
        tasks = [task for task in standin.state.tasks.values() if task["project"] == project["id"]]
        for task_id, annotation in annotations(tasks, ls, drawn):
            skipped = annotation.get("was_cancelled", False)
            standin.state.annotate(task_id, completed_by=2 if skipped else 1, **annotation)

    return round_trip(tmp_path, standin, annotate)


EXPECTED = sorted(text for specs in PAGES.values() for text, *_ in specs)


def assert_round_trip(outputs: list, dataset: Path) -> None:
    """What the four commands say and the dataset they end in, whichever server ran."""
    made, pushed, pulled, imported = outputs
    assert "wrote 3 tasks (0 pre-annotated)" in made.output
    assert "created project 'Letters'" in pushed.output and "imported 3 tasks" in pushed.output
    assert "wrote 3 tasks (3 annotated)" in pulled.output
    assert "3/3 tasks -> 5 lines, 3 paragraphs" in imported.output
    manifest = Manifest.load(dataset)
    assert sorted(s.text for s in manifest if s.kind == "line") == EXPECTED
    # Every crop goes through the one preprocessing path and shows ink.
    for sample in manifest:
        image = preprocess(manifest.path_of(sample), PreprocessConfig(kind=sample.kind))
        assert image.shape[0] == (64 if sample.kind == "line" else 576)
        assert (image > 0.5).mean() > 0.01, sample.text


def test_round_trip_through_http_to_a_dataset(tmp_path, standin, ls, drawn):
    assert_round_trip(standin_round_trip(tmp_path, standin, ls, drawn), tmp_path / "dataset")
    project = standin.state.projects[1]
    assert project["label_config"] == labeling_config().strip()
    assert "Type what is written" in project["expert_instruction"]
    assert standin.state.storages[0]["path"] == str((standin.root / "scans").resolve())
    # The tasks' image URLs resolve on the server (local-files storage under the root).
    first = next(iter(standin.state.tasks.values()))["data"]["ocr"]
    assert httpx.get(standin.url + first).status_code == 200


#: Label Studio's own virtualenv (``make labelstudio``; ``make test`` makes it first).
LABEL_STUDIO_VENV = Path(__file__).resolve().parents[2] / ".cache" / "labelstudio-venv"


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory) -> Iterator[SimpleNamespace]:
    """Label Studio itself on 127.0.0.1, started as ``quill annotate serve`` starts it, with a
    fresh database: url, token, document root."""
    venv = Path(os.environ.get("QUILL_LABELSTUDIO_VENV", LABEL_STUDIO_VENV))
    if not (venv / "bin" / "label-studio").is_file():
        pytest.skip(f"Label Studio is not installed at {venv}: run `make labelstudio`")
    root, data = tmp_path_factory.mktemp("ls-docroot"), tmp_path_factory.mktemp("ls-data")
    token = "quill-contract-token-0123456789"
    env = {**os.environ, USERNAME_VAR: "annotator@example.org", PASSWORD_VAR: "a-long-password",
           TOKEN_VAR: token}  # fmt: skip
    settings = ServeSettings(venv=venv, port=free_port(), data_dir=data, document_root=root)
    process = LabelStudioProcess(settings, env).start(log=data / "label-studio.log")
    try:
        process.wait_healthy(timeout_s=300)  # ~5 s from `make labelstudio`'s empty database
        yield SimpleNamespace(url=settings.url, token=token, root=root, venv=venv, data=data)
    finally:
        process.stop()


def test_a_new_data_folder_starts_from_the_installed_empty_database(label_studio):
    """`make labelstudio` applies Label Studio's migrations once, to a database with nobody in
    it (48 of the 52 s of a first start on 2 cores); a new data folder starts from a copy, to
    which Label Studio adds the admin named in the environment."""
    empty = label_studio.venv / EMPTY_DATABASE_FILE
    if not empty.is_file():
        pytest.skip(f"no {empty}: Label Studio was not installed by `make labelstudio`")
    with closing(sqlite3.connect(empty)) as db:
        assert db.execute("SELECT count(*) FROM django_migrations").fetchone()[0] > 100
        assert db.execute("SELECT count(*) FROM htx_user").fetchone()[0] == 0
    with closing(sqlite3.connect(label_studio.data / DATABASE_FILE)) as db:
        users = db.execute("SELECT email FROM htx_user").fetchall()
    assert users == [("annotator@example.org",)]


def test_round_trip_through_label_studio_itself(tmp_path, label_studio, ls):
    """The stand-in's round trip against the real server: tasks pushed, annotations sent as
    the labeling page sends them (one skipped), exported, imported to the same dataset."""
    drawn = draw_scans(label_studio.root, ls)
    with LabelStudioClient(label_studio.url, label_studio.token) as client:

        def annotate(title: str) -> None:
            project = client.project(title)
            listed = client._call("GET", "/api/tasks", params={"project": project["id"]})
            for task_id, annotation in annotations(listed["tasks"], ls, drawn):
                client._call("POST", f"/api/tasks/{task_id}/annotations", json=annotation)

        outputs = round_trip(tmp_path, label_studio, annotate)
        assert_round_trip(outputs, tmp_path / "dataset")
        project = client.project("Letters")
        # stored without the config's final newline (the stand-in does the same)
        assert project is not None and project["label_config"] == labeling_config().strip()
        assert "Type what is written" in project["expert_instruction"]
        again = cli(label_studio, "push", tmp_path / "tasks.json", "--project", "Letters",
                    "--document-root", label_studio.root)  # fmt: skip
        assert again.exit_code == 0 and "found project 'Letters'" in again.output, again.output
        [storage] = client.local_storages(project["id"])  # the second push made no other
        assert storage["path"] == str((label_studio.root / "scans").resolve())
        # The tasks' image URLs resolve on the server (local-files storage under the root).
        [task, *_] = client.export(project["id"])
        image = client.http.get(task["data"]["ocr"])
        assert image.status_code == 200 and image.content[:4] == b"\x89PNG"


@pytest.mark.slow  # stages the smoke model (~1 min on a busy machine) unless already staged
def test_label_studio_keeps_the_models_regions_for_the_annotator(
    tmp_path, label_studio, ls, smoke_model
):
    """Pre-annotated tasks (``quill annotate tasks --model``) pushed to Label Studio itself
    arrive with the model's regions as predictions; an annotator who keeps the boxes and types
    each line's text ends, after pull and import, in the written lines."""
    page = [("hello", 80, 60, 0.0), ("quill", 80, 180, 0.0), ("Kew ink", 80, 300, 0.0)]
    image, drawn = ls.draw_page(page, (520, 420))
    (label_studio.root / "smoke").mkdir()
    image.save(label_studio.root / "smoke" / "smoke.png")
    with LabelStudioClient(label_studio.url, label_studio.token) as client:

        def accept_the_models_regions(title: str) -> None:
            [sent] = json.loads((tmp_path / "tasks.json").read_text())
            [exported] = client.export(client.project(title)["id"])  # predictions: ids there
            task = client._call("GET", f"/api/tasks/{exported['id']}")
            [prediction] = task["predictions"]
            assert prediction["result"] == sent["predictions"][0]["result"]
            assert prediction["model_version"] == sent["predictions"][0]["model_version"]
            results = prediction["result"]
            texts = sorted(
                (r for r in results if r["type"] == "textarea"), key=lambda r: r["value"]["y"]
            )
            assert len(texts) == len(page), "one region per written line"
            for region, line in zip(texts, drawn, strict=True):
                region["value"]["text"] = [line.text]
            client._call("POST", f"/api/tasks/{task['id']}/annotations", json={"result": results})

        made, *_ = round_trip(tmp_path, label_studio, accept_the_models_regions, "Pre-annotated",
                              "smoke", "--model", smoke_model, "--threads", 1)  # fmt: skip
    assert "(1 pre-annotated)" in made.output, made.output
    manifest = Manifest.load(tmp_path / "dataset")
    assert [s.text for s in manifest if s.kind == "line"] == [text for text, *_ in page]


@pytest.mark.slow  # importing Lightning alone takes ~40 s on a busy 2-core machine
def test_round_trip_ends_in_a_training_batch(tmp_path, standin, ls, drawn):
    standin_round_trip(tmp_path, standin, ls, drawn)
    from quill.data.datamodule import HTRDataModule

    module = HTRDataModule(
        [tmp_path / "dataset"], task="line", batch_size=5, num_workers=0, augment=False
    )
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert batch["images"].shape[:3] == (5, 1, 64)
    assert set(batch["texts"]) <= set(EXPECTED)  # the sampler draws with replacement
    decoded = [
        module.tokenizer.decode(row[:length].tolist())
        for row, length in zip(batch["targets"], batch["target_lengths"], strict=True)
    ]
    assert decoded == batch["texts"]
    assert int(batch["widths"].max()) == batch["images"].shape[-1]
    assert float(batch["images"].max()) > 0.5


def test_push_reuses_the_project_and_refuses_a_drifted_config(tmp_path, standin, drawn):
    tasks_file = tmp_path / "tasks.json"
    cli(standin, "tasks", standin.root / "scans" / "p1.png", "-o", tasks_file,
        "--document-root", standin.root)  # fmt: skip
    for _ in range(2):
        result = cli(standin, "push", tasks_file, "--document-root", standin.root)
        assert result.exit_code == 0, result.output
    assert len(standin.state.projects) == 1 and len(standin.state.storages) == 1
    assert "found project 'Quill handwriting'" in result.output

    standin.state.projects[1]["label_config"] = "<View><Image name='img' value='$image'/></View>"
    result = cli(standin, "push", tasks_file, "--document-root", standin.root)
    assert result.exit_code == 2 and 'expected exactly one <Image name="image"' in result.output


def test_errors_name_the_problem(tmp_path, standin, drawn):
    tasks_file = tmp_path / "tasks.json"
    cli(standin, "tasks", standin.root / "scans", "-o", tasks_file,
        "--document-root", standin.root)  # fmt: skip

    result = cli(standin, "push", tasks_file, token="wrong-token-0000000000")
    assert result.exit_code == 2 and "refused the API token (401)" in result.output

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = cli(standin, "pull", "-o", tmp_path / "e.json", "--url", f"http://127.0.0.1:{port}")
    assert result.exit_code == 2 and "no Label Studio at" in result.output

    result = cli(standin, "pull", "--project", "Nope", "-o", tmp_path / "e.json")
    assert result.exit_code == 2 and "no project 'Nope'" in result.output

    # Images outside what the server serves: Label Studio refuses the storage.
    result = cli(standin, "push", tasks_file, "--document-root", tmp_path)
    assert result.exit_code == 2 and "LOCAL_FILES_DOCUMENT_ROOT" in result.output

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"data": {"image": "x.png"}}]))
    result = cli(standin, "push", bad)
    assert result.exit_code == 2 and '"ocr" key is expected' in result.output

    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["annotate", "pull", "-o", "x.json"], env={
        "LABEL_STUDIO_API_KEY": "", "LABEL_STUDIO_USER_TOKEN": ""})  # fmt: skip
    assert result.exit_code == 2 and "LABEL_STUDIO_API_KEY" in result.output


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        (["x", 1], "task #0 is str, not an object"),
        ([{"data": {"ocr": "https://example.org/a.png"}}, {"data": "oops"}],
         "task #1: data is str, not an object"),
        ([{"data": {"ocr": "/data/local-files/?d="}}],
         "task #0: '/data/local-files/?d=' names no file"),
    ],
)  # fmt: skip
def test_push_refuses_a_malformed_task_file_before_touching_the_server(
    tmp_path, standin, tasks, message
):
    """These used to end in an AttributeError or KeyError traceback, after the project was
    made."""
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(tasks))
    result = cli(standin, "push", bad, "--document-root", standin.root)
    assert result.exit_code == 2, result.output
    assert f"{bad}: {message}" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert standin.state.projects == {} and standin.state.tasks == {}


def test_push_gives_flat_local_files_tasks_their_storage(tmp_path, standin, drawn):
    """Label Studio imports a task without "data" as the data itself; such tasks used to get
    no local-files storage, so their images did not load."""
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps([{"ocr": "/data/local-files/?d=scans/p1.png"}]))
    result = cli(standin, "push", flat, "--document-root", standin.root)
    assert result.exit_code == 0, result.output
    assert [s["path"] for s in standin.state.storages] == [str((standin.root / "scans").resolve())]
    assert [t["data"] for t in standin.state.tasks.values()] == [
        {"ocr": "/data/local-files/?d=scans/p1.png"}
    ]


def test_projects_are_found_across_pages(standin):
    with LabelStudioClient(standin.url, standin.token) as client:
        for i in range(130):
            client._call("POST", "/api/projects", json={"title": f"p{i}"})
        assert client.project("p129")["id"] == 130
        assert client.project("42")["title"] == "p41"
        assert client.project("999") is None
        assert len(list(client.projects())) == 130
        with pytest.raises(LabelStudioError, match="HTTP 400"):
            client._call("POST", "/api/projects", json={"title": "x", "label_config": "<View"})
    pages = [path for method, path in standin.state.requests if path == "/api/projects"]
    assert len(pages) >= 4  # two pages per full listing
