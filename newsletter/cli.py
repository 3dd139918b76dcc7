"""The `newsletter` command: a thin layer that parses, calls one use case and shows the result."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from newsletter.errors import NewsletterError
from newsletter.settings import CONFIG_FILENAME, Settings, load_settings, setting_help
from newsletter.statuses import AccountRole, SubscriberSource, SubscriberStatus

if TYPE_CHECKING:
    import datetime as dt

    from rich.console import Console
    from sqlalchemy import Engine

    from newsletter.models import UnrecognizedMessage
    from newsletter.render import RenderedIssue
    from newsletter.segments import Segment
    from newsletter.tally import Tally

# `newsletter --help` and `newsletter preview` must start fast: SQLAlchemy, Alembic, Dramatiq, the renderer
# and rich are imported inside the commands that use them, never here.


class LazyConsole:
    """A rich Console made on first use, so commands that print nothing through it never import rich."""

    def __init__(self, stderr: bool = False) -> None:
        self.stderr = stderr

    @cached_property
    def real(self) -> Console:
        """The Console itself, for what rich needs a real one for (progress bars)."""
        from rich.console import Console

        return Console(stderr=self.stderr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


console = LazyConsole()
error_console = LazyConsole(stderr=True)
LINK_MODULES = ("sqlalchemy", "psycopg", "redis", "dramatiq", "pika", "builtins")


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
            from newsletter import database

            self._engine = database.make_engine(self.settings)
        return self._engine

    def ready_engine(self) -> Engine:
        """The engine, after checking the database is at the latest migration."""
        from newsletter import database

        database.require_current(self.engine)
        return self.engine


class NewsletterGroup(click.Group):
    """A group that turns every NewsletterError into one clear line and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NewsletterError as error:
            raise click.ClickException(str(error)) from None
        except Exception as error:
            # A link that went away where no wait covers it (the database, Redis, RabbitMQ): one line too.
            if not type(error).__module__.startswith(LINK_MODULES):
                raise
            from newsletter import outages

            if outages.link_of(error) is None:
                raise
            raise click.ClickException(outages.describe(error)) from None


pass_app = click.make_pass_decorator(App)


@click.group(cls=NewsletterGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help=f"Settings file (default: ./{CONFIG_FILENAME}).",
)
@click.version_option(package_name="newsletter")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None) -> None:
    """Write an issue in Markdown, send it to your subscribers."""
    ctx.obj = App(config_path)


@main.command()
@pass_app
def init(app: App) -> None:
    """Write newsletter.toml with a fresh secret key and create the database."""
    from newsletter import database

    path = app.config_path or Path(CONFIG_FILENAME)
    if path.exists():
        console.print(f"{path} exists: left as it is.")
    else:
        path.write_text(_initial_config(), encoding="utf-8")
        console.print(f"Wrote {path} with a new secret_key.")
    database.upgrade(app.engine)
    console.print(f"Database ready at revision {database.current_revision(app.engine)}.")
    settings = load_settings(path)
    missing = [name for name in SEND_SETTINGS if getattr(settings, name) in ("", None)]
    if missing:
        console.print(f"Before the first send, set in {path} (or NEWSLETTER_<NAME>):", markup=False)
        for name in missing:
            console.print(f"  {name}: {setting_help()[name]}", markup=False)
    console.print(
        f"Mail goes out through smtp_host = {settings.smtp_host!r}, smtp_port = {settings.smtp_port}; "
        "`newsletter send ISSUE.md --test YOU@EXAMPLE.ORG` tries it.",
        markup=False,
    )


def _initial_config() -> str:
    import secrets

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
    from newsletter import database

    database.upgrade(app.engine, revision)
    console.print(f"Database at revision {database.current_revision(app.engine)}.")


@db.command("current")
@pass_app
def db_current(app: App) -> None:
    """Show the database's revision and the latest one."""
    from newsletter import database

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
@click.option(
    "--language", default=None, metavar="TAG", help="The reader's language (en, zh-CN); default: default_language."
)
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="A tag to put on the subscriber (repeatable).")
@pass_app
def subscribers_add(
    app: App, email: str, name: str | None, status: str, language: str | None, tags: tuple[str, ...]
) -> None:
    """Add EMAIL to the list."""
    from newsletter import database, subscriptions
    from newsletter import language as languages
    from newsletter import tags as tagging

    chosen = languages.supported(language) if language else None
    if language and chosen is None:
        raise click.ClickException(f"no catalog for language {language!r}: {', '.join(languages.available())}")
    with database.transaction(app.ready_engine()) as session:
        subscriber = subscriptions.add_subscriber(session, email, name, SubscriberStatus(status))
        subscriber.language = chosen
        session.flush()
        tagging.add_tags(session, [subscriber.id], tags)
        console.print(f"Added {subscriber.email} ({subscriber.status}).")


