"""What an issue asks of the web before it goes out: the size of its remote images, whether its links answer."""

from __future__ import annotations

import http.client
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from threading import Lock

from newsletter.images import image_size
from newsletter.settings import Settings

USER_AGENT = "newsletter (image size and link check)"
IMAGE_HEAD_BYTES = 256 * 1024  # a JPEG's frame header can sit behind a large EXIF block
READ_CHUNK_BYTES = 16 * 1024
PARALLEL_REQUESTS = 8
_tls_lock = Lock()
_tls: list[ssl.SSLContext] = []


@dataclass(frozen=True)
class LinkStatus:
    """What one URL answered: an HTTP status, or why there was none (`status` 0)."""

    url: str
    status: int
    problem: str = ""

    @property
    def broken(self) -> bool:
        return self.status == 0 or self.status >= 400


class RemoteImageSizes:
    """Width and height of remote images, each URL asked once per issue (one instance per render)."""

    def __init__(self, timeout_seconds: float) -> None:
        self.timeout_seconds = timeout_seconds
        self._sizes: dict[str, tuple[int, int] | None] = {}
        self._lock = Lock()

    def prefetch(self, urls: Iterable[str]) -> None:
        """Ask for several images at once, so an issue with many waits about one timeout, not one each."""
        todo = [
            url for url in dict.fromkeys(urls) if url.startswith(("http://", "https://")) and url not in self._sizes
        ]
        if todo:
            with ThreadPoolExecutor(min(PARALLEL_REQUESTS, len(todo))) as pool:
                list(pool.map(self, todo))

    def __call__(self, url: str) -> tuple[int, int] | None:
        with self._lock:
            if url in self._sizes:
                return self._sizes[url]
        size = _read_image_size(url, self.timeout_seconds)
        with self._lock:
            self._sizes[url] = size
        return size


def image_sizes_for(settings: Settings) -> RemoteImageSizes | None:
    """What `preview` and `send` use to read remote image sizes; None when `remote_image_sizes` is off."""
    return RemoteImageSizes(settings.remote_image_timeout) if settings.remote_image_sizes else None


def _read_image_size(url: str, timeout_seconds: float) -> tuple[int, int] | None:
    # RFC 9110 14.2: a Range request; a server that ignores it sends the whole image, of which only the
    # head is read before the connection is dropped.
    request = urllib.request.Request(
        url, headers={"Range": f"bytes=0-{IMAGE_HEAD_BYTES - 1}", "User-Agent": USER_AGENT}
    )
    try:
        with _open(request, timeout_seconds) as response:
            data = b""
            while len(data) < IMAGE_HEAD_BYTES:
                chunk = response.read(READ_CHUNK_BYTES)
                if not chunk:
                    break
                data += chunk
                size = image_size(data)
                if size is not None:
                    return size
    except (OSError, ValueError, http.client.HTTPException):
        return None
    return None


def check_links(urls: Iterable[str], timeout_seconds: float) -> list[LinkStatus]:
    """Fetch each URL once (in parallel, each within the timeout) and say what it answered, in order."""
    unique = list(dict.fromkeys(url for url in urls if url.startswith(("http://", "https://"))))
    if not unique:
        return []
    with ThreadPoolExecutor(min(PARALLEL_REQUESTS, len(unique))) as pool:
        return list(pool.map(lambda url: _link_status(url, timeout_seconds), unique))


def _link_status(url: str, timeout_seconds: float) -> LinkStatus:
    # A GET, not HEAD: many servers answer HEAD with 405 or 404 although the page is there. Only the
    # status line and headers are read.
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with _open(request, timeout_seconds) as response:
            return LinkStatus(url, int(response.status))
    except urllib.error.HTTPError as error:
        return LinkStatus(url, int(error.code))
    except urllib.error.URLError as error:
        return LinkStatus(url, 0, _reason(error.reason))
    except TimeoutError:
        return LinkStatus(url, 0, f"no answer within {timeout_seconds:g} s")
    except (OSError, ValueError, http.client.HTTPException) as error:
        return LinkStatus(url, 0, _reason(error))


def _open(request: urllib.request.Request, timeout_seconds: float) -> http.client.HTTPResponse:
    """urlopen with one TLS context for every request of the process: loading the system's certificates
    costs about 50 ms of CPU, which urlopen would otherwise spend on every request, found or not."""
    with _tls_lock:
        if not _tls:
            _tls.append(ssl.create_default_context())
    response: http.client.HTTPResponse = urllib.request.urlopen(request, timeout=timeout_seconds, context=_tls[0])
    return response


def _reason(reason: object) -> str:
    if isinstance(reason, TimeoutError):
        return "timed out"
    return str(reason) or type(reason).__name__
