"""The reference system's incident, replayed end to end with real components.

A staged model (the smoke model: it reads four words, rendered dark on light) is served by
the real REST API on 127.0.0.1 with the real monitoring store. Users first send what the
model knows, then photos of other writing, light on dark; the model answers repetitive
gibberish, users flag and correct some answers. `quill monitor check` must fail, naming
polarity, intensity and the output shift; the report must show it; the flagged examples
must round-trip through Label Studio tasks into a dataset version, and the corrections
straight into another.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from quill.cli import app
from quill.data.manifest import Manifest
from quill.staging.smoke import SMOKE_WORDS

REPO = Path(__file__).resolve().parents[2]
#: Writing the smoke model never saw (the real Hooker letters' words).
UNSEEN = [
    "Stapf will complicate my work",
    "by what he is doing with the",
    "Dear Sir, I thank you",
    "for the seeds you sent",
    "yours very truly",
    "Kew Gardens, May 4",
]


def _png(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _cli(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


@pytest.mark.slow  # stages the smoke model once per session (~1 min on a busy machine)
def test_polarity_incident_is_detected_reported_and_fed_back(
    tmp_path, smoke_model, smoke_dataset, render_word
):
    from quill.serving.runner import ApiServer
    from quill.serving.settings import ServingSettings

    url, images = f"sqlite:///{tmp_path / 'monitoring.db'}", str(tmp_path / "store-images")
    raw = yaml.safe_load((REPO / "configs" / "monitoring.yaml").read_text())
    raw["min_samples"] = 10  # a short stream stands in for a day of traffic
    config = tmp_path / "monitoring.yaml"
    config.write_text(yaml.safe_dump(raw))
    store = ["--url", url, "--images", images, "--config", str(config)]

    output = _cli(
        "monitor",
        "baseline",
        "--dataset",
        str(smoke_dataset),
        "--model",
        str(smoke_model),
        "--threads",
        "1",
        *store,
    )
    assert "baseline 'default': 12 samples" in output

    settings = ServingSettings(
        model_dir=smoke_model, threads=1, monitoring_url=url, monitoring_images=Path(images)
    )
    answers: dict[str, dict] = {}
    with ApiServer(settings) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        for i in range(12):  # familiar traffic
            word = SMOKE_WORDS[i % len(SMOKE_WORDS)]
            reply = http.post("/v1/predict", json={"image": _png(render_word(word, 100 + i))})
            assert reply.status_code == 200, reply.text
            answers[reply.json()["request_id"]] = {"truth": word, **reply.json()}
        familiar_correct = sum(a["text"] == a["truth"] for a in answers.values())
        assert familiar_correct >= 10, answers
        # The incident: other people's letters, photographed light on dark.
        for i in range(24):
            text = UNSEEN[i % len(UNSEEN)]
            image = render_word(text, 200 + i, invert=True)
            reply = http.post("/v1/predict", json={"image": _png(image)})
            assert reply.status_code == 200, reply.text
            answers[reply.json()["request_id"]] = {"truth": text, **reply.json()}
        wrong = [rid for rid, a in answers.items() if a["truth"] in UNSEEN]
        for rid in wrong[:6]:
            reply = http.post(
                "/v1/feedback",
                json={
                    "request_id": rid,
                    "feedback_token": answers[rid]["feedback_token"],  # proves it got the answer
                    "flag": "incorrect",
                    "correction": answers[rid]["truth"],
                },
            )
            assert reply.status_code == 200, reply.text
    # Leaving the server flushed the logger: every answer is in the store.
    assert "predictions          36" in _cli("monitor", "status", *store)

    alert = _cli("monitor", "check", *store, code=1)
    drifted = {
        line.split(":")[0].removeprefix("- [drift] ")
        for line in alert.splitlines()
        if line.startswith("- [drift]")
    }
    assert {"polarity", "mean_intensity", "repetition", "length", "confidence"} <= drifted
    assert "flag rate 16.7% > 20.0%" not in alert  # 6 of 36: below the feedback threshold

    report = tmp_path / "report.html"
    _cli("monitor", "report", "--since", "1d", "--out", str(report), *store)
    html = report.read_text()
    assert '<tr class="alert"><td>polarity</td>' in html
    assert html.count("<tr data-flag=") == 36 and html.count('data-flag="incorrect"') == 6

    # The flagged examples go to Label Studio with the model's answer as a draft...
    tasks_path = tmp_path / "labelstudio" / "tasks.json"
    _cli("monitor", "export", "--flagged", "--since", "1d", "--out", str(tasks_path), *store)
    tasks = json.loads(tasks_path.read_text())
    assert len(tasks) == 6
    assert all(t["predictions"][0]["model_version"].startswith("smoke-") for t in tasks)
    # ...an annotator fixes the transcription of each drafted line, Label Studio exports...
    for number, task in enumerate(tasks, 1):
        result = json.loads(json.dumps(task["predictions"][0]["result"]))
        for item in result:
            if item["type"] == "textarea":
                item["value"]["text"] = [answers[task["data"]["request_id"]]["truth"]]
        task["annotations"] = [
            {
                "id": number,
                "result": result,
                "was_cancelled": False,
                "updated_at": "2026-11-28T09:00:00Z",
            }
        ]
    export = tmp_path / "labelstudio" / "export.json"
    export.write_text(json.dumps(tasks))
    annotated = tmp_path / "annotated"
    _cli(
        "annotate",
        "import",
        str(export),
        "--out",
        str(annotated),
        "--images-root",
        str(tasks_path.parent),
    )
    labelled = [s for s in Manifest.load(annotated) if s.kind == "line"]  # (+ page samples)
    assert sorted(s.text for s in labelled) == sorted(answers[r]["truth"] for r in wrong[:6])

    # ...and the users' own corrections become a dataset version directly.
    feedback = tmp_path / "feedback"
    output = _cli(
        "monitor", "feedback-dataset", "--out", str(feedback), "--merge", str(annotated), *store
    )
    merged = Manifest.load(feedback)
    assert f"version {merged.version}" in output
    corrected = [s for s in merged if s.source == "feedback"]
    assert sorted(s.text for s in corrected) == sorted(answers[r]["truth"] for r in wrong[:6])
    assert len(merged) == len(corrected) + len(Manifest.load(annotated))
