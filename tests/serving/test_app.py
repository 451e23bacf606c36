"""The web app: backends, store-backed flagging, and a real browser session."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from quill.monitoring.store import MonitoringStore
from quill.serving.app import (
    HttpBackend,
    LocalBackend,
    editor_image,
    example_paths,
    launch,
    store_flagging_callback_class,
    to_png,
)
from quill.serving.errors import ServingError
from quill.serving.runner import ApiServer
from quill.serving.service import load_service
from quill.serving.settings import ServingSettings
from quill.staging.parity import render_line


@pytest.fixture(scope="module")
def settings(smoke_model: Path, tmp_path_factory: pytest.TempPathFactory) -> ServingSettings:
    root = tmp_path_factory.mktemp("app-monitoring")
    return ServingSettings(
        model_dir=smoke_model,
        threads=1,
        monitoring_url=f"sqlite:///{root / 'monitoring.db'}",
        monitoring_images=root / "images",
    )


@pytest.fixture(scope="module")
def api(settings: ServingSettings) -> Iterator[ApiServer]:
    with ApiServer(settings) as server:
        yield server


def stored(settings: ServingSettings) -> MonitoringStore:
    return MonitoringStore(settings.monitoring_url, settings.monitoring_images)


def test_local_backend_flags_land_in_the_store(settings: ServingSettings) -> None:
    backend = LocalBackend(load_service(settings))
    answer = backend.predict(to_png(render_line("Kew")))
    assert answer["text"] == "Kew"
    callback = store_flagging_callback_class()(backend)
    callback.setup([], "")
    assert callback.flag([answer["request_id"], " Kew Gardens "], flag_option="other") == 1
    with pytest.raises(ServingError, match="read an image"):
        callback.flag(["", ""], flag_option="incorrect")
    backend.service.close()
    record = stored(settings).get_prediction(answer["request_id"])
    assert record is not None and record.client == "app"
    assert record.flag == "other" and record.correction == "Kew Gardens"


def test_http_backend_passes_api_errors_through(api: ApiServer) -> None:
    backend = HttpBackend(api.url)
    assert backend.predict(to_png(render_line("ink")))["text"] == "ink"
    with pytest.raises(ServingError) as error:
        backend.predict(b"definitely not an image")
    assert error.value.code == "not_an_image" and error.value.status == 400
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(ServingError) as down:
        HttpBackend(f"http://127.0.0.1:{closed_port}", timeout_s=2).predict(b"x")
    assert down.value.code == "backend_unreachable"


def test_editor_composite_is_flattened_onto_white_paper() -> None:
    rgba = Image.new("RGBA", (10, 6), (0, 0, 0, 0))
    rgba.putpixel((2, 2), (0, 0, 255, 255))
    image = editor_image({"background": rgba, "layers": [], "composite": rgba})
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 255, 255) and image.getpixel((2, 2)) == (0, 0, 255)


def test_example_images_ship_with_their_texts() -> None:
    paths = example_paths()
    texts = json.loads((Path(paths[0]).parent / "texts.json").read_text())
    assert len(paths) >= 3 and {Path(p).name for p in paths} == set(texts)
    for path in paths:
        assert Path(path).stat().st_size < 100_000
        with Image.open(path) as image:
            assert min(image.size) >= 32


def upload_until_shown(page, path: Path, attempts: int = 8) -> None:  # noqa: ANN001
    """Choose ``path`` in the editor's file input until the editor shows it: Gradio renders
    in steps, and a file given to an input that is then re-rendered is dropped."""
    page.wait_for_selector("#quill-flag-other")
    for _ in range(attempts):
        page.locator("#quill-image input[type=file]").first.set_input_files(str(path))
        try:
            page.get_by_text("Upload an image").wait_for(state="detached", timeout=15_000)
            return
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: choose the file again
            continue
    raise AssertionError("the image editor never showed the upload")


def read_until_text(page, attempts: int = 20) -> str:  # noqa: ANN001 - a playwright Page
    """Press Read until text appears: the editor loads an upload into its canvas
    asynchronously, and a press before that answers 'Add an image first'."""
    for _ in range(attempts):
        page.click("#quill-read")
        try:
            page.wait_for_function(
                "document.querySelector('#quill-text textarea').value.length > 0", timeout=5_000
            )
            return page.input_value("#quill-text textarea")
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: not loaded yet, retry
            continue
    raise AssertionError("the app never showed a text")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.browser
@pytest.mark.slow
def test_browser_reads_an_upload_and_an_example_and_flags_it(
    api: ApiServer, settings: ServingSettings, tmp_path: Path, chromium_launch: dict
) -> None:
    """The app in URL mode (it calls the REST API), driven by headless Chromium."""
    from playwright.sync_api import sync_playwright

    upload = tmp_path / "quill.png"
    render_line("quill").save(upload)
    port = free_port()
    demo = launch(HttpBackend(api.url), port=port, block=False)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(**chromium_launch)
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}")
            upload_until_shown(page, upload)
            read_until_text(page)
            assert page.input_value("#quill-text textarea") == "quill"
            assert page.input_value("#quill-confidence textarea").endswith("%")
            page.fill("#quill-correction textarea", "quill pen")
            page.click("#quill-flag-incorrect")
            page.wait_for_function(
                "document.querySelector('#quill-flag-status').innerText.includes('Thanks')",
                timeout=60_000,
            )

            example = example_paths()[0]
            expected = api.service.recognizer.predict([Image.open(example).convert("RGB")])[0].text
            page.locator("[data-testid='examples'] button, .gallery-item").first.click()
            page.wait_for_function(
                "text => document.querySelector('#quill-text textarea').value === text",
                arg=expected,
                timeout=60_000,
            )
            browser.close()
    finally:
        demo.close()
    api.service.logger.flush()
    texts = [p.text for p in stored(settings).predictions()]
    assert texts[-2:] == ["quill", expected]  # both answers came through the API
    flagged = [p for p in stored(settings).predictions(flagged=True) if p.client != "app"]
    assert [(p.text, p.flag, p.correction) for p in flagged] == [
        ("quill", "incorrect", "quill pen")
    ]
    assert flagged[0].client == "api"  # the app stored it through the API
