"""Where the templates and migrations are, in a checkout and in an installed wheel."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def resource_path(name: str) -> Path:
    """The `templates` or `alembic` directory: inside the package when installed, beside it in a checkout."""
    for candidate in (PACKAGE_DIR / name, PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"the {name}/ directory is missing from the installation")
