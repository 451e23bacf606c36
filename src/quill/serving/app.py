"""The web app (Gradio): drop in handwriting, read the text, flag wrong answers.

The app talks to a :class:`Backend`: :class:`LocalBackend` runs the model in this process,
:class:`HttpBackend` calls a Quill REST API by URL, so the UI and the model scale apart.
Flags go through :class:`StoreFlaggingCallback`, a Gradio flagging callback that writes to
the monitoring store (directly, or through the API's ``/v1/feedback``), not to a CSV.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from quill.evaluation.normalise import normalise
from quill.monitoring.records import FLAGS
from quill.serving.errors import ServingError
from quill.serving.recent import Recent
from quill.serving.service import PredictionService, load_service
from quill.serving.settings import ServingSettings

log = logging.getLogger(__name__)

EXAMPLES_DIR = Path(__file__).parent / "examples"
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
    """A Quill REST API at ``url`` (it logs predictions and stores flags itself).

    The API answers each prediction with a ``feedback_token`` that a flag must quote: the
    backend keeps the tokens of its recent answers (the app's flags name only the request
    id). ``api_key`` is sent as ``X-API-Key`` for an API that requires one.
    """

    #: Answers whose feedback tokens are kept (a flag comes soon after its answer).
    KEPT_TOKENS = 4096

    def __init__(self, url: str, timeout_s: float = HTTP_TIMEOUT_S, api_key: str | None = None):
        import httpx

        self.url = url.rstrip("/")
        headers = {"X-API-Key": api_key} if api_key else {}
        self.client = httpx.Client(base_url=self.url, timeout=timeout_s, headers=headers)
        self.description = f"REST API at {self.url}"
        self._tokens: Recent[str, str] = Recent(self.KEPT_TOKENS)

    def _call(self, path: str, **request: Any) -> dict[str, Any]:
        import httpx

        try:
            response = self.client.post(path, **request)
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
        # multipart: the file's bytes as they are (no base64, a third smaller on the wire)
        answer = self._call("/v1/predict", files={"image": ("image", image)})
        token = answer.get("feedback_token")
        if token:
            self._tokens.put(answer["request_id"], token)
        return answer

    def feedback(self, request_id: str, flag: str | None, correction: str | None) -> None:
        token = self._tokens.get(request_id)
        payload = {"request_id": request_id, "flag": flag, "correction": correction}
        if token:
            payload["feedback_token"] = token
        self._call("/v1/feedback", json=payload)


def make_backend(spec: str, settings: ServingSettings) -> Backend:
    """``local`` (load ``settings.model_dir`` here) or the URL of a running API."""
    if spec.startswith(("http://", "https://")):
        return HttpBackend(spec, api_key=getattr(settings, "api_key", None) or None)
    if spec != "local":
        raise ValueError(f"backend must be 'local' or an http(s) URL, got {spec!r}")
    return LocalBackend(load_service(settings))


def read_upload(value: Any) -> bytes | None:
    """The bytes of the uploaded file exactly as the user sent them, or None (no image).

    ``value`` is a path (an example, preprocessed by Gradio) or the upload's FileData as a
    dict (the Read button's event skips preprocessing, so that a file PIL cannot open gets
    Quill's message). The app hands the model the original file (JPEG, PNG, TIFF...): no
    decode and re-encode in the browser or here, which was slow for a page photo and
    changed the result.

    Only a file Gradio holds for this app is read: one in its upload cache (an upload, or an
    example it copied there) or one of the examples. The Read button's endpoint takes a path
    from whoever calls it, and read any file on the server (its text and preview came back).

    >>> read_upload(None) is None and read_upload("") is None
    True
    """
    if not value:
        return None
    path = value.get("path") if isinstance(value, dict) else value
    if not path:
        return None
    from gradio.utils import get_upload_folder  # lazy: gradio is imported by build_app

    source = Path(str(path)).resolve()
    held = (Path(get_upload_folder()).resolve(), EXAMPLES_DIR.resolve())
    if not any(source.is_relative_to(folder) for folder in held) or not source.is_file():
        raise ServingError(
            "image_not_found", "no such upload: send the image itself, not a path on the server"
        )
    return source.read_bytes()


#: Longest side of the annotated preview (the drawing is for the eye, not for the model).
PREVIEW_SIDE = 1600
#: Outline colours of successive lines, so that neighbours are told apart.
LINE_COLOURS = ((220, 50, 47), (38, 139, 210), (133, 153, 0), (211, 54, 130), (181, 137, 0))


def draw_lines(
    image: bytes, lines: list[dict[str, Any]], max_side: int = PREVIEW_SIDE, rotation: int = 0
) -> Any:
    """A preview of ``image`` with each line found boxed and labelled with its text.

    ``lines`` are the answer's lines (``box`` = left, top, right, bottom in the upright
    image's pixels, as the API returns them). The preview is scaled to ``max_side`` at most
    and decoded at a reduced size where the format allows it (JPEG), so a page photo stays
    cheap to draw and to send to the browser. A page that was turned to be read (its
    ``page.rotation``) is drawn turned, so its labels read along its lines (drawn on the page
    as sent, sideways, they were piled on one another). None when the image cannot be opened.
    """
    from PIL import ImageDraw, ImageFont, ImageOps

    # lazy: segmentation imports scipy, which an app calling an API never needs otherwise
    from quill.models.segment import TRANSPOSE, turned_box

    try:
        picture: Image.Image = Image.open(io.BytesIO(image))
        width, height = picture.size
        if picture.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # stored sideways
            width, height = height, width
        scale = min(1.0, max_side / max(width, height))
        picture.draft("RGB", (int(picture.width * scale) + 1, int(picture.height * scale) + 1))
        picture = ImageOps.exif_transpose(picture).convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    picture = picture.resize(size, Image.Resampling.LANCZOS) if picture.size != size else picture
    boxes = [tuple(round(v * scale) for v in line["box"]) for line in lines]
    if rotation in TRANSPOSE:
        boxes = [turned_box(box, rotation, picture.size) for box in boxes]
        picture = picture.transpose(TRANSPOSE[rotation])
    overlay = Image.new("RGBA", picture.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    heights = sorted(box[3] - box[1] for box in boxes) or [20]
    font = ImageFont.load_default(size=max(11, min(40, round(heights[len(heights) // 2] * 0.4))))
    for number, (line, (left, top, right, bottom)) in enumerate(zip(lines, boxes, strict=True)):
        colour = LINE_COLOURS[number % len(LINE_COLOURS)]
        draw.rectangle(
            (left, top, right, bottom),
            fill=(*colour, 28),
            outline=(*colour, 255),
            width=max(2, round(picture.width / 600)),
        )
        label = line["text"] or "(nothing read)"
        if line.get("margin"):
            label = f"margin note: {label}"
        text_box = draw.textbbox((0, 0), label, font=font)
        label_h = text_box[3] - text_box[1] + 6
        y = top - label_h if top - label_h >= 0 else top
        draw.rectangle(
            (left, y, left + text_box[2] - text_box[0] + 8, y + label_h),
            fill=(255, 255, 255, 215),
            outline=(*colour, 255),
        )
        draw.text(
            (left + 4 - text_box[0], y + 3 - text_box[1]), label, font=font, fill=(*colour, 255)
        )
    return Image.alpha_composite(picture.convert("RGBA"), overlay).convert("RGB")


def sentence(note: str) -> str:
    """A note of the answer as a sentence of the app's message (the notes are clauses).

    >>> sentence("no text found: the image is blank")
    'No text found: the image is blank.'
    """
    return note[:1].upper() + note[1:] + ("" if note.endswith((".", "!", "?")) else ".")


def to_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def example_paths() -> list[str]:
    """The example images, in the order of ``examples.json`` (captions, attribution)."""
    return [str(EXAMPLES_DIR / name) for name in example_catalogue()]


def example_catalogue() -> dict[str, dict[str, str]]:
    """``examples.json``: per file, its ``text``, ``caption`` and ``group`` (synthetic, real)."""
    return json.loads((EXAMPLES_DIR / "examples.json").read_text(encoding="utf-8"))


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

        def setup(self, components: Sequence[Any], flagging_dir: str) -> None:
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


#: Answers whose last flag the app remembers, so that a second press stores nothing.
FLAGS_REMEMBERED = 4096

#: Closes the toasts of an earlier read (run in the browser when a new image comes or Read is
#: pressed), so an old error does not sit beside a new answer.
CLOSE_TOASTS_JS = "() => { document.querySelectorAll('.toast-close').forEach(b => b.click()); }"
#: Installed when the page loads: a file that is not an image (a PDF dropped on the image
#: box, or chosen with the picker's "All files") is ignored by Gradio's image input without a
#: word, and Read then read the image still shown. Its name and type are said in a line of
#: its own under the box (not in a Gradio component, whose next update would overwrite it),
#: until an image is chosen.
NOT_AN_IMAGE_JS = """() => {
  const box = document.querySelector('#quill-image');
  if (!box || box.dataset.quillGuard) return;
  box.dataset.quillGuard = '1';
  const warning = document.createElement('p');
  warning.id = 'quill-file-warning';
  warning.style.color = 'var(--error-text-color, #b91c1c)';
  box.after(warning);
  const check = (files) => {
    const file = files && files[0];
    if (!file) return;
    warning.innerText = file.type.startsWith('image/') ? '' :
      `${file.name} is not an image (${file.type || 'type unknown'}): Quill reads photos and ` +
      'scans saved as PNG, JPEG, TIFF or WebP (save a PDF page as an image first). ' +
      'The image shown is still the one Read reads.';
  };
  box.addEventListener('change', (event) => {
    if (event.target.matches('input[type=file]')) check(event.target.files);
  }, true);
  box.addEventListener('drop', (event) => {
    if (event.dataTransfer) check(event.dataTransfer.files);
  }, true);
}"""
NO_IMAGE = "**Add an image first**: upload, paste or take a photo of handwriting, then press Read."


def build_app(backend: Backend) -> Any:
    """The Gradio Blocks of the web app, bound to ``backend``."""
    import gradio as gr

    callback = store_flagging_callback_class()(backend)

    def cleared(message: str = "") -> tuple[Any, ...]:
        """Every output reset: text, confidence, request id, details, flag status, correction,
        lines preview, message."""
        return "", "", "", None, "", "", None, message

    def read(value: Any) -> tuple[Any, ...]:
        try:
            image = read_upload(value)
            if image is None:
                return cleared(NO_IMAGE)
            answer = backend.predict(image)
        except ServingError as exc:
            if exc.status >= 500:  # the service, not the image: say so
                log.warning("the app could not read an image: %s (%s)", exc.message, exc.code)
                return cleared(
                    f"**Quill cannot read images right now**: {exc.message} (`{exc.code}`); "
                    "try again in a moment"
                )
            return cleared(f"**Could not read this image**: {exc.message} (`{exc.code}`)")
        keys = (
            "request_id", "lines", "page", "note", "language", "model_version", "latency_ms",
            "cached",
        )  # fmt: skip
        details = {k: answer[k] for k in keys if answer.get(k) is not None}
        lines = answer.get("lines") or []
        found = [answer["note"]] if answer.get("note") else []
        found += (answer.get("page") or {}).get("notes", [])
        took = f"{answer.get('latency_ms', 0):.0f} ms"
        if answer.get("note") and not answer["text"]:  # blank paper, marks that are not writing
            summary = f"Nothing to read ({took})."
        else:
            summary = f"Read {len(lines)} line{'s' if len(lines) != 1 else ''} in {took}."
        return (
            answer["text"],
            f"{answer['confidence']:.0%}",
            answer["request_id"],
            details,
            "",
            answer["text"],  # the correction starts as the reading: fix it where it is wrong
            draw_lines(image, lines, rotation=(answer.get("page") or {}).get("rotation", 0)),
            " ".join([summary, *(sentence(note) for note in found)]),
        )

    # The last flag stored for each answer: pressing a button twice stored two rows. Gradio
    # runs handlers on several threads, so the check and the store are one step under a lock
    # (two quick presses could otherwise both pass the check).
    stored_flags: Recent[str, tuple[str, str]] = Recent(FLAGS_REMEMBERED)
    flags_lock = threading.Lock()

    def flag(option: str):  # noqa: ANN202 - a Gradio event handler
        def handler(request_id: str, correction: str, reading: str) -> str:
            typed = normalise(correction or "")
            if typed == normalise(reading or ""):  # the box starts as the reading: unchanged,
                correction, typed = "", ""  # it corrects nothing
            kept = " with your correction" if typed else ""
            with flags_lock:
                if stored_flags.get(request_id) == (option, typed):
                    return f"Already flagged as **{option}**{kept}."
                try:
                    callback.flag([request_id, correction], flag_option=option)
                except ServingError as exc:
                    if exc.status >= 500:
                        log.warning(
                            "the app could not store a flag: %s (%s)", exc.message, exc.code
                        )
                    if exc.code == "invalid_feedback_token":  # the API restarted since
                        return (
                            "**Not flagged**: the service restarted since this answer; read "
                            "the image again, then flag it"
                        )
                    return f"**Not flagged**: {exc.message}"
                stored_flags.put(request_id, (option, typed))
            return f"Thanks: flagged as **{option}**{kept}."

        return handler

    catalogue = example_catalogue()
    with gr.Blocks(title="Quill: handwriting to text") as demo:
        gr.Markdown(
            "# Quill\nDrop in a photo or scan of handwriting (a line or a page) and read it: "
            f"the lines found are drawn on the image. Serving: {backend.description}."
        )
        with gr.Row():
            with gr.Column():
                image = gr.Image(
                    label="Handwriting (upload, paste or take a photo)",
                    sources=["upload", "clipboard", "webcam"],
                    type="filepath",  # the uploaded file as it is: never re-encoded
                    image_mode=None,
                    elem_id="quill-image",
                )
                read_button = gr.Button("Read", variant="primary", elem_id="quill-read")
                message = gr.Markdown(elem_id="quill-message")
            with gr.Column():
                text = gr.Textbox(label="Text", lines=6, elem_id="quill-text")
                confidence = gr.Textbox(label="Confidence", elem_id="quill-confidence")
                lines_image = gr.Image(
                    label="Lines found",
                    type="pil",
                    format="jpeg",
                    interactive=False,
                    elem_id="quill-lines",
                )
                with gr.Accordion("Details", open=False):
                    details = gr.JSON(label="Lines, model version, latency")
                correction = gr.Textbox(
                    label="Correct text (fix what was misread, line by line; sent with a flag)",
                    lines=3,
                    elem_id="quill-correction",
                )
                with gr.Row():
                    buttons = {
                        option: gr.Button(f"Flag: {option}", elem_id=f"quill-flag-{option}")
                        for option in FLAGS
                    }
                status = gr.Markdown(elem_id="quill-flag-status")
        request_id = gr.State("")
        callback.setup([request_id, correction], "")
        outputs = [text, confidence, request_id, details, status, correction, lines_image, message]
        for group in dict.fromkeys(entry.get("group", "Examples") for entry in catalogue.values()):
            names = [name for name, entry in catalogue.items() if entry.get("group") == group]
            gr.Examples(
                [str(EXAMPLES_DIR / name) for name in names],
                inputs=image,
                outputs=outputs,
                fn=read,
                run_on_click=True,
                label=group,
                cache_examples=False,
            )
            gr.Markdown("\n".join(f"- {catalogue[name]['caption']}" for name in names))
        # A new image (upload, paste, photo, or cleared) starts afresh: no old text,
        # correction, flag status, error badge or toast.
        image.input(lambda: cleared(), outputs=outputs, api_visibility="private")
        image.input(None, js=CLOSE_TOASTS_JS)
        demo.load(None, js=NOT_AN_IMAGE_JS)
        read_button.click(None, js=CLOSE_TOASTS_JS)
        # Unpreprocessed, ``read`` gets the upload's FileData (already checked to be in
        # Gradio's upload cache): gr.Image's preprocessing opens the file with PIL first and
        # answers a generic "Error" for a file that is not an image (empty, text, PDF)
        # before Quill's own read can give its message; the upload is read as sent anyway.
        read_button.click(read, inputs=image, outputs=outputs, api_name="predict", preprocess=False)
        for option, button in buttons.items():
            button.click(
                flag(option),
                inputs=[request_id, correction, text],
                outputs=status,
                api_visibility="private",
            )
    return demo


def launch(backend: Backend, host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> Any:
    """Serve the app on ``host:port`` (offline: no share link, no analytics, no hints about
    them: Gradio's own start-up lines are silenced and one line says where the app is)."""
    demo = build_app(backend)
    demo.queue(default_concurrency_limit=2)
    demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        prevent_thread_lock=True,
        show_error=True,
        quiet=True,
    )
    if block:
        print(f"Web app ready on http://{host}:{port} (Ctrl+C to stop)", flush=True)
        demo.block_thread()
    return demo
