"""Remote image sizes and link checks against a real HTTP server on loopback."""

from __future__ import annotations

import re
import socket
import struct

from newsletter.images import image_size
from newsletter.remote import RemoteImageSizes, check_links
from newsletter.render import render_issue
from newsletter.settings import Settings
from tests.conftest import WebServer, tiny_png

TIMEOUT_SECONDS = 0.5


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/gone"


def test_remote_image_keeps_its_natural_width(settings: Settings, webserver: WebServer) -> None:
    webserver.routes["/chart.png"] = (200, "image/png", tiny_png(120, 40), 0.0)
    source = f"# T\n\n![chart]({webserver.url('/chart.png')})\n\nAgain: ![chart]({webserver.url('/chart.png')})"
    issue = render_issue(source, settings, image_sizes=RemoteImageSizes(TIMEOUT_SECONDS))
    images = re.findall(r"<img [^>]*>", issue.html)
    assert len(images) == 2
    for image in images:
        assert 'width="120"' in image and "max-width:120px" in image.replace(" ", "")
    assert webserver.requests == ["/chart.png"]  # asked once for the issue


def test_remote_image_wider_than_the_column_fits_it(settings: Settings, webserver: WebServer) -> None:
    webserver.routes["/wide.png"] = (200, "image/png", tiny_png(1200, 2), 0.0)
    issue = render_issue(f"# T\n\n![w]({webserver.url('/wide.png')})", settings, image_sizes=RemoteImageSizes(1.0))
    assert 'width="552"' in issue.html


def test_image_size_unknown_when_the_server_fails_or_is_slow(settings: Settings, webserver: WebServer) -> None:
    webserver.routes["/slow.png"] = (200, "image/png", tiny_png(50, 50), 1.5)
    webserver.routes["/broken.png"] = (500, "text/plain", b"oops", 0.0)
    sizes = RemoteImageSizes(TIMEOUT_SECONDS)
    for url in (webserver.url("/slow.png"), webserver.url("/broken.png"), webserver.url("/x.png"), closed_port_url()):
        assert sizes(url) is None
        issue = render_issue(f"# T\n\n![i]({url})", settings, image_sizes=sizes)
        image = re.search(r"<img [^>]*>", issue.html)
        assert image and not re.search(r"\swidth=|(?<![-\w])width:", image.group(0))


def test_check_links_reports_each_url_once(webserver: WebServer) -> None:
    webserver.routes["/ok"] = (200, "text/html", b"<p>ok</p>", 0.0)
    webserver.routes["/error"] = (503, "text/html", b"down", 0.0)
    webserver.routes["/slow"] = (200, "text/html", b"late", 1.5)
    urls = [webserver.url(path) for path in ("/ok", "/missing", "/error", "/slow", "/ok")] + [closed_port_url()]
    statuses = check_links([*urls, "mailto:someone@example.org"], TIMEOUT_SECONDS)
    assert [(status.status, status.broken) for status in statuses] == [
        (200, False),
        (404, True),
        (503, True),
        (0, True),
        (0, True),
    ]
    assert "0.5 s" in statuses[3].problem or "timed out" in statuses[3].problem
    assert webserver.requests.count("/ok") == 1


def test_image_size_reads_webp_headers() -> None:
    extended = b"RIFF\x00\x00\x00\x00WEBPVP8X\x0a\x00\x00\x00\x00\x00\x00\x00" + (119).to_bytes(3, "little")
    extended += (39).to_bytes(3, "little")
    assert image_size(extended) == (120, 40)
    lossy = b"RIFF\x00\x00\x00\x00WEBPVP8 \x00\x00\x00\x00\x00\x00\x00\x9d\x01\x2a" + struct.pack("<HH", 300, 200)
    assert image_size(lossy) == (300, 200)
    bits = (640 - 1) | ((480 - 1) << 14)
    lossless = b"RIFF\x00\x00\x00\x00WEBPVP8L\x00\x00\x00\x00\x2f" + bits.to_bytes(4, "little") + b"\x00" * 5
    assert image_size(lossless) == (640, 480)
