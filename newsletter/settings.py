"""One typed, frozen settings object, read from newsletter.toml and NEWSLETTER_* variables."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from newsletter import language
from newsletter.errors import ConfigError, MissingSetting

CONFIG_FILENAME = "newsletter.toml"
ENV_PREFIX = "NEWSLETTER_"
SMTP_SECURITY_CHOICES = ("none", "starttls", "ssl")


def setting(default: Any, help: str) -> Any:
    """A settings field with its default and its help line (shown in the README and `--help`)."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Settings:
    """Every setting of the newsletter; the README's settings table lists the same names."""

    database_url: str = setting("sqlite:///newsletter.db", "SQLAlchemy URL of the database (SQLite or PostgreSQL).")
    broker_url: str = setting("", "Dramatiq broker: redis://... or amqp://...; empty runs the queue in-process.")
    smtp_host: str = setting("localhost", "SMTP server that relays the mail.")
    smtp_port: int = setting(25, "Port of the SMTP server.")
    smtp_username: str = setting("", "SMTP AUTH user name; empty sends without AUTH.")
    smtp_password: str = setting("", "SMTP AUTH password.")
    smtp_security: str = setting("none", "Transport security: none, starttls or ssl.")
    smtp_ca_file: str = setting(
        "", "PEM file of CA certificates trusted for the SMTP server's TLS certificate; empty trusts the system's."
    )
    smtp_connections: int = setting(
        4, "Persistent SMTP connections open at once across all workers and their threads (counted in Redis)."
    )
    smtp_timeout: float = setting(30.0, "Seconds to wait for the SMTP server before giving up.")
    from_address: str = setting("", "Address the issues come from (required to send).")
    from_name: str = setting("", "Display name beside the From address.")
    reply_to: str = setting("", "Reply-To address; empty lets replies go to From.")
    newsletter_name: str = setting("Newsletter", "Name shown in the email header and web pages.")
    base_url: str = setting("http://localhost:8000", "Public URL of the web app (sign-up, unsubscribe, archive).")
    secret_key: str = setting("", "Key that signs tokens; `newsletter init` generates one (required).")
    bounce_address: str = setting(
        "", "Base of the VERP return path, e.g. bounces@example.org; empty uses bounces@ the From domain."
    )
    list_id: str = setting("", "List-Id (RFC 2919), e.g. news.example.org; empty derives it from From.")
    postal_address: str = setting(
        "", "Sender's physical postal address for the footer, as CAN-SPAM asks (required to send)."
    )
    template_dir: str = setting(
        "",
        "Directory whose templates win over the shipped ones (issue.mjml.j2, confirm.mjml.j2, welcome.mjml.j2, "
        "web/*.html, web/static/); empty uses the shipped.",
    )
    remote_image_sizes: bool = setting(
        True, "Read the size of remote images (a short partial GET each, once per issue) so none is enlarged."
    )
    remote_image_timeout: float = setting(3.0, "Seconds to wait for a remote image's size before leaving it unknown.")
    batch_size: int = setting(200, "Deliveries per queue message.")
    rate_limit: float = setting(0.0, "Messages per second across all workers; 0 means no limit.")
    rate_limit_url: str = setting(
        "",
        "Redis URL where workers share the rate_limit count and the smtp_connections slots; empty uses "
        "broker_url when it is redis:// (a RabbitMQ deployment needs it).",
    )
    queue_name: str = setting("newsletter", "Dramatiq queue the sending messages travel on (send and workers agree).")
    lease_seconds: float = setting(
        60.0,
        "Seconds a worker's claim on its deliveries lasts unrenewed; a live worker renews it every quarter of "
        "this, so only the claims of a worker that died run out (then another worker takes them; on the dead "
        "worker's own machine, at once).",
    )
    max_attempts: int = setting(6, "Tries per delivery on temporary SMTP failures before it is marked failed.")
    retry_delay_seconds: float = setting(
        120.0,
        "Wait before the second try of a temporarily failed delivery (up to twice that, jittered); doubles with "
        "each try.",
    )
    dkim_private_key_path: str = setting("", "PEM file of the DKIM private key; empty sends unsigned.")
    dkim_selector: str = setting("", "DKIM selector: the key is published at SELECTOR._domainkey.DOMAIN.")
    dkim_domain: str = setting("", "DKIM signing domain (d=); empty uses the From domain.")
    signup_check_deliverability: bool = setting(
        False, "Sign-up form: also check by DNS that the address's domain accepts mail."
    )
    signup_min_fill_seconds: float = setting(
        2.0, "Sign-up form: a post sooner than this after the form was shown is refused as a bot; 0 turns it off."
    )
    signup_limit_per_ip: int = setting(20, "Sign-ups accepted from one client IP per hour; 0 means no limit.")
    signup_limit_per_address: int = setting(5, "Sign-ups accepted for one address per hour; 0 means no limit.")
    confirmation_daily_cap: int = setting(3, "Confirmation emails sent to one address per 24 hours, at most.")
    confirm_max_age_seconds: int = setting(7 * 24 * 3600, "Seconds a confirmation link stays valid (7 days).")
    trusted_proxies: str = setting(
        "127.0.0.1", "Reverse proxies whose X-Forwarded-For names the client IP: comma-separated IPs, or *."
    )
    request_header_timeout_seconds: float = setting(
        10.0, "Web app: seconds a client has to send a request's line and headers before it is cut off (slowloris)."
    )
    request_body_timeout_seconds: float = setting(
        60.0, "Web app: seconds a client has to send a request's body once it has begun; then it is answered 408."
    )
    desk_session_hours: float = setting(
        12.0, "Hours a sign-in to the editor's desk (/admin) lasts before the password is asked again."
    )
    bounce_soft_threshold: float = setting(
        3.0, "Soft-bounce score at which a subscriber becomes bounced (each soft bounce adds 1)."
    )
    bounce_score_half_life_days: float = setting(
        14.0, "Days after which a soft-bounce score has decayed to half its value."
    )
    imap_host: str = setting("", "IMAP server `newsletter inbound --imap` reads bounces from.")
    imap_port: int = setting(993, "Port of the IMAP server.")
    imap_username: str = setting("", "IMAP user name.")
    imap_password: str = setting("", "IMAP password.")
    imap_folder: str = setting("INBOX", "IMAP folder to read; processed messages are flagged \\Seen.")
    imap_security: str = setting("ssl", "IMAP transport security: none, starttls or ssl.")
    pop3_host: str = setting("", "POP3 server `newsletter inbound --pop3` reads bounces from.")
    pop3_port: int = setting(995, "Port of the POP3 server.")
    pop3_username: str = setting("", "POP3 user name.")
    pop3_password: str = setting("", "POP3 password.")
    pop3_security: str = setting("ssl", "POP3 transport security: none, starttls or ssl; processed mail is deleted.")
    inbound_poll_seconds: float = setting(60.0, "Seconds between two reads of a mailbox with `inbound --watch`.")
    ses_topic_arns: str = setting(
        "", "Amazon SNS topic ARNs (comma-separated) whose SES notifications the web app accepts."
    )
    postmark_webhook_username: str = setting("", "Basic-auth user name Postmark's webhook must send.")
    postmark_webhook_password: str = setting("", "Basic-auth password Postmark's webhook must send.")
    sendgrid_webhook_public_key: str = setting(
        "", "SendGrid signed event webhook verification key (base64 DER or PEM, ECDSA P-256)."
    )
    mailgun_webhook_signing_key: str = setting("", "Mailgun HTTP webhook signing key.")
    default_language: str = setting(
        "en",
        "Language of the pages and mails for a reader whose own is not known (a tag with a catalog: en, zh-CN).",
    )
    welcome_enabled: bool = setting(True, "Send the welcome mail (templates/welcome.mjml.j2) once a reader confirms.")
    timezone: str = setting("UTC", "Time zone (IANA name) of `send --at` and of a front matter date with a time.")
    schedule_poll_seconds: float = setting(15.0, "Seconds between two looks for due scheduled sends (worker, serve).")
    schedule_max_lateness: float = setting(
        3600.0,
        "Seconds a scheduled send may start late (nothing was running at its time); later it waits for the editor.",
    )

    def require(self, *names: str) -> None:
        """Raise MissingSetting naming every one of `names` that has no value."""
        missing = [name for name in names if getattr(self, name) in ("", None)]
        if missing:
            raise MissingSetting(*missing)

    @property
    def shared_redis_url(self) -> str:
        """The Redis where workers share counts (rate limit, connection slots, waits): empty when there is none."""
        return self.rate_limit_url or (self.broker_url if self.broker_url.startswith("redis") else "")

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed (the object itself never changes)."""
        return dataclasses.replace(self, **changes)


def setting_help() -> dict[str, str]:
    """Each setting's name and its help line, in declaration order."""
    return {f.name: f.metadata["help"] for f in dataclasses.fields(Settings)}


