"""How `send`, `retry` and `status` show a send on the terminal: a rich progress bar and count tables."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from newsletter.campaign import SendPlan
from newsletter.ledger import Counts, Failure
from newsletter.models import DeliveryStatus
from newsletter.settings import Settings


class RateColumn(ProgressColumn):
    """Messages per second, from rich's moving window."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.0f} msg/s" if task.speed else "- msg/s", style="progress.data.speed")


class SendProgress:
    """A progress bar of one send: sent, failed, remaining, rate and time left."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("[bold]sending"),
            BarColumn(),
            TextColumn("{task.fields[tally]}"),
            RateColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> SendProgress:
        self._progress.start()
        self._task = self._progress.add_task("send", total=None, tally="")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._progress.stop()

    def update(self, counts: Counts) -> None:
        assert self._task is not None
        self._progress.update(self._task, total=counts.total, completed=counts.done, tally=tally_line(counts))


def tally_line(counts: Counts) -> str:
    """The bar's counts, named as `status` names them: sent, bounced, failed, skipped (when any), then left."""
    final = [DeliveryStatus.SENT, DeliveryStatus.BOUNCED, DeliveryStatus.FAILED, DeliveryStatus.SKIPPED]
    shown = [f"{counts[status]:,} {status}" for status in final if counts[status] or status == DeliveryStatus.SENT]
    return "  ".join([*shown, f"{counts.remaining:,} left"])


def plan_table(check: SendPlan, settings: Settings, embedded: bool) -> Table:
    table = Table(show_header=False, box=None)
    table.add_row("issue", check.slug)
    table.add_row("subject", check.subject)
    table.add_row(
        "from", f"{settings.from_name} <{settings.from_address}>" if settings.from_name else settings.from_address
    )
    if check.status != "new":
        table.add_row("stored", f"{check.status}: {check.already_sent:,} sent, {check.unfinished:,} unfinished")
    table.add_row("audience", check.audience)
    table.add_row("recipients", f"{check.new_recipients + check.unfinished:,}")
    table.add_row(
        "SMTP",
        f"{settings.smtp_host}:{settings.smtp_port} ({settings.smtp_security}), "
        f"{settings.smtp_connections} connections",
    )
    table.add_row("queue", "in this process" if embedded else f"{settings.broker_url.split('@')[-1]} (workers send)")
    return table


def counts_table(counts: Counts) -> Table:
    table = Table("status", "deliveries")
    for status in DeliveryStatus:
        table.add_row(str(status), f"{counts[status]:,}")
    table.add_row("total", f"{counts.total:,}", style="bold")
    return table


def failures_table(failures: list[Failure]) -> Table:
    table = Table("email", "status", "tries", "last SMTP reply")
    for failure in failures:
        table.add_row(failure.email, failure.status, str(failure.attempts), failure.reply)
    return table
