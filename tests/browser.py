"""Helpers of the Chromium tests: the browser's path and flags, waiting, and `newsletter serve` on a free port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1280, "height": 900}


def require_chromium() -> None:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: apt-get install chromium"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def wait_until(condition: Callable[[], object], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def cli(config: Path) -> list[str]:
    """The `newsletter --config CONFIG` command line, run by this interpreter."""
    return [sys.executable, "-c", "from newsletter.cli import main; main()", "--config", str(config)]


@contextmanager
def serving(config: Path, port: int) -> Iterator[str]:
    """`newsletter serve` with `config` on 127.0.0.1:`port` until the block ends; its log beside the config."""
    base_url = f"http://127.0.0.1:{port}"
    subprocess.run([*cli(config), "db", "upgrade"], check=True, capture_output=True, cwd=config.parent)
    log = (config.parent / "serve.log").open("wb")
    server = subprocess.Popen(
        [*cli(config), "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=config.parent,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: _healthy(base_url), 20, "newsletter serve")
        yield base_url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _healthy(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
