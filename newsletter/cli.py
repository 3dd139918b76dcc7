"""The `newsletter` command: a thin layer that parses, calls one use case and shows the result."""

from __future__ import annotations

import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from newsletter import database, roster, subscriptions
from newsletter.errors import NewsletterError
from newsletter.models import SubscriberSource, SubscriberStatus
from newsletter.settings import CONFIG_FILENAME, Settings, load_settings, setting_help

console = Console()
error_console = Console(stderr=True)


@dataclass
class App:
    """What every command shares: the config path, and settings and engine made on first use."""

    config_path: Path | None
    _settings: Settings | None = None
    _engine: Engine | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = database.make_engine(self.settings)
        return self._engine

    def ready_engine(self) -> Engine:
        """The engine, after checking the database is at the latest migration."""
        database.require_current(self.engine)
        return self.engine


class NewsletterGroup(click.Group):
    """A group that turns every NewsletterError into one clear line and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NewsletterError as error:
            raise click.ClickException(str(error)) from None


pass_app = click.make_pass_decorator(App)


@click.group(cls=NewsletterGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help=f"Settings file (default: ./{CONFIG_FILENAME}).")
@click.version_option(package_name="newsletter")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None) -> None:
    """Write an issue in Markdown, send it to your subscribers."""
    ctx.obj = App(config_path)


@main.command()
@pass_app
def init(app: App) -> None:
    """Write newsletter.toml with a fresh secret key and create the database."""
    path = app.config_path or Path(CONFIG_FILENAME)
    if path.exists():
        console.print(f"{path} exists: left as it is.")
    else:
        path.write_text(_initial_config(), encoding="utf-8")
        console.print(f"Wrote {path} with a new secret_key.")
    database.upgrade(app.engine)
    console.print(f"Database ready at revision {database.current_revision(app.engine)}.")


def _initial_config() -> str:
    lines = ["# newsletter settings: every setting, with its help line. NEWSLETTER_<NAME> overrides each.", ""]
    defaults = Settings()
    for name, help_line in setting_help().items():
        lines.append(f"# {help_line}")
        if name == "secret_key":
            lines.append(f'secret_key = "{secrets.token_urlsafe(32)}"')
        else:
            value = getattr(defaults, name)
            shown = f'"{value}"' if isinstance(value, str) else str(value).lower()
            lines.append(f"# {name} = {shown}")
        lines.append("")
    return "\n".join(lines)


@main.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
@click.argument("revision", default="head")
@pass_app
def db_upgrade(app: App, revision: str) -> None:
    """Migrate the database to the latest schema (or to REVISION)."""
    database.upgrade(app.engine, revision)
    console.print(f"Database at revision {database.current_revision(app.engine)}.")


@db.command("current")
@pass_app
def db_current(app: App) -> None:
    """Show the database's revision and the latest one."""
    current = database.current_revision(app.engine)
    head = database.head_revision(app.engine)
    state = "up to date" if current == head else "run `newsletter db upgrade`"
    console.print(f"current: {current or 'empty'}  latest: {head}  ({state})")


@main.group("subscribers")
def subscribers_group() -> None:
    """The list of subscribers."""


STATUS_CHOICE = click.Choice([status.value for status in SubscriberStatus])


@subscribers_group.command("add")
@click.argument("email")
@click.option("--name", default=None, help="The subscriber's name.")
@click.option("--status", type=click.Choice(["active", "pending"]), default="active", show_default=True)
@pass_app
def subscribers_add(app: App, email: str, name: str | None, status: str) -> None:
    """Add EMAIL to the list."""
    with database.transaction(app.ready_engine()) as session:
        subscriber = subscriptions.add_subscriber(session, email, name, SubscriberStatus(status))
        console.print(f"Added {subscriber.email} ({subscriber.status}).")


@subscribers_group.command("list")
@click.option("--status", type=STATUS_CHOICE, default=None, help="Only subscribers in this state.")
@pass_app
def subscribers_list(app: App, status: str | None) -> None:
    """Show the subscribers."""
    table = Table("email", "name", "status", "source", "created")
    count = 0
    with database.transaction(app.ready_engine()) as session:
        for subscriber in subscriptions.list_subscribers(session, SubscriberStatus(status) if status else None):
            table.add_row(subscriber.email, subscriber.name or "", subscriber.status, subscriber.source,
                          subscriber.created_at.strftime("%Y-%m-%d %H:%M"))
            count += 1
    console.print(table)
    console.print(f"{count} subscriber{'s' if count != 1 else ''}")


@subscribers_group.command("remove")
@click.argument("email")
@pass_app
def subscribers_remove(app: App, email: str) -> None:
    """Unsubscribe EMAIL (the record stays, so it is never mailed again)."""
    with database.transaction(app.ready_engine()) as session:
        subscriber = subscriptions.unsubscribe(session, email)
        console.print(f"{subscriber.email} is {subscriber.status}.")


@subscribers_group.command("forget")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def subscribers_forget(app: App, email: str, yes: bool) -> None:
    """Erase everything personal stored about EMAIL (GDPR)."""
    if not yes and sys.stdin.isatty():
        click.confirm(f"Erase all personal data of {email}?", abort=True)
    with database.transaction(app.ready_engine()) as session:
        subscriptions.forget(session, email)
    console.print(f"Erased the personal data of {email.strip()}.")


@subscribers_group.command("export")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="CSV file to write (default: standard output).")
@click.option("--status", type=STATUS_CHOICE, default=None, help="Only subscribers in this state.")
@pass_app
def subscribers_export(app: App, output: Path | None, status: str | None) -> None:
    """Write the list as CSV."""
    selected = SubscriberStatus(status) if status else None
    with database.transaction(app.ready_engine()) as session:
        if output is None:
            roster.export_csv(session, sys.stdout, selected)
            return
        with output.open("w", encoding="utf-8", newline="") as out:
            count = roster.export_csv(session, out, selected)
    error_console.print(f"Wrote {count} subscribers to {output}.")


@subscribers_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--status", type=click.Choice(["active", "pending"]), default="active", show_default=True,
              help="State of the new subscribers (a `status` column in the file wins).")
@pass_app
def subscribers_import(app: App, file: Path, status: str) -> None:
    """Import subscribers from a CSV file with an `email` column (all valid rows, or none)."""
    with console.status(f"Importing {file}..."), database.transaction(app.ready_engine()) as session:
        report = roster.import_csv(session, file, SubscriberStatus(status), SubscriberSource.IMPORT)
    for rejection in report.rejected:
        error_console.print(f"line {rejection.line}: {rejection.email!r}: {rejection.reason}", markup=False)
    console.print(f"Imported {report.added}, already on the list {report.already_present}, "
                  f"rejected {len(report.rejected)}.")
