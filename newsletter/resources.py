"""Where the templates and migrations are, in a checkout and in an installed wheel."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Jinja2 loads with the first template: settings and the CLI's help come through here
    import jinja2

PACKAGE_DIR = Path(__file__).resolve().parent
CACHE_DIR_VARIABLE = "NEWSLETTER_CACHE_DIR"


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


@cache
def cache_dir(kind: str) -> Path | None:
    """This user's directory for what can always be made again (compiled templates and catalogs), or None.

    `$NEWSLETTER_CACHE_DIR/kind`, else `$XDG_CACHE_HOME/newsletter/kind`, else `~/.cache/newsletter/kind`;
    None where it cannot be made (a read-only home): then nothing is cached between processes.
    """
    base = os.environ.get(CACHE_DIR_VARIABLE) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "newsletter"
    )
    path = Path(base) / kind
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None


@cache
def bytecode_cache() -> jinja2.BytecodeCache | None:
    """Compiled templates kept between processes: a short command does not compile the same templates again.

    Jinja2 keys each by its name and a checksum of its source, so an edited or overriding template is
    compiled anew.
    """
    import jinja2

    directory = cache_dir("templates")
    return jinja2.FileSystemBytecodeCache(str(directory)) if directory is not None else None
