"""Where inbound mail is read from: stdin, Maildir, mbox, IMAP and POP3. Each message is recorded, then marked.

Recording comes first and marking second, so a crash between the two leaves the message unmarked; it is
read again next time and recognised by its external id, so it still counts once.
"""

from __future__ import annotations

import imaplib
import mailbox
import os
import poplib
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from newsletter import database
from newsletter.errors import NewsletterError
from newsletter.inbound import ingest
from newsletter.received import MAX_MESSAGE_BYTES
from newsletter.settings import Settings
from newsletter.tally import Tally

MAILDIR_SEEN_FLAG = "S"  # Maildir flags (cr.yp.to/proto/maildir.html): S means seen
MAILDIR_INFO = ":2,"


class MailboxUnreadable(NewsletterError):
    """A Maildir, mbox file or mail server that cannot be opened or read."""


def ingest_committed(
    engine: Engine, settings: Settings, raw: bytes, source: str, envelope_recipient: str | None = None
) -> Tally:
    """Ingest one message in its own transaction, committed before the caller marks the message."""
    try:
        with database.transaction(engine) as session:
            return ingest(session, settings, raw, source=source, envelope_recipient=envelope_recipient)
    except IntegrityError:
        # Another reader recorded the same report between our check and our insert: now it is a duplicate.
        with database.transaction(engine) as session:
            return ingest(session, settings, raw, source=source, envelope_recipient=envelope_recipient)


def read_capped(stream: BinaryIO) -> bytes:
    """At most MAX_MESSAGE_BYTES of a stream; the rest is read and dropped so a pipe is never left full."""
    data = stream.read(MAX_MESSAGE_BYTES)
    while stream.read(1024 * 1024):
        pass
    return data


def read_maildir(engine: Engine, settings: Settings, path: Path) -> Tally:
    """Ingest every message of a Maildir not yet flagged seen, then move it to cur/ with the S flag."""
    new, cur = path / "new", path / "cur"
    if not new.is_dir() or not cur.is_dir():
        raise MailboxUnreadable(f"{path} is not a Maildir (it needs new/ and cur/ directories)")
    tally = Tally()
    for file in _unseen_maildir_files(new, cur):
        try:
            with file.open("rb") as stream:
                raw = read_capped(stream)
        except FileNotFoundError:
            continue  # another reader took it first
        tally.add(ingest_committed(engine, settings, raw, "maildir"))
        base, _, flags = file.name.partition(MAILDIR_INFO)
        seen = "".join(sorted(set(flags) | {MAILDIR_SEEN_FLAG}))
        try:
            os.replace(file, cur / f"{base}{MAILDIR_INFO}{seen}")
        except FileNotFoundError:
            pass
    return tally


def _unseen_maildir_files(new: Path, cur: Path) -> Iterator[Path]:
    yield from sorted(file for file in new.iterdir() if file.is_file() and not file.name.startswith("."))
    for file in sorted(cur.iterdir()):
        _, info, flags = file.name.partition(MAILDIR_INFO)
        if file.is_file() and not file.name.startswith(".") and not (info and MAILDIR_SEEN_FLAG in flags):
            yield file


def read_mbox(engine: Engine, settings: Settings, path: Path) -> Tally:
    """Ingest every message of an mbox file; the file is left as it is (a second run records nothing twice)."""
    if not path.is_file():
        raise MailboxUnreadable(f"{path} is not an mbox file")
    box = mailbox.mbox(path, create=False)
    tally = Tally()
    try:
        for key in box.iterkeys():
            tally.add(ingest_committed(engine, settings, box.get_bytes(key)[:MAX_MESSAGE_BYTES], "mbox"))
    finally:
        box.close()
    return tally