def load_settings(config_path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read newsletter.toml (or `config_path`), then let NEWSLETTER_* environment variables win.

    Raises:
        ConfigError: the file is unreadable, names an unknown setting, or a value has the wrong type.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = Path(config_path) if config_path is not None else Path(CONFIG_FILENAME)
    if config_path is not None and not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    if path.is_file():
        values.update(_read_toml(path))
    types = get_type_hints(Settings)
    for name in types:
        env_name = ENV_PREFIX + name.upper()
        if env_name in environ:
            values[name] = environ[env_name]
    coerced = {name: _coerce(name, value, types[name]) for name, value in values.items()}
    settings = Settings(**coerced)
    _validate(settings)
    return settings


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"cannot read {path}: {error}") from None
    known = setting_help()
    for key in data:
        if key not in known:
            raise ConfigError(f"{path}: unknown setting {key!r}")
    return data


def _coerce(name: str, value: Any, kind: Any) -> Any:
    try:
        if kind is int and not isinstance(value, bool):
            return int(value)
        if kind is float and not isinstance(value, bool):
            return float(value)
        if kind is str and isinstance(value, str):
            return value
        if kind is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off", ""):
                return False
    except ValueError:
        pass
    raise ConfigError(f"setting {name!r} must be {kind.__name__}, not {value!r}")


