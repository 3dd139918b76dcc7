"""Sends started from the desk run on a thread of the web app, the way `newsletter send` runs them in its process."""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Engine

from newsletter import campaign, database, language, ledger
from newsletter.errors import NewsletterError
from newsletter.models import Issue
from newsletter.queue import Queue
from newsletter.settings import Settings

log = logging.getLogger("subscribers")
N_ = language.N_


class SendRunning(NewsletterError):
    """A send of this issue is already running in this web app."""


class Sends:
    """At most one running send per issue; what went wrong with the last one, for the issue's page."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self._threads: dict[int, threading.Thread] = {}
        self._problems: dict[int, str] = {}
        self._slugs: dict[int, str] = {}
        self._queues: dict[int, Queue] = {}
        self._lock = threading.Lock()

    def running(self, issue_id: int) -> bool:
        thread = self._threads.get(issue_id)
        return thread is not None and thread.is_alive()

    def problem(self, issue_id: int) -> str:
        return self._problems.get(issue_id, "")

    def waiting(self, issue_id: int) -> str:
        """What a running send of this issue waits for (a relay that refused the session, no free slot), or ""."""
        queue = self._queues.get(issue_id)
        return (queue.held() or "") if queue is not None and self.running(issue_id) else ""

    def stalled(self) -> list[tuple[str, str]]:
        """The slug of each running send that waits for something, and what."""
        return [(self._slugs[issue_id], self.waiting(issue_id)) for issue_id in self._queues if self.waiting(issue_id)]

    def problems(self) -> list[tuple[str, str]]:
        """The slug of each issue whose send stopped on a problem here, and the problem."""
        return [(self._slugs.get(issue_id, str(issue_id)), problem) for issue_id, problem in self._problems.items()]

    def start(self, issue_id: int, retry: bool = False) -> None:
        """Create the deliveries (or put the failed ones back) and deliver them on a new thread.

        Raises:
            SendRunning: this issue is already being sent from here.
        """
        with self._lock:
            if self.running(issue_id):
                # The desk's words: its pages translate them (subscribers/desk/issues.py).
                raise SendRunning(N_("this issue is being sent already: its progress is on this page"))
            with database.transaction(self.engine) as session:
                issue = session.get_one(Issue, issue_id)
                self._slugs[issue_id] = issue.slug
                if retry:
                    ledger.retry_failed(session, issue_id)
                else:
                    ledger.create_deliveries(session, issue)
            self._problems.pop(issue_id, None)
            thread = threading.Thread(target=self._run, args=(issue_id,), name=f"send-{issue_id}", daemon=True)
            self._threads[issue_id] = thread
            thread.start()

    def _run(self, issue_id: int) -> None:
        queue = self._queues[issue_id] = Queue(self.settings, self.engine)
        try:
            campaign.deliver(self.engine, queue, issue_id)
        except NewsletterError as error:  # a relay that refused our session: the rows wait for the next start
            log.warning("send of issue %d stopped: %s", issue_id, error)
            self._problems[issue_id] = str(error)
        except Exception as error:  # the thread must say why it stopped, never die silently
            log.error("send of issue %d stopped", issue_id, exc_info=error)
            self._problems[issue_id] = N_("the send stopped on an unexpected error; see the server's log")

    def join(self, timeout: float) -> None:
        """Wait for the running sends (for tests and for a clean stop)."""
        for thread in list(self._threads.values()):
            thread.join(timeout)