@subscribers_group.command("list")
@click.option("--status", type=STATUS_CHOICE, default=None, help="Only subscribers in this state.")
@pass_app
def subscribers_list(app: App, status: str | None) -> None:
    """Show the subscribers."""
    from rich.table import Table

    from newsletter import database, subscriptions

    table = Table("email", "name", "status", "source", "created")
    count = 0
    with database.transaction(app.ready_engine()) as session:
        for subscriber in subscriptions.list_subscribers(session, SubscriberStatus(status) if status else None):
            table.add_row(
                subscriber.email,
                subscriber.name or "",
                subscriber.status,
                subscriber.source,
                subscriber.created_at.strftime("%Y-%m-%d %H:%M"),
            )
            count += 1
    console.print(table)
    console.print(f"{count} subscriber{'s' if count != 1 else ''}")


@subscribers_group.command("remove")
@click.argument("email")
@pass_app
def subscribers_remove(app: App, email: str) -> None:
    """Unsubscribe EMAIL (the record stays, so it is never mailed again)."""
    from newsletter import database, subscriptions

    with database.transaction(app.ready_engine()) as session:
        subscriber = subscriptions.unsubscribe(session, email)
        console.print(f"{subscriber.email} is {subscriber.status}.")


@subscribers_group.command("reactivate")
@click.argument("email")
@click.option("--reason", required=True, help="Why the reader may be mailed again (kept in the event log).")
@click.option("--force", is_flag=True, help="Reactivate a reader who reported the newsletter as spam.")
@pass_app
def subscribers_reactivate(app: App, email: str, reason: str, force: bool) -> None:
    """Make a bounced reader active again (a reader who complained needs --force)."""
    from newsletter import database, suppressions

    with database.transaction(app.ready_engine()) as session:
        subscriber = suppressions.reactivate(session, email, reason, force=force)
        shown = subscriber.email
    console.print(f"Reactivated {shown}.", markup=False)


@subscribers_group.command("forget")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def subscribers_forget(app: App, email: str, yes: bool) -> None:
    """Erase everything personal stored about EMAIL (GDPR)."""
    from newsletter import database, subscriptions

    if not yes and sys.stdin.isatty():
        click.confirm(f"Erase all personal data of {email}?", abort=True)
    with database.transaction(app.ready_engine()) as session:
        subscriptions.forget(session, email)
    console.print(f"Erased the personal data of {email.strip()}.")


@subscribers_group.command("export")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="CSV file to write (default: standard output).",
)
@click.option("--status", type=STATUS_CHOICE, default=None, help="Only subscribers in this state.")
@pass_app
def subscribers_export(app: App, output: Path | None, status: str | None) -> None:
    """Write the list as CSV."""
    from newsletter import database, roster

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
@click.option(
    "--status",
    type=click.Choice(["active", "pending"]),
    default="active",
    show_default=True,
    help="State of the new subscribers (a `status` column in the file wins).",
)
@click.option(
    "--encoding",
    default=None,
    help="The file's encoding (gb18030, utf-16, cp1252...); default: a byte order mark, UTF-8, or a confident guess.",
)
@click.option(
    "--map",
    "maps",
    multiple=True,
    metavar="COLUMN=FIELD",
    help="Read COLUMN as email, name, first_name, last_name, status, tags, ignore, or an attribute name (repeatable).",
)
@click.option("--invite", is_flag=True, help="With --status pending: mail each new subscriber a confirmation link.")
@pass_app
def subscribers_import(
    app: App, file: Path, status: str, encoding: str | None, maps: tuple[str, ...], invite: bool
) -> None:
    """Import subscribers from a CSV file: ours, or an export of Mailchimp, Substack, Buttondown, listmonk or Ghost."""
    from newsletter import database, invitations, mappings, roster

    if invite and status != "pending":
        raise click.ClickException("--invite asks new subscribers to confirm: use it with --status pending")
    engine = app.ready_engine()
    with console.status(f"Importing {file}..."), database.transaction(engine) as session:
        before = roster.last_subscriber_id(session)
        report = roster.import_csv(
            session,
            file,
            SubscriberStatus(status),
            SubscriberSource.IMPORT,
            encoding,
            maps=mappings.parse_maps(maps),
        )
        invited = invitations.invite_pending(session, app.settings, before) if invite else []
    for rejection in report.rejected:
        error_console.print(f"line {rejection.line}: {rejection.email!r}: {rejection.reason}", markup=False)
    if report.rejected_count > len(report.rejected):
        error_console.print(
            f"... and {report.rejected_count - len(report.rejected):,} more rejected rows", markup=False
        )
    console.print(
        f"Read as {report.encoding}, columns as {report.source}'s. Imported {report.added}, already on the list "
        f"{report.already_present}, rejected {report.rejected_count}.",
        markup=False,
    )
    if invite:
        _send_invitations(app, invited)


