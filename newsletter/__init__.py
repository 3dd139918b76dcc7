"""Send an email newsletter written in Markdown."""

from __future__ import annotations

__version__ = "0.1.0"
