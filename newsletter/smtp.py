"""SMTP: one persistent connection per worker thread, and the one place that says what a reply means."""

from __future__ import annotations

import re
import select
import smtplib
import socket
import ssl
from dataclasses import dataclass
from enum import StrEnum

from newsletter.errors import ConfigError, NewsletterError
from newsletter.settings import Settings

CONNECTION_LOST = 0  # no reply at all: the server closed the connection or the network failed
END_OF_DATA = "end of DATA"  # the stage after the final dot: a connection lost here may have delivered
# One mechanism is tried, not each in turn as smtplib's login() does: another mechanism cannot make a wrong
# password right, and every refused try counts towards the relay's lockout.
AUTH_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")
UNSAFE_ADDRESS_RE = re.compile(r"[\x00-\x20\x7f<>]")  # would break out of MAIL FROM:<...> or RCPT TO:<...>


class Outcome(StrEnum):
    SENT = "sent"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class Reply:
    """A server's reply to one stage of the transaction (code 0 when the connection was lost)."""

    code: int
    text: str
    stage: str = ""

    @property
    def outcome(self) -> Outcome:
        return classify(self.code)

    def __str__(self) -> str:
        where = f" (at {self.stage})" if self.stage else ""
        return f"{self.code} {self.text}{where}" if self.code else f"connection lost: {self.text}{where}"


class TemporaryFailure(NewsletterError):
    """The server deferred the message (4xx, 552 or a lost connection): try again later."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


class PermanentFailure(NewsletterError):
    """The server refused the message for good (5xx): the address bounced."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


class _Stale(Exception):
    """A reused connection turned out closed before the server said anything about this message."""


class SessionRefused(NewsletterError):
    """The relay would not open a session for us (untrusted certificate, no TLS, AUTH refused): our setup is at
    fault, not any recipient, so no delivery may be counted as bounced for it."""


def classify(code: int) -> Outcome:
    """What an SMTP reply code means for the delivery (RFC 5321 4.2.1: the first digit decides)."""
    if 200 <= code < 300:
        return Outcome.SENT
    if code == 552:
        # RFC 5321 4.5.3.1.10: 552 "too much mail data / storage exceeded" is treated as temporary.
        return Outcome.TEMPORARY
    if 500 <= code < 600:
        return Outcome.PERMANENT
    # 4xx (421 closing, 450/451/452 busy or greylisted, 454 TLS unavailable), a lost connection,
    # and anything a server should never say: try again rather than drop a subscriber.
    return Outcome.TEMPORARY


def is_throttling(code: int) -> bool:
    """True when the server asks us to slow down (every 4xx; RFC 5321 4.2.5 421 also closes)."""
    return code == CONNECTION_LOST or 400 <= code < 500


