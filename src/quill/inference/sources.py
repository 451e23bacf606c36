"""Turn any supported input (path, URL, bytes, PIL image, array, loaded image) into a PIL
image.

URLs are for online users only: Quill itself never needs the network, so a URL is fetched
with a short timeout and a size cap, and any failure becomes an ``ImageError`` that names the
URL rather than a hang or a stack trace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from PIL import Image

from quill.preprocess import MAX_PIXELS, ImageError, ImageSource, read_image

T = TypeVar("T")

URL_TIMEOUT_S = 10.0
MAX_URL_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True, eq=False)
class LoadedImage:
    """An image decoded once, with the bytes it was decoded from.

    Serving makes one per request (:meth:`from_bytes`) and hands it on: ``Recognizer.predict``
    takes it like any input and reads :attr:`image` without decoding again; the monitoring
    record stores :attr:`data` as it came and computes its projections from :attr:`image`.
    """

    #: Upright, mode L (greyscale) or RGB: what :func:`open_image` makes of any input.
    image: Image.Image
    #: The encoded bytes as received; None for an image made in memory.
    data: bytes | None = None

    @classmethod
    def from_bytes(cls, data: bytes, max_pixels: int = MAX_PIXELS) -> LoadedImage:
        """Decode ``data``; ``ImageError`` naming the problem (absurd shapes are refused from
        the header, before decoding)."""
        return cls(read_image(data, max_pixels), data)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the upright image."""
        return self.image.size

    @property
    def pixels(self) -> int:
        """Pixels of the decoded image: what holding it costs."""
        return self.image.width * self.image.height


def decoded_in_groups(
    sources: Iterable[T],
    decode: Callable[[T], LoadedImage],
    max_pixels: int,
    max_images: int | None = None,
) -> Iterator[list[tuple[T, LoadedImage | ImageError]]]:
    """``sources`` decoded a group at a time, each with its image or why it cannot be read
    (``decode`` raises ImageError), a group ending once it holds ``max_pixels`` decoded
    pixels or ``max_images`` images: a folder or a batch of large photos is never decoded
    all at once (16 grey scans of 8000 x 6000 in one group peaked at 3.1 GB).

    A group is emptied when the next is asked for, so that its images are freed before the
    next are decoded (the caller's loop variable still holds it until then)."""
    group: list[tuple[T, LoadedImage | ImageError]] = []
    pixels = 0
    for source in sources:
        try:
            image: LoadedImage | ImageError = decode(source)
        except ImageError as exc:
            image = exc
        group.append((source, image))
        pixels += image.pixels if isinstance(image, LoadedImage) else 0
        if pixels >= max_pixels or len(group) == max_images:
            yield group
            group.clear()
            pixels = 0
    if group:
        yield group


#: What ``Recognizer.predict`` accepts: everything ``load_image`` reads, http(s) URLs, and
#: a :class:`LoadedImage`.
InputImage = ImageSource | LoadedImage


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
    decoding (:func:`quill.preprocess.check_size`). A :class:`LoadedImage` is not decoded
    again."""
    if isinstance(source, LoadedImage):
        return source.image
    if is_url(source):
        return read_image(fetch_url(str(source)))
    if isinstance(source, str | Path) and not str(source):
        raise ImageError("image_not_found", "an empty path was given instead of an image")
    return read_image(source)
