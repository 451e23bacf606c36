"""Turn any supported input (path, URL, bytes, PIL image, array) into a PIL image.

URLs are for online users only: Quill itself never needs the network, so a URL is fetched
with a short timeout and a size cap, and any failure becomes an ``ImageError`` that names the
URL rather than a hang or a stack trace.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from quill.preprocess import ImageError, ImageSource, read_image

URL_TIMEOUT_S = 10.0
MAX_URL_BYTES = 20 * 1024 * 1024

#: What ``Recognizer.predict`` accepts: everything ``load_image`` reads, plus http(s) URLs.
InputImage = ImageSource


def is_url(source: object) -> bool:
    """
    >>> is_url("https://example.org/a.png"), is_url("scans/a.png"), is_url(b"http://")
    (True, False, False)
    """
    return isinstance(source, str) and source.lower().startswith(("http://", "https://"))


def fetch_url(url: str, timeout_s: float = URL_TIMEOUT_S) -> bytes:
    """The body of ``url`` (at most ``MAX_URL_BYTES``), or ``ImageError("url_fetch_failed")``."""
    import httpx

    try:
        with httpx.stream("GET", url, timeout=timeout_s, follow_redirects=True) as response:
            response.raise_for_status()
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_URL_BYTES:
                    raise ImageError(
                        "image_too_large", f"{url} is larger than {MAX_URL_BYTES:,} bytes"
                    )
            return bytes(body)
    except httpx.HTTPError as exc:
        raise ImageError(
            "url_fetch_failed", f"could not download {url} (are you online?): {exc}"
        ) from exc


def open_image(source: InputImage) -> Image.Image:
    """An upright image, mode L (greyscale) or RGB, from any supported input; raises
    ``ImageError`` naming the input. Absurd shapes are refused from the header, before
    decoding (:func:`quill.preprocess.check_size`)."""
    if is_url(source):
        return read_image(fetch_url(str(source)))
    if isinstance(source, str | Path) and not str(source):
        raise ImageError("image_not_found", "an empty path was given instead of an image")
    return read_image(source)
