"""The web app (Gradio): drop in handwriting, read the text, flag wrong answers.

The app talks to a :class:`Backend`: :class:`LocalBackend` runs the model in this process,
:class:`HttpBackend` calls a Quill REST API by URL, so the UI and the model scale apart.
Flags go through :class:`StoreFlaggingCallback`, a Gradio flagging callback that writes to
the monitoring store (directly, or through the API's ``/v1/feedback``), not to a CSV.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from quill.serving.errors import ServingError
from quill.serving.service import PredictionService, load_service
from quill.serving.settings import ServingSettings

EXAMPLES_DIR = Path(__file__).parent / "examples"
FLAGS = ("incorrect", "offensive", "other")
HTTP_TIMEOUT_S = 60.0

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


class Backend(Protocol):
    """Where the app sends images and flags."""

    description: str

    def predict(self, image: bytes) -> dict[str, Any]: ...

    def feedback(self, request_id: str, flag: str | None, correction: str | None) -> None: ...


class LocalBackend:
    """The model in this process, predictions and flags logged to the monitoring store."""

    def __init__(self, service: PredictionService):
        self.service = service
        self.description = f"local model {service.model_version}"

    def predict(self, image: bytes) -> dict[str, Any]:
        return self.service.predict_bytes(image, client="app")

    def feedback(self, request_id: str, flag: str | None, correction: str | None) -> None:
        self.service.add_feedback(request_id, flag, correction=correction)


class HttpBackend:
    """A Quill REST API at ``url`` (it logs predictions and stores flags itself)."""

    def __init__(self, url: str, timeout_s: float = HTTP_TIMEOUT_S):
        import httpx

        self.url = url.rstrip("/")
        self.client = httpx.Client(base_url=self.url, timeout=timeout_s)
        self.description = f"REST API at {self.url}"

    def _call(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        import httpx

        try:
            response = self.client.post(path, json=payload)
        except httpx.HTTPError as exc:
            raise ServingError(
                "backend_unreachable", f"cannot reach the API at {self.url}: {exc}", 502
            ) from exc
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code >= 400:
            error = body.get("error", {}) if isinstance(body, dict) else {}
            raise ServingError(
                error.get("code", "backend_error"),
                error.get("message", f"the API answered HTTP {response.status_code}"),
                response.status_code,
            )
        return body

    def predict(self, image: bytes) -> dict[str, Any]:
        return self._call("/v1/predict", {"image": base64.b64encode(image).decode("ascii")})

    def feedback(self, request_id: str, flag: str | None, correction: str | None) -> None:
        self._call(
            "/v1/feedback", {"request_id": request_id, "flag": flag, "correction": correction}
        )


def make_backend(spec: str, settings: ServingSettings) -> Backend:
    """``local`` (load ``settings.model_dir`` here) or the URL of a running API."""
    if spec.startswith(("http://", "https://")):
        return HttpBackend(spec)
    if spec != "local":
        raise ValueError(f"backend must be 'local' or an http(s) URL, got {spec!r}")
    return LocalBackend(load_service(settings))


def editor_image(value: Any) -> Image.Image | None:
    """The picture in an ImageEditor value (its composite, i.e. after cropping), or None.

    Transparent areas (a cropped or empty canvas) become white paper.

    >>> editor_image(None) is None
    True
    >>> editor_image({"background": None, "layers": [], "composite": None}) is None
    True
    """
    if value is None:
        return None
    image = value.get("composite") if isinstance(value, dict) else value
    if image is None:
        return None
    if not isinstance(image, Image.Image):
        image = Image.open(image) if isinstance(image, str | Path) else Image.fromarray(image)
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, rgba)
    return image.convert("RGB")


def to_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def example_paths() -> list[str]:
    return sorted(str(p) for p in EXAMPLES_DIR.glob("*.png"))


def store_flagging_callback_class() -> type:
    """The Gradio flagging callback class (built on first use: gradio is imported lazily)."""
    import gradio as gr

    class StoreFlaggingCallback(gr.FlaggingCallback):
        """Gradio's flagging hook, writing to the monitoring store through a backend.

        ``flag_data`` is ``[request_id, correction]``; a failed write raises (shown to the
        user) instead of being lost silently.
        """

        def __init__(self, backend: Backend):
            self.backend = backend
            self.count = 0

        def setup(self, components: list, flagging_dir: str) -> None:
            self.components = components

        def flag(
            self, flag_data: list[Any], flag_option: str | None = None, username: str | None = None
        ) -> int:
            request_id, correction = flag_data
            if not request_id:
                raise ServingError("missing_request_id", "read an image before flagging it")
            self.backend.feedback(request_id, flag_option, (correction or "").strip() or None)
            self.count += 1
            return self.count

    return StoreFlaggingCallback


def build_app(backend: Backend) -> Any:
    """The Gradio Blocks of the web app, bound to ``backend``."""
    import gradio as gr

    callback = store_flagging_callback_class()(backend)

    def read(value: Any) -> tuple[str, str, str, Any, str]:
        image = editor_image(value)
        if image is None:
            raise gr.Error("Add an image first: upload, paste or take a photo.")
        try:
            answer = backend.predict(to_png(image))
        except ServingError as exc:
            raise gr.Error(f"{exc.message} ({exc.code})") from exc
        confidence = f"{answer['confidence']:.0%}"
        keys = ("request_id", "lines", "model_version", "latency_ms", "cached")
        details = {k: answer[k] for k in keys}
        return answer["text"], confidence, answer["request_id"], details, ""

    def flag(option: str):  # noqa: ANN202 - a Gradio event handler
        def handler(request_id: str, correction: str) -> str:
            try:
                callback.flag([request_id, correction], flag_option=option)
            except ServingError as exc:
                raise gr.Error(exc.message) from exc
            kept = " with your correction" if (correction or "").strip() else ""
            return f"Thanks: flagged as **{option}**{kept}."

        return handler

    with gr.Blocks(title="Quill: handwriting to text") as demo:
        gr.Markdown(
            "# Quill\nDrop in a photo or scan of handwriting (a line or a paragraph), crop it "
            f"if needed, and read it. Serving: {backend.description}."
        )
        with gr.Row():
            with gr.Column():
                image = gr.ImageEditor(
                    label="Handwriting (upload, paste or webcam; crop with the editor)",
                    sources=("upload", "clipboard", "webcam"),
                    transforms=("crop",),
                    type="pil",
                    image_mode="RGB",
                    brush=False,
                    eraser=False,
                    layers=False,
                    format="png",
                    elem_id="quill-image",
                )
                read_button = gr.Button("Read", variant="primary", elem_id="quill-read")
            with gr.Column():
                text = gr.Textbox(label="Text", lines=6, elem_id="quill-text")
                confidence = gr.Textbox(label="Confidence", elem_id="quill-confidence")
                with gr.Accordion("Details", open=False):
                    details = gr.JSON(label="Lines, model version, latency")
                correction = gr.Textbox(
                    label="Correct text (optional, sent with a flag)", elem_id="quill-correction"
                )
                with gr.Row():
                    buttons = {
                        option: gr.Button(f"Flag: {option}", elem_id=f"quill-flag-{option}")
                        for option in FLAGS
                    }
                status = gr.Markdown(elem_id="quill-flag-status")
        request_id = gr.State("")
        callback.setup([request_id, correction], "")
        outputs = [text, confidence, request_id, details, status]
        read_button.click(read, inputs=image, outputs=outputs, api_name="predict")
        if example_paths():
            gr.Examples(example_paths(), inputs=image, outputs=outputs, fn=read, run_on_click=True)
        for option, button in buttons.items():
            button.click(
                flag(option),
                inputs=[request_id, correction],
                outputs=status,
                api_visibility="private",
            )
    return demo


def launch(backend: Backend, host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> Any:
    """Serve the app on ``host:port`` (offline: no share link, no analytics)."""
    demo = build_app(backend)
    demo.queue(default_concurrency_limit=2)
    demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        prevent_thread_lock=not block,
        show_error=True,
        quiet=not block,
    )
    return demo