def read_imap(engine: Engine, settings: Settings, ssl_context: ssl.SSLContext | None = None) -> Tally:
    """Ingest the unseen messages of the IMAP folder, flagging each \\Seen once it is recorded."""
    settings.require("imap_host", "imap_username")
    tally = Tally()
    with _imap_session(settings, ssl_context) as client:
        status, data = client.uid("SEARCH", "UNSEEN")
        _check(status, data, "search")
        for uid in data[0].split() if data and data[0] else []:
            # BODY.PEEK (RFC 3501 6.4.5) leaves \Seen unset until the message is recorded.
            status, fetched = client.uid("FETCH", uid, "(BODY.PEEK[])")
            _check(status, fetched, "fetch")
            raw = next((item[1] for item in fetched if isinstance(item, tuple)), b"")
            tally.add(ingest_committed(engine, settings, raw[:MAX_MESSAGE_BYTES], "imap"))
            status, stored = client.uid("STORE", uid, "+FLAGS.SILENT", "(\\Seen)")
            _check(status, stored, "store")
    return tally


@contextmanager
def _imap_session(settings: Settings, ssl_context: ssl.SSLContext | None) -> Iterator[imaplib.IMAP4]:
    where = f"IMAP {settings.imap_host}:{settings.imap_port}"
    context = ssl_context or ssl.create_default_context()
    try:
        if settings.imap_security == "ssl":
            client: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                settings.imap_host, settings.imap_port, ssl_context=context, timeout=settings.smtp_timeout
            )
        else:
            client = imaplib.IMAP4(settings.imap_host, settings.imap_port, timeout=settings.smtp_timeout)
    except OSError as error:
        raise MailboxUnreadable(f"{where}: {error}") from None
    try:
        if settings.imap_security == "starttls":
            client.starttls(context)
        client.login(settings.imap_username, settings.imap_password)
        status, data = client.select(_quoted(settings.imap_folder))
        _check(status, data, f"select {settings.imap_folder}")
        yield client
        client.logout()
    except (OSError, imaplib.IMAP4.error) as error:
        raise MailboxUnreadable(f"{where}: {error}") from None
    finally:
        if client.state != "LOGOUT":  # logout() closes the connection itself
            client.shutdown()


def read_pop3(engine: Engine, settings: Settings, ssl_context: ssl.SSLContext | None = None) -> Tally:
    """Ingest every message on the POP3 server, deleting each once it is recorded (POP3 has no flags).

    Deletions take effect at QUIT (RFC 1939 6): a crash before it leaves every message on the server.
    """
    settings.require("pop3_host", "pop3_username")
    tally = Tally()
    client = _pop3_session(settings, ssl_context)
    try:
        count, _ = client.stat()
        for number in range(1, count + 1):
            _, lines, _ = client.retr(number)
            raw = b"\r\n".join(lines)[:MAX_MESSAGE_BYTES]
            tally.add(ingest_committed(engine, settings, raw, "pop3"))
            client.dele(number)
        client.quit()
    except (OSError, poplib.error_proto) as error:
        raise MailboxUnreadable(f"POP3 {settings.pop3_host}:{settings.pop3_port}: {error}") from None
    finally:
        client.close()  # without QUIT the server keeps every message, deleted ones included
    return tally


def _pop3_session(settings: Settings, ssl_context: ssl.SSLContext | None) -> poplib.POP3:
    where = f"POP3 {settings.pop3_host}:{settings.pop3_port}"
    context = ssl_context or ssl.create_default_context()
    try:
        if settings.pop3_security == "ssl":
            client: poplib.POP3 = poplib.POP3_SSL(
                settings.pop3_host, settings.pop3_port, context=context, timeout=settings.smtp_timeout
            )
        else:
            client = poplib.POP3(settings.pop3_host, settings.pop3_port, timeout=settings.smtp_timeout)
    except OSError as error:
        raise MailboxUnreadable(f"{where}: {error}") from None
    try:
        if settings.pop3_security == "starttls":
            client.stls(context)
        client.user(settings.pop3_username)
        client.pass_(settings.pop3_password)
    except (OSError, poplib.error_proto) as error:
        client.close()
        raise MailboxUnreadable(f"{where}: {error}") from None
    return client


def _check(status: str, data: object, what: str) -> None:
    if status != "OK":
        raise imaplib.IMAP4.error(f"{what} failed: {data!r}"[:300])


def _quoted(folder: str) -> str:
    """A folder name as an IMAP quoted string (RFC 3501 4.3), so spaces and quotes survive."""
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'