@subscribers_group.command("invite")
@click.option("--status", type=click.Choice(["pending"]), default="pending", show_default=True)
@pass_app
def subscribers_invite(app: App, status: str) -> None:
    """Mail every pending subscriber a confirmation link (within the daily cap, at the rate limit)."""
    from newsletter import database, invitations

    with database.transaction(app.ready_engine()) as session:
        invited = invitations.invite_pending(session, app.settings)
    _send_invitations(app, invited)


def _send_invitations(app: App, outbound_ids: list[int]) -> None:
    from newsletter import invitations
    from newsletter.queue import Queue

    app.settings.require("from_address", "secret_key")
    queue = Queue(app.settings, app.engine)
    with console.status(f"Sending {len(outbound_ids):,} confirmation mails..."):
        left = invitations.send_invitations(app.engine, queue, outbound_ids)
    where = "queued for the workers" if not queue.embedded else "sent"
    console.print(f"Confirmation mails {where}: {len(outbound_ids) - left:,}; not yet sent: {left:,}.", markup=False)


@main.group("users")
def users_group() -> None:
    """The accounts that sign in to the editor's desk (/admin) and call the API."""


ROLE_CHOICE = click.Choice([role.value for role in AccountRole])


def _new_password() -> str:
    """A password typed twice on a terminal, or two equal lines on standard input (for scripts)."""
    if sys.stdin.isatty():
        password: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        return password
    first, second = sys.stdin.readline().rstrip("\r\n"), sys.stdin.readline().rstrip("\r\n")
    if first != second:
        raise click.ClickException("the two password lines on standard input differ")
    return first


@users_group.command("add")
@click.argument("email")
@click.option("--role", type=ROLE_CHOICE, default="editor", show_default=True, help="A viewer changes nothing.")
@pass_app
def users_add(app: App, email: str, role: str) -> None:
    """Create an account for EMAIL; the password is asked twice (or read as two lines from stdin)."""
    from newsletter import accounts, database

    engine = app.ready_engine()
    password = _new_password()
    with database.transaction(engine) as session:
        account = accounts.add_account(session, email, password, AccountRole(role))
    console.print(f"Added {account.email} ({account.role}). Sign in at {app.settings.base_url}/admin", markup=False)


@users_group.command("list")
@pass_app
def users_list(app: App) -> None:
    """Show the accounts."""
    from rich.table import Table

    from newsletter import accounts, database

    table = Table("email", "role", "created", "last signed in")
    with database.transaction(app.ready_engine()) as session:
        for account in accounts.list_accounts(session):
            table.add_row(
                account.email,
                account.role,
                account.created_at.strftime("%Y-%m-%d %H:%M"),
                account.signed_in_at.strftime("%Y-%m-%d %H:%M") if account.signed_in_at else "never",
            )
    console.print(table)


@users_group.command("remove")
@click.argument("email")
@pass_app
def users_remove(app: App, email: str) -> None:
    """Delete the account of EMAIL, its sessions and its API tokens."""
    from newsletter import accounts, database

    with database.transaction(app.ready_engine()) as session:
        accounts.remove_account(session, email)
    console.print(f"Removed the account of {email.strip()}.", markup=False)