class SmtpConnection:
    """A persistent connection to the relay, opened on first use and reopened after a drop."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._smtp: smtplib.SMTP | None = None
        self._stage = "connect"  # how far the current transaction got, for a connection lost on the way

    def send(self, envelope_from: str, recipient: str, message: bytes) -> Reply:
        """Send one message to one recipient.

        A connection kept open from an earlier message that the server closed meanwhile (an idle timeout)
        is noticed before the message, or at the first reply, and opened again: that costs no try.

        Raises:
            TemporaryFailure: a 4xx or 552 reply, or the connection could not be made or was lost.
            PermanentFailure: a 5xx reply to MAIL, RCPT or DATA, or an address no command can carry.
            SessionRefused: the server's certificate is not trusted, or it refused STARTTLS or AUTH for good.
            ConfigError: `smtp_ca_file` cannot be read.
        """
        for address, stage in ((envelope_from, "MAIL"), (recipient, "RCPT")):
            if UNSAFE_ADDRESS_RE.search(address):
                raise PermanentFailure(Reply(553, f"address {address[:80]!r} cannot go into an SMTP command", stage))
        if self._smtp is not None and _closed_by_server(self._smtp):
            self.close()
        reused = self._smtp is not None
        try:
            return self._transaction(envelope_from, recipient, message, reused)
        except _Stale:
            self.close()
            return self._transaction(envelope_from, recipient, message, reused=False)

    def _transaction(self, envelope_from: str, recipient: str, message: bytes, reused: bool) -> Reply:
        self._stage = "connect"
        try:
            smtp = self._smtp or self._connect()
            self._stage = "MAIL"
            utf8 = not (envelope_from + recipient).isascii()
            if utf8 and not smtp.has_extn("smtputf8"):
                # RFC 6531 3.4: an address that is not ASCII needs a server that offers SMTPUTF8; our relay's limit.
                raise PermanentFailure(Reply(553, "5.6.7 the SMTP server does not offer SMTPUTF8", "MAIL"))
            self._envelope(smtp, envelope_from, recipient, utf8, reused)
            smtp.send(_data(message))
            self._stage = END_OF_DATA
            code, text = smtp.getreply()
            reply = self._reply(code, text, "DATA")
            if reply.outcome != Outcome.SENT:
                self._fail(reply)
            return reply
        except smtplib.SMTPResponseException as error:
            # A greeting other than 220 (RFC 5321 3.1: 554 "no SMTP service here"), or STARTTLS refused. It
            # comes before OSError, of which smtplib's errors are a kind.
            self.close()
            reply = self._reply(error.smtp_code, error.smtp_error, "connect")
            if reply.outcome == Outcome.PERMANENT:  # about our session, never about the recipient
                where = f"{self._settings.smtp_host}:{self._settings.smtp_port}"
                raise SessionRefused(f"the SMTP server {where} refused the session: {reply}") from None
            raise TemporaryFailure(reply) from None
        except OSError as error:  # the connection: refused, reset, timed out, closed (SMTPServerDisconnected)
            self.close()
            if reused and self._stage == "MAIL":
                raise _Stale() from None  # closed while idle: nothing was said about this message yet
            raise TemporaryFailure(Reply(CONNECTION_LOST, str(error) or type(error).__name__, self._stage)) from None

    def _envelope(self, smtp: smtplib.SMTP, envelope_from: str, recipient: str, utf8: bool, reused: bool) -> None:
        """MAIL, RCPT and DATA, in one write when the server offers PIPELINING (RFC 2920); raises unless 354."""
        commands = [
            f"MAIL FROM:<{envelope_from}>{' SMTPUTF8' if utf8 else ''}\r\n".encode(),
            f"RCPT TO:<{recipient}>\r\n".encode(),
            b"DATA\r\n",
        ]
        replies: list[Reply] = []
        pipelined = smtp.has_extn("pipelining")
        if pipelined:
            smtp.send(b"".join(commands))
        for stage, command in zip(("MAIL", "RCPT", "DATA"), commands, strict=True):
            self._stage = stage
            if not pipelined:
                smtp.send(command)
            code, text = smtp.getreply()
            replies.append(self._reply(code, text, stage))
            if stage == "MAIL" and reused and code == 421:
                raise _Stale()  # RFC 5321 4.5.3.2.7: the server timed the idle connection out and says so
            if not pipelined and replies[-1].code >= 400:
                break
        refused = next((reply for reply in replies[:2] if reply.outcome != Outcome.SENT), None)
        if refused is not None:
            if replies[-1].code == 354:  # RFC 2920 3.1: DATA accepted after all; end it empty
                smtp.send(b".\r\n")
                smtp.getreply()
            self._fail(refused)
        if replies[-1].code != 354:
            self._fail(replies[-1])

    def close(self) -> None:
        """QUIT politely when the connection is still up, then forget it."""
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()

    def _connect(self) -> smtplib.SMTP:
        settings = self._settings
        # EHLO names this host; gethostname() never waits on DNS the way getfqdn() can.
        local_name = socket.gethostname() or "localhost"
        context = tls_context(settings) if settings.smtp_security != "none" else None
        smtp: smtplib.SMTP
        try:
            if settings.smtp_security == "ssl":
                smtp = smtplib.SMTP_SSL(
                    settings.smtp_host,
                    settings.smtp_port,
                    local_hostname=local_name,
                    timeout=settings.smtp_timeout,
                    context=context,
                )
            else:
                smtp = smtplib.SMTP(
                    settings.smtp_host, settings.smtp_port, local_hostname=local_name, timeout=settings.smtp_timeout
                )
        except ssl.SSLCertVerificationError as error:
            raise _untrusted(settings, error) from None
        try:
            self._open_session(smtp, context)
        except BaseException:
            smtp.close()
            raise
        self._smtp = smtp
        return smtp

    def _open_session(self, smtp: smtplib.SMTP, context: ssl.SSLContext | None) -> None:
        """EHLO, STARTTLS and AUTH as configured; raises SessionRefused when our setup is what the server refuses."""
        settings = self._settings
        where = f"{settings.smtp_host}:{settings.smtp_port}"
        smtp.ehlo()
        if settings.smtp_security == "starttls":
            if not smtp.has_extn("starttls"):
                raise SessionRefused(f"the SMTP server {where} does not offer STARTTLS (smtp_security = starttls)")
            try:
                smtp.starttls(context=context)
            except ssl.SSLCertVerificationError as error:
                raise _untrusted(settings, error) from None
            smtp.ehlo()  # RFC 3207 4.2: forget what the server said before TLS, ask again
        if not settings.smtp_username:
            return
        advertised = smtp.esmtp_features.get("auth", "").upper().split()
        if not advertised:
            # RFC 4954 4: a server may offer AUTH only once the session is encrypted; never send it in the clear.
            raise SessionRefused(
                f"the SMTP server {where} offers no AUTH (with smtp_security = "
                f"{settings.smtp_security}); it may accept it only over starttls or ssl"
            )
        mechanism = next((name for name in AUTH_MECHANISMS if name in advertised), None)
        if mechanism is None:
            raise SessionRefused(
                f"the SMTP server {where} offers AUTH {' '.join(advertised)}, none of {', '.join(AUTH_MECHANISMS)}"
            )
        smtp.user, smtp.password = settings.smtp_username, settings.smtp_password
        try:
            smtp.auth(mechanism, getattr(smtp, "auth_" + mechanism.lower().replace("-", "_")))  # as login() does
        except smtplib.SMTPResponseException as error:
            if classify(error.smtp_code) != Outcome.PERMANENT:
                raise  # RFC 4954 6: 454 is a temporary authentication failure, worth a retry
            reply = self._reply(error.smtp_code, error.smtp_error, "AUTH")
            raise SessionRefused(
                f"the SMTP server {where} refused AUTH as {settings.smtp_username!r}: {reply}; "
                "check smtp_username and smtp_password"
            ) from None

    def _fail(self, reply: Reply) -> None:
        if reply.code == 421:
            # RFC 5321 3.8: 421 means the server is closing the transmission channel.
            self.close()
        else:
            self._reset()
        if reply.outcome == Outcome.PERMANENT:
            raise PermanentFailure(reply)
        raise TemporaryFailure(reply)

    def _reset(self) -> None:
        """RSET after a refused stage so the next transaction starts clean (RFC 5321 4.1.1.5)."""
        if self._smtp is None:
            return
        try:
            self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            self.close()

    @staticmethod
    def _reply(code: int, text: bytes | str, stage: str) -> Reply:
        shown = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        return Reply(code if code > 0 else CONNECTION_LOST, " ".join(shown.split()), stage)


def tls_context(settings: Settings) -> ssl.SSLContext:
    """Certificate and host name checks always on; `smtp_ca_file` adds a private CA to the trusted ones.

    Raises:
        ConfigError: `smtp_ca_file` cannot be read as PEM certificates.
    """
    try:
        return ssl.create_default_context(cafile=settings.smtp_ca_file or None)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(f"setting 'smtp_ca_file': cannot load {settings.smtp_ca_file!r}: {error}") from None


def _untrusted(settings: Settings, error: ssl.SSLCertVerificationError) -> SessionRefused:
    return SessionRefused(
        f"the TLS certificate of the SMTP server {settings.smtp_host}:{settings.smtp_port} is not trusted "
        f"({error.verify_message}); set smtp_ca_file to the CA that signed it"
    )


def _closed_by_server(smtp: smtplib.SMTP) -> bool:
    """True when an idle connection has something to read: the server hung up (EOF) or said 421 before closing."""
    sock = smtp.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class WireReady(bytes):
    """Message bytes that go into DATA as they are: CRLF line ends, a final CRLF, and no line that starts
    with a dot (RFC 5321 4.5.2). `MessageTemplate.fill` makes them, having checked its fixed pieces once
    per issue and only the recipient's own pieces per message; any other bytes get both passes."""


def is_transparent(piece: bytes) -> bool:
    """True when no line of `piece` (a part of a message) could start with a dot and every break is CRLF."""
    return piece[:1] != b"." and b"\n." not in piece and piece.count(b"\n") == piece.count(b"\r\n")


def _data(message: bytes) -> bytes:
    """The DATA payload: CRLF line ends (RFC 5321 2.3.8), dot-stuffed (4.5.2), ended by CRLF.CRLF."""
    # WireReady bytes need neither pass, and each would cost more than composing the message does:
    # two-byte searches over 80 kB of CRLF-dense text take 120-160 us each, filling a template 26 us.
    if not isinstance(message, WireReady):
        if message.count(b"\n") != message.count(b"\r\n"):
            message = re.sub(rb"\r?\n", b"\r\n", message)
        if not message.endswith(b"\r\n"):
            message += b"\r\n"
        message = (b"." if message.startswith(b".") else b"") + message.replace(b"\r\n.", b"\r\n..")
    return message + b".\r\n"
