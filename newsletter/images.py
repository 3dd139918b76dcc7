"""Images of an issue: local files become inline CID parts (RFC 2392), remote ones stay links."""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import struct
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

MAX_IMAGE_BYTES = 5 * 1024 * 1024  # larger than this is a mistake for an email, not an illustration


@dataclass(frozen=True)
class InlineImage:
    """A local image sent inside the message and shown through `cid:` (RFC 2392)."""

    cid: str
    filename: str
    content_type: str
    data: bytes

    @property
    def data_uri(self) -> str:
        """The image as a data: URI, for pages a browser opens outside a mail client."""
        return f"data:{self.content_type};base64,{base64.b64encode(self.data).decode('ascii')}"


@dataclass(frozen=True)
class LocalImage:
    """What became of one local image path: embedded, or the reason it could not be."""

    src: str
    image: InlineImage | None
    problem: str = ""
    width_px: int | None = None


def is_remote(src: str) -> bool:
    """True for URLs a mail client fetches itself (http, https) and for cid:/data: URIs."""
    scheme = urlsplit(src).scheme.lower()
    return scheme in ("http", "https", "cid", "data") or src.startswith("//")


def load_local_image(src: str, base_dir: Path | None) -> LocalImage:
    """Read a path relative to the issue file into an InlineImage, or say why not."""
    parts = urlsplit(src)
    if parts.scheme and parts.scheme.lower() != "file":
        return LocalImage(src, None, f"unsupported image URL scheme {parts.scheme!r}")
    if base_dir is None:
        return LocalImage(src, None, "local image, but the issue has no directory to look in")
    path = (base_dir / unquote(parts.path)).resolve()
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            return LocalImage(src, None, f"{size // 1024} KB is too large to embed")
        data = path.read_bytes()
    except OSError:
        return LocalImage(src, None, "file not found")
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    cid = f"{hashlib.sha256(data).hexdigest()[:20]}@newsletter"
    dimensions = image_size(data)
    return LocalImage(src, InlineImage(cid, path.name, content_type, data), "", dimensions[0] if dimensions else None)


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height in pixels of a PNG, GIF, JPEG or WebP, read from its header."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return int(width), int(height)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        return _webp_size(data)
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    # The WebP container's first chunk: VP8X (extended), VP8L (lossless) or VP8 (lossy) each store it apart.
    chunk = data[12:16]
    if chunk == b"VP8X":
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    index = 2
    while index + 9 < len(data):
        if data[index] != 0xFF:
            return None
        marker = data[index + 1]
        length = struct.unpack(">H", data[index + 2 : index + 4])[0]
        # SOF0..SOF15 carry the frame size, except DHT (C4), JPG (C8) and DAC (CC).
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[index + 5 : index + 9])
            return int(width), int(height)
        index += 2 + length
    return None