@users_group.command("passwd")
@click.argument("email")
@pass_app
def users_passwd(app: App, email: str) -> None:
    """Set a new password for EMAIL (asked twice, or two lines on stdin); its sessions end."""
    from newsletter import accounts, database

    engine = app.ready_engine()
    password = _new_password()
    with database.transaction(engine) as session:
        accounts.set_password(session, email, password)
    console.print(f"New password set for {email.strip()}; its open sessions are signed out.", markup=False)


@users_group.command("token")
@click.argument("email")
@click.option("--revoke", is_flag=True, help="Remove every API token of EMAIL instead.")
@pass_app
def users_token(app: App, email: str, revoke: bool) -> None:
    """Print a new API bearer token for EMAIL as the last line (it is shown once)."""
    from newsletter import accounts, database

    with database.transaction(app.ready_engine()) as session:
        if revoke:
            count = accounts.revoke_tokens(session, email)
            console.print(f"Removed {count} token{'s' if count != 1 else ''} of {email.strip()}.", markup=False)
            return
        token = accounts.new_token(session, email)
    error_console.print("Keep this token: it is not shown again. Send it as `Authorization: Bearer TOKEN`.")
    click.echo(token)


EX_TEMPFAIL = 75  # sysexits.h: the MTA (Postfix pipe(8), Exim's pipe transport) keeps the message and retries


@main.command()
@click.option(
    "--maildir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Read a Maildir; each message read moves to cur/ flagged seen.",
)
@click.option(
    "--mbox",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Read an mbox file (left unchanged; a second run records nothing twice).",
)
@click.option("--imap", is_flag=True, help="Read the unseen mail of imap_folder on imap_host, flagging it seen.")
@click.option("--pop3", is_flag=True, help="Read the mail on pop3_host, deleting each message once recorded.")
@click.option("--watch", is_flag=True, help="Keep reading the mailbox every inbound_poll_seconds.")
@click.option("--recipient", default=None, help="Envelope recipient of the message on stdin (Postfix: ${recipient}).")
@pass_app
def inbound(
    app: App, maildir: Path | None, mbox: Path | None, imap: bool, pop3: bool, watch: bool, recipient: str | None
) -> None:
    """Read bounces, complaints and unsubscribe mail: one message on stdin (an MTA pipe), or a mailbox."""
    from sqlalchemy.exc import OperationalError

    chosen = [name for name, given in (("maildir", maildir), ("mbox", mbox), ("imap", imap), ("pop3", pop3)) if given]
    if len(chosen) > 1:
        raise click.UsageError("choose one of --maildir, --mbox, --imap and --pop3")
    if not chosen:
        if watch:
            raise click.UsageError("--watch needs a mailbox: --maildir, --mbox, --imap or --pop3")
        sys.exit(_inbound_stdin(app, recipient))
    while True:
        try:
            tally = _read_mailbox(app, chosen[0], maildir or mbox)
        except (NewsletterError, OperationalError) as error:
            if not watch:
                raise
            error_console.print(f"{chosen[0]}: {error}", markup=False)
        else:
            verdicts = ", ".join(f"{count} {verdict}" for verdict, count in sorted(tally.verdicts.items()))
            console.print(
                f"Read {tally.messages} message{'s' if tally.messages != 1 else ''}"
                f"{': ' + verdicts if verdicts else ''}. Recorded {tally.recorded}, "
                f"already recorded {tally.duplicates}, suppressed {tally.suppressed}.",
                markup=False,
            )
        if not watch:
            return
        time.sleep(app.settings.inbound_poll_seconds)


def _read_mailbox(app: App, source: str, path: Path | None) -> Tally:
    from newsletter import mailboxes

    engine = app.ready_engine()
    if source == "imap":
        return mailboxes.read_imap(engine, app.settings)
    if source == "pop3":
        return mailboxes.read_pop3(engine, app.settings)
    if source == "mbox":
        return mailboxes.read_mbox(engine, app.settings, path or Path())
    return mailboxes.read_maildir(engine, app.settings, path or Path())


def _inbound_stdin(app: App, recipient: str | None) -> int:
    from newsletter import mailboxes

    try:
        raw = mailboxes.read_capped(sys.stdin.buffer)
        result = mailboxes.ingest_committed(app.ready_engine(), app.settings, raw, "stdin", recipient)
    except Exception as error:  # whatever failed (database, settings), the MTA keeps the mail and retries
        error_console.print(f"newsletter inbound: {error}", markup=False)
        return EX_TEMPFAIL
    console.print(f"{result.verdict}: {result.note}"[:300], markup=False)
    return 0