def _validate(settings: Settings) -> None:
    if settings.smtp_security not in SMTP_SECURITY_CHOICES:
        raise ConfigError(
            f"setting 'smtp_security' must be one of {', '.join(SMTP_SECURITY_CHOICES)}, not {settings.smtp_security!r}"
        )
    for name in ("smtp_port", "smtp_connections", "batch_size"):
        if getattr(settings, name) < 1:
            raise ConfigError(f"setting {name!r} must be at least 1")
    if settings.rate_limit < 0:
        raise ConfigError("setting 'rate_limit' must not be negative")
    for name in (
        "lease_seconds",
        "max_attempts",
        "retry_delay_seconds",
        "request_header_timeout_seconds",
        "request_body_timeout_seconds",
    ):
        if getattr(settings, name) <= 0:
            raise ConfigError(f"setting {name!r} must be positive")
    for name in (
        "signup_min_fill_seconds",
        "signup_limit_per_ip",
        "signup_limit_per_address",
        "confirmation_daily_cap",
    ):
        if getattr(settings, name) < 0:
            raise ConfigError(f"setting {name!r} must not be negative")
    if language.supported(settings.default_language) is None:
        raise ConfigError(
            f"setting 'default_language' must be a language with a catalog ({', '.join(language.available())}), "
            f"not {settings.default_language!r}"
        )
    if settings.schedule_poll_seconds <= 0:
        raise ConfigError("setting 'schedule_poll_seconds' must be greater than 0")
    if settings.schedule_max_lateness < 0:
        raise ConfigError("setting 'schedule_max_lateness' must not be negative")
    if settings.confirm_max_age_seconds < 1:
        raise ConfigError("setting 'confirm_max_age_seconds' must be at least 1")
    for name in ("bounce_soft_threshold", "bounce_score_half_life_days", "inbound_poll_seconds", "desk_session_hours"):
        if getattr(settings, name) <= 0:
            raise ConfigError(f"setting {name!r} must be greater than 0")
    for name in ("imap_security", "pop3_security"):
        if getattr(settings, name) not in SMTP_SECURITY_CHOICES:
            raise ConfigError(f"setting {name!r} must be one of {', '.join(SMTP_SECURITY_CHOICES)}")
    for name in ("from_address", "reply_to", "bounce_address", "from_name", "list_id"):
        value = getattr(settings, name)
        if "\r" in value or "\n" in value:
            raise ConfigError(f"setting {name!r} must not contain a line break")
