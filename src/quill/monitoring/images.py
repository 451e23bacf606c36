"""Content-addressed image storage on a local folder or any fsspec URL (``s3://...``).

Images never go into the database: each is stored once, as a file named by the SHA-256 of
its bytes, under ``<root>/<first two hex digits>/<sha256>.<ext>``. The same photo sent twice
is stored once, and a database row needs only the hash to find it again.
"""

from __future__ import annotations

import hashlib
import posixpath
import uuid

import fsspec

from quill.errors import QuillError

#: The file in an image root naming the monitoring store its images belong to.
OWNER_FILE = ".quill-store"


class ImageRootTaken(QuillError, ValueError):
    """An image folder already holds another monitoring store's images.

    Images are shared by content across the predictions of one store, and a purge deletes
    those its own rows no longer point to: two stores in one folder would delete each
    other's photos.
    """

    code = "image_root_taken"


#: Leading bytes of the formats :func:`quill.preprocess.load_image` accepts.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tif"),
    (b"MM\x00*", "tif"),
)


def image_extension(data: bytes) -> str:
    """File extension for encoded image bytes, from their magic number ("bin" if unknown).

    >>> image_extension(b"\\x89PNG\\r\\n\\x1a\\n...")
    'png'
    >>> image_extension(b"RIFF\\x00\\x00\\x00\\x00WEBPVP8 ")
    'webp'
    """
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    return "bin"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ImageStore:
    """Put, get and delete images by content hash under ``root`` (path or fsspec URL)."""

    def __init__(self, root: str, owner: str | None = None, **storage_options: object):
        """``owner``: the store whose images these are (:data:`OWNER_FILE`). A root another
        store holds can be read (a store copied or moved elsewhere keeps its folder's mark),
        but its first write or deletion is refused (:class:`ImageRootTaken`); the first
        write or deletion marks a root no store holds yet as this one's."""
        self.root = str(root).rstrip("/")
        self.fs, self._base = fsspec.core.url_to_fs(self.root, **storage_options)
        self.owner = owner
        self._holder = self.holder() if owner is not None else None
        self._claimed = self._holder is not None and self._holder == owner

    def holder(self) -> str | None:
        """The store this root's images belong to, if one has written or deleted here."""
        try:
            with self.fs.open(posixpath.join(self._base, OWNER_FILE), "rb") as handle:
                return handle.read().decode("utf-8").strip() or None
        except FileNotFoundError:
            return None

    def check_owner(self) -> None:
        """Refuse (:class:`ImageRootTaken`) a root another store holds, before a write or
        deletion: a purge of one would delete the other's photos. Reading is never refused.
        """
        if self._holder in (None, self.owner):
            return
        mark = posixpath.join(self.root, OWNER_FILE)
        raise ImageRootTaken(
            f"the image folder {self.root} holds the images of another monitoring store "
            f"({self._holder}); a purge of one would delete the other's: give the store "
            f"{self.owner} a folder of its own (--images or $QUILL_MONITORING_IMAGES), or, if "
            f"it is that store copied or moved here, delete {mark} so that its next write "
            "marks the folder as its own"
        )

    def claim(self) -> None:
        """Mark the root as :attr:`owner`'s, once, before its first write or deletion
        (:meth:`check_owner` first)."""
        if self.owner is None or self._claimed:
            return
        self.check_owner()
        self.fs.makedirs(self._base, exist_ok=True)
        with self.fs.open(posixpath.join(self._base, OWNER_FILE), "wb") as handle:
            handle.write(self.owner.encode("utf-8") + b"\n")
        self._holder = self.owner
        self._claimed = True

    def _path(self, sha256: str, ext: str) -> str:
        return posixpath.join(self._base, sha256[:2], f"{sha256}.{ext}")

    def url(self, sha256: str, ext: str) -> str:
        """Where the image lives: a path for a local store, a URL (``s3://...``) otherwise."""
        path = self._path(sha256, ext)
        return path if self.is_local else self.fs.unstrip_protocol(path)

    def local_path(self, sha256: str, ext: str) -> str | None:
        """A filesystem path for local stores, None for remote ones."""
        return self._path(sha256, ext) if self.is_local else None

    @property
    def is_local(self) -> bool:
        protocol = self.fs.protocol
        return "file" in (protocol if isinstance(protocol, tuple) else (protocol,))

    def put(self, data: bytes) -> tuple[str, str]:
        """Store ``data`` (once) and return its (sha256, extension)."""
        digest, ext = sha256_hex(data), image_extension(data)
        path = self._path(digest, ext)
        self.claim()
        if not self.fs.exists(path):
            self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
            # Write under a temporary name, then move: a reader never sees half an image.
            partial = f"{path}.partial-{uuid.uuid4().hex}"
            with self.fs.open(partial, "wb") as handle:
                handle.write(data)
            self.fs.mv(partial, path)
        return digest, ext

    def get(self, sha256: str, ext: str) -> bytes:
        """The bytes of a stored image; FileNotFoundError naming it if it is gone."""
        path = self._path(sha256, ext)
        try:
            with self.fs.open(path, "rb") as handle:
                return handle.read()
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"image {sha256}.{ext} not found under {self.root}") from exc

    def exists(self, sha256: str, ext: str) -> bool:
        return bool(self.fs.exists(self._path(sha256, ext)))

    def delete(self, sha256: str, ext: str) -> bool:
        """Remove an image; True if it existed."""
        path = self._path(sha256, ext)
        if not self.fs.exists(path):
            return False
        self.claim()
        self.fs.rm(path)
        return True