@main.group("bounces", invoke_without_command=True)
@click.option(
    "--since", "since_days", type=click.FloatRange(min=0), default=30.0, show_default=True, help="Days to look back."
)
@click.option("--unverified", is_flag=True, help="List the reports kept because nothing ties them to our mail.")
@click.pass_context
def bounces_report(ctx: click.Context, since_days: float, unverified: bool) -> None:
    """Bounces and complaints by reason and by recipient domain, and the subscribers they suppressed."""
    import datetime as dt

    from rich.table import Table

    from newsletter import database, suppressions
    from newsletter.models import utcnow

    if ctx.invoked_subcommand is not None:
        return
    app = ctx.find_object(App)
    assert app is not None
    with database.transaction(app.ready_engine()) as session:
        if unverified:
            _print_unverified(suppressions.unverified_reports(session))
            return
        report = suppressions.bounce_report(session, utcnow() - dt.timedelta(days=since_days))
    for title, groups in (("reason", report.by_reason), ("recipient domain", report.by_domain)):
        table = Table(
            title,
            "hard",
            "soft",
            "not counted",
            "complaints",
            title=f"By {title}, received in the last {since_days:g} days",
        )
        for key, counts in groups.items():
            table.add_row(key, str(counts.hard), str(counts.soft), str(counts.uncounted), str(counts.complaints))
        console.print(table)
    for key in report.by_reason:
        if suppressions.reason_meaning(key):
            console.print(f"  {key}: {suppressions.reason_meaning(key)}", markup=False)
    table = Table(title=f"Suppressed: {len(report.suppressed)}")
    table.add_column("email", overflow="fold")
    for name in ("now", "received", "report dated", "reason"):
        table.add_column(name)
    for row in report.suppressed:
        dated = row.reported_at.strftime("%Y-%m-%d %H:%M") if row.reported_at else ""
        table.add_row(
            row.email, row.status, row.at.strftime("%Y-%m-%d %H:%M"), dated, row.reason_name or row.reason[:40]
        )
    console.print(table)


def _print_unverified(kept: list[UnrecognizedMessage]) -> None:
    from rich.table import Table

    table = Table("#", "received", "from", "what it says", title=f"Unverified reports: {len(kept)}")
    for row in kept:
        table.add_row(str(row.id), row.received_at.strftime("%Y-%m-%d %H:%M"), row.sender[:40], row.note[:120])
    console.print(table)
    if kept:
        console.print("Apply one by hand, once you trust it: newsletter bounces apply NUMBER", markup=False)


@bounces_report.command("apply")
@click.argument("number", type=int)
@pass_app
def bounces_apply(app: App, number: int) -> None:
    """Apply an unverified report by hand: the addresses it names are believed."""
    from newsletter import database
    from newsletter.inbound import apply_kept

    with database.transaction(app.ready_engine()) as session:
        result = apply_kept(session, app.settings, number)
    console.print(
        f"{result.verdict}: recorded {result.recorded}, already recorded {result.duplicates}, "
        f"suppressed {result.suppressed}. {result.note}"[:300],
        markup=False,
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Processes serving on the one port (up to one per core); each sends its own confirmation mails.",
)
@pass_app
def serve(app: App, host: str, port: int, workers: int) -> None:
    """Run the web app: sign-up, confirm and unsubscribe pages, preferences, archive, the desk (/admin), the API."""
    from subscribers.server import serve as serve_web  # the one place newsletter imports the web app

    serve_web(app.settings, host, port, workers, app.config_path)


