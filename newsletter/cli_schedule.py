"""The CLI's `schedule` command: the sends waiting for their time (`send --at` stores them)."""

from __future__ import annotations

import click

from newsletter.cli import App, console, main, pass_app


@main.command("schedule")
@click.option("--cancel", "cancel_id", type=int, default=None, metavar="ID", help="Cancel the waiting send ID.")
@click.option("--all", "include_done", is_flag=True, help="Also the sends already started, cancelled or failed.")
@pass_app
def schedule_command(app: App, cancel_id: int | None, include_done: bool) -> None:
    """List the scheduled sends (a missed one waits for you: send it by hand or cancel it)."""
    from rich.table import Table

    from newsletter import database, schedule

    with database.transaction(app.ready_engine()) as session:
        if cancel_id is not None:
            schedule.cancel(session, cancel_id)
            console.print(f"Cancelled scheduled send #{cancel_id}.", markup=False)
            return
        rows = schedule.list_schedules(session, include_done)
    table = Table("id", "issue", "subject", "at", "audience", "status", "note")
    for row in rows:
        at = f"{row.local_due:%Y-%m-%d %H:%M} {row.timezone}"
        table.add_row(str(row.id), row.slug, row.subject, at, row.audience, row.status, row.note)
    console.print(table if rows else "No scheduled send.")
