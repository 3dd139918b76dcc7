"""Where the templates and migrations are, in a checkout and in an installed wheel."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Jinja2 loads with the first template: settings and the CLI's help come through here
    import jinja2

PACKAGE_DIR = Path(__file__).resolve().parent


def resource_path(name: str) -> Path:
    """The `templates` or `alembic` directory: inside the package when installed, beside it in a checkout."""
    for candidate in (PACKAGE_DIR / name, PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"the {name}/ directory is missing from the installation")


def template_dirs(template_dir: str, subdir: str = "") -> list[Path]:
    """Where templates are looked up: the editor's `template_dir` first (when set), then the shipped ones."""
    shipped = resource_path("templates") / subdir
    return [Path(template_dir) / subdir, shipped] if template_dir else [shipped]


def template_loader(template_dir: str, subdir: str = "") -> jinja2.BaseLoader:
    """A Jinja2 loader in which a template the editor put in `template_dir` wins over the shipped one."""
    import jinja2

    return jinja2.FileSystemLoader([str(path) for path in template_dirs(template_dir, subdir)])