@main.command()
@click.argument("issue", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Directory for <slug>.html, <slug>.txt and <slug>.eml.",
)
@click.option("--subject", default=None, help="Subject when the issue's front matter names none.")
@click.option("--json", "as_json", is_flag=True, help="Print the preflight report as JSON.")
@click.option("--open", "open_browser", is_flag=True, help="Open the HTML in a browser.")
@click.option("--check-links", is_flag=True, help="Fetch every link and image once; warn about 4xx, 5xx, no answer.")
@pass_app
def preview(
    app: App, issue: Path, out_dir: Path, subject: str | None, as_json: bool, open_browser: bool, check_links: bool
) -> None:
    """Render ISSUE to HTML, text and .eml files and check it before sending."""
    import json

    from newsletter.preflight import group_warnings
    from newsletter.preview import preview_issue

    result = preview_issue(issue, app.settings, out_dir, subject=subject, check_links=check_links)
    report = result.report
    if as_json:
        click.echo(json.dumps(report.as_json(), ensure_ascii=False, indent=2))
    else:
        click.echo(f"subject: {report.subject}\npreheader: {report.preheader}")
        if report.fields:
            click.echo(f"personal fields: {', '.join(report.fields)}")
        click.echo(
            f"HTML {report.html_bytes / 1024:.1f} KB ({report.html_part_bytes / 1024:.1f} KB encoded, "
            f"inline styles {report.inline_style_share:.0%}), message {report.message_bytes / 1024:.1f} KB, "
            f"{len(report.links)} links, {len(report.images)} images"
        )
        for group in group_warnings(report.warnings):
            click.echo(f"warning [{group.code}] {group.where}{group.message}", err=True)
        click.echo(f"wrote {result.html_path}, {result.text_path}, {result.eml_path}")
    if open_browser:
        click.launch(str(result.html_path.resolve()))


# What `send` needs before anything goes out; `init` names the ones still empty.
SEND_SETTINGS = ("from_address", "secret_key", "postal_address")


def _say(line: str) -> None:
    """A line about what a send waits for, printed above its progress bar: one line in a log too (a terminal
    folds it where it must; rich would break it at 80 columns when the output is not one)."""
    console.print(line, markup=False, style="yellow", soft_wrap=True)


def _confirm(yes: bool, question: str) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise click.ClickException("not on a terminal: pass --yes to send without confirmation")
    click.confirm(question, abort=True)


@main.command()
@click.argument("issue_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--yes", is_flag=True, help="Send without asking (required when not on a terminal).")
@click.option("--dry-run", is_flag=True, help="Do everything but the SMTP transaction, then keep nothing.")
@click.option(
    "--test",
    "test_addresses",
    multiple=True,
    metavar="ADDR",
    help="Send only to ADDR (repeatable), subject prefixed [TEST]; nothing is recorded.",
)
@click.option("--subject", default=None, help="Subject when the issue's front matter names none.")
@click.option("--force", is_flag=True, help="Send a changed file under the slug of an issue already stored.")
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="Only subscribers with this tag (repeatable: any).")
@click.option("--exclude-tag", "exclude_tags", multiple=True, metavar="TAG", help="Leave out this tag (repeatable).")
@click.option("--topic", "topics", multiple=True, metavar="KEY", help="Only readers of this topic (repeatable: any).")
@click.option("--at", "at", default=None, metavar="TIME", help='Send later: "2026-12-05 09:00" (see --timezone).')
@click.option("--timezone", default=None, metavar="ZONE", help="Zone of --at, e.g. Asia/Shanghai (default: timezone).")
@pass_app
def send(
    app: App,
    issue_file: Path,
    yes: bool,
    dry_run: bool,
    test_addresses: tuple[str, ...],
    subject: str | None,
    force: bool,
    tags: tuple[str, ...],
    exclude_tags: tuple[str, ...],
    topics: tuple[str, ...],
    at: str | None,
    timezone: str | None,
) -> None:
    """Send ISSUE_FILE to every active subscriber (or a segment); run it again to resume where it stopped."""
    from newsletter import campaign, progress, schedule
    from newsletter.queue import Queue
    from newsletter.remote import image_sizes_for
    from newsletter.render import render_issue_file
    from newsletter.segments import chosen_segment

    settings = app.settings
    settings.require(*SEND_SETTINGS)
    issue = render_issue_file(issue_file, settings, subject=subject, image_sizes=image_sizes_for(settings))
    segment = chosen_segment(issue.meta, tags, exclude_tags, topics)
    if test_addresses:
        outcomes = campaign.send_test(settings, issue, test_addresses)
        for outcome in outcomes:
            console.print(f"{outcome.address}: {outcome.reply}", markup=False)
        refused = [outcome for outcome in outcomes if not outcome.accepted]
        if refused:
            raise click.ClickException(
                f"{len(refused)} of {len(outcomes)} test messages not accepted: "
                + "; ".join(f"{outcome.address}: {outcome.reply}" for outcome in refused)
            )
        return
    engine = app.ready_engine()
    check = campaign.plan(engine, issue, force, segment)
    console.print(progress.plan_table(check, settings, embedded=not settings.broker_url))
    if at is not None or schedule.front_matter_time(issue.meta.get("date", "")):
        zone = timezone or settings.timezone
        due = schedule.parse_at(at, zone) if at else schedule.front_matter_due(issue, zone)
        if due is not None:
            _schedule(app, issue_file, issue, due, zone, subject, segment, yes)
            return
    if check.new_recipients + check.unfinished == 0:
        console.print("Nothing to send: every recipient has been dealt with (or no subscriber is active).")
        return
    _confirm(yes, f"Send to {check.new_recipients + check.unfinished:,} recipients?")
    if dry_run:
        report = campaign.dry_run(engine, settings, issue, force, segment)
        console.print(
            f"Dry run: composed {report.messages:,} messages ({report.total_bytes / 1e6:,.1f} MB) "
            f"in {report.seconds:.1f} s; nothing was sent or kept."
        )
        return
    queue = Queue(settings, engine)
    try:
        with progress.SendProgress(console.real) as bar:
            counts = campaign.send_issue(engine, queue, issue, force, bar.update, segment, _say)
    except KeyboardInterrupt:
        where = "run the same command again to resume" if queue.embedded else "the workers go on sending"
        error_console.print(
            f"Interrupted: nothing is lost; {where}. `newsletter status {issue.slug}` shows where it stands.",
            markup=False,
        )
        raise SystemExit(130) from None
    console.print(progress.counts_table(counts))
    _print_notices(app, issue.slug)


def _schedule(
    app: App,
    issue_file: Path,
    issue: RenderedIssue,
    due: dt.datetime,
    zone: str,
    subject: str | None,
    segment: Segment,
    yes: bool,
) -> None:
    import zoneinfo

    from newsletter import database, schedule

    local = due.astimezone(zoneinfo.ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")
    _confirm(yes, f"Schedule it for {local} {zone} ({due:%Y-%m-%d %H:%M} UTC)?")
    with database.transaction(app.ready_engine()) as session:
        row = schedule.schedule_send(session, issue_file, issue, due, zone, subject, segment)
        row_id = row.id
    console.print(
        f"Scheduled #{row_id}: {issue.slug} at {local} {zone}. A running `newsletter worker` or `newsletter serve` "
        "starts it then; `newsletter schedule` lists and cancels.",
        markup=False,
    )


@main.command()
@click.argument("slug", required=False)
@click.option("--limit", default=50, show_default=True, help="Failures to list at most.")
@pass_app
def status(app: App, slug: str | None, limit: int) -> None:
    """Show the deliveries of issue SLUG per status and its failures with their SMTP replies (no SLUG: all issues)."""
    from rich.table import Table

    from newsletter import database, ledger, progress

    with database.transaction(app.ready_engine()) as session:
        if slug is None:
            table = Table("issue", "status", "subject", "sent", "bounced", "failed", "unfinished", "sent at")
            for issue in ledger.issues_by_recency(session):
                counts = ledger.counts(session, issue.id)
                table.add_row(
                    issue.slug,
                    issue.status,
                    issue.subject,
                    f"{counts['sent']:,}",
                    f"{counts['bounced']:,}",
                    f"{counts['failed']:,}",
                    f"{counts.remaining:,}",
                    issue.sent_at.strftime("%Y-%m-%d %H:%M") if issue.sent_at else "",
                )
            console.print(table)
            return
        issue = ledger.find_issue(session, slug)
        console.print(f"{issue.slug}: {issue.subject} ({issue.status})", markup=False)
        console.print(progress.counts_table(ledger.counts(session, issue.id)))
        failures = ledger.failures(session, issue.id, limit)
    if failures:
        console.print(progress.failures_table(failures))
    _print_notices(app, issue.slug)


def _print_notices(app: App, slug: str) -> None:
    """What our side could not do for an issue, once per reason: the readers are untouched, the editor acts."""
    from newsletter import database, ledger, suppressions

    with database.transaction(app.ready_engine()) as session:
        found = suppressions.notices(session, ledger.find_issue(session, slug).id)
    for notice in found:
        console.print(
            f"Our side, not the readers: {notice.reason_name} ({notice.meaning}). The server said: "
            f"{notice.reply[:300]}. Those deliveries are failed and their readers stay active; once it is "
            f"fixed, `newsletter retry {slug}` sends them again.",
            markup=False,
        )


@main.command()
@click.argument("slug")
@pass_app
def retry(app: App, slug: str) -> None:
    """Queue again the deliveries of issue SLUG that failed temporarily too many times."""
    from newsletter import campaign, progress
    from newsletter.queue import Queue

    engine = app.ready_engine()
    queue = Queue(app.settings, engine)
    with progress.SendProgress(console.real) as bar:
        counts = campaign.resend_failed(engine, queue, slug, bar.update, _say)
    console.print(progress.counts_table(counts))


@main.command()
@click.option(
    "--threads",
    type=click.IntRange(1, 256),
    default=None,
    help="Worker threads, each with its own SMTP connection while it holds one of the fleet's "
    "smtp_connections slots (default: smtp_connections).",
)
@click.option("--verbose", "-v", is_flag=True, help="Also log each queue message and Dramatiq's own notes.")
@click.option("--quiet", "-q", is_flag=True, help="Log only warnings and errors (no progress lines).")
@pass_app
def worker(app: App, threads: int | None, verbose: bool, quiet: bool) -> None:
    """Send what `newsletter send` enqueues on broker_url, until stopped (Ctrl-C or SIGTERM).

    Logs a line every few seconds while it sends (counts and rate), and one line when a link is away.
    """
    import signal
    import threading

    from newsletter import confirmation, outages, outbox
    from newsletter.queue import Queue
    from newsletter.schedule import Scheduler

    settings = app.settings
    if not settings.broker_url:
        raise click.ClickException(
            "no broker_url is set: `newsletter send` sends in its own process, no worker is needed"
        )
    _log_to_stderr(verbose, quiet)
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda _signal, _frame: stop.set())
    # A worker started while the database is away (a machine booting, a failover) waits for it, as it
    # does mid-send; a database that answers but is not at the latest schema is a mistake to name at once.
    outages.wait_out(lambda: app.engine.connect().close(), stop)
    engine = outages.wait_out(app.ready_engine, stop)
    queue = Queue(settings, engine)
    queue.start_worker(threads)
    scheduler = Scheduler(engine, settings, queue)
    scheduler.start()
    error_console.print(
        f"Worker on {settings.broker_url.split('@')[-1]}, queue {settings.queue_name!r}, "
        f"{threads or settings.smtp_connections} threads. Ctrl-C stops it.",
        markup=False,
    )
    # One-off mails whose enqueue was lost (a stopped web app, a broker that was down) go out now.
    try:
        lifetimes = confirmation.lifetimes(settings)
        outages.wait_out(
            lambda: outbox.requeue_unsent(engine, settings.lease_seconds, queue.send_messages, lifetimes), stop
        )
    except Exception as error:
        if outages.link_of(error) is None:
            raise
    stop.wait()
    error_console.print("Stopping: finishing the messages in flight, giving back the rest...", markup=False)
    scheduler.stop()
    queue.stop()
    error_console.print("Stopped.", markup=False)


def _log_to_stderr(verbose: bool, quiet: bool) -> None:
    """One line per record on stderr: the newsletter's at INFO (WARNING when quiet), Dramatiq's when verbose."""
    import logging

    from newsletter.outages import OneLine

    level = logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for handler in logging.getLogger().handlers:
        handler.addFilter(OneLine())
    logging.getLogger("newsletter").setLevel(logging.DEBUG if verbose else level)
    logging.getLogger("dramatiq").setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("pika").setLevel(logging.INFO if verbose else logging.ERROR)


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=Path("."))
def demo(directory: Path) -> None:
    """Try it all in DIRECTORY: config, SQLite, sample subscribers, a local SMTP server, a real issue sent."""
    from newsletter.demo import run_demo
    from newsletter.progress import SendProgress

    with SendProgress(console.real) as bar:
        report = run_demo(directory, bar.update)
    console.print(
        f"\nSent {report.sent} messages to {report.subscribers} sample subscribers through a local "
        f"SMTP server; {report.captured} captured.",
        markup=False,
    )
    console.print(f"Open them: {report.outbox}/*.eml", markup=False)
    console.print(
        f"Next: edit {report.config}, `newsletter status {report.slug}`, `newsletter preview ISSUE.md`.", markup=False
    )


# The commands of the other CLI modules join the groups above.
from newsletter import cli_audience, cli_schedule  # noqa: E402, F401
