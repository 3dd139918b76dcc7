"""The deliverability checklist: the DNS records to publish, what DNS answers today, and the settings in effect."""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import dns.exception
import dns.resolver
from cryptography.hazmat.primitives import serialization

from newsletter import language
from newsletter.errors import NewsletterError
from newsletter.links import bounce_base, domain_of
from newsletter.settings import Settings

DNS_TIMEOUT_SECONDS = 3.0
# A setting whose name holds one of these is shown as set or unset, never its value.
SECRET_WORDS = ("password", "secret", "signing_key")
MASK = "••••••••"
N_ = language.N_


class Verdict(StrEnum):
    OK = "ok"
    MISSING = "missing"  # DNS answers, without the record
    WRONG = "wrong"  # a record is there, but not the one to publish
    UNKNOWN = "cannot check"  # DNS did not answer (offline, timeout) or a setting is missing


# A verdict as the desk shows it (the key stays English: the page's CSS classes and the tests use it).
VERDICT_NAMES = {
    Verdict.OK: N_("ok"),
    Verdict.MISSING: N_("missing"),
    Verdict.WRONG: N_("wrong"),
    Verdict.UNKNOWN: N_("cannot check"),
}


def verdict_names(lang: str) -> dict[str, str]:
    """`{"ok": "正常", ...}`: each verdict's name in `lang`."""
    return language.names(lang, {str(verdict): label for verdict, label in VERDICT_NAMES.items()})


@dataclass(frozen=True)
class Check:
    """One record: where it goes, what to publish, what DNS answers now, and the verdict."""

    name: str  # SPF, DKIM, DMARC, bounce MX (in the checklist's language)
    host: str
    record_type: str
    publish: str
    found: tuple[str, ...]
    verdict: Verdict
    note: str  # in the checklist's language


class _NoAnswer(NewsletterError):
    """DNS could not be asked (no network, a timeout): the check says "cannot check"; the message is the
    name of the error."""


def _lookup(resolver: dns.resolver.Resolver, host: str, record_type: str) -> tuple[str, ...]:
    try:
        answer = resolver.resolve(host, record_type)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return ()
    except (dns.exception.DNSException, OSError) as error:
        raise _NoAnswer(error.__class__.__name__) from None
    if record_type == "TXT":
        return tuple(b"".join(item.strings).decode("utf-8", "replace") for item in answer)
    return tuple(item.to_text() for item in answer)


def _check(
    resolver: dns.resolver.Resolver, lang: str, name: str, host: str, record_type: str, prefix: str = ""
) -> tuple[tuple[str, ...], Verdict, str]:
    try:
        found = _lookup(resolver, host, record_type)
    except _NoAnswer as error:
        return (), Verdict.UNKNOWN, language.gettext(lang, N_("DNS did not answer: %(error)s")) % {"error": error}
    missing = language.gettext(lang, N_("no %(name)s record at %(host)s"))
    if prefix:
        found = tuple(record for record in found if record.lower().startswith(prefix.lower())) or found
        if not any(record.lower().startswith(prefix.lower()) for record in found):
            return found, Verdict.MISSING, missing % {"name": name, "host": host}
    elif not found:
        return found, Verdict.MISSING, missing % {"name": record_type, "host": host}
    return found, Verdict.OK, ""


def dkim_public_record(settings: Settings) -> str | None:
    """The TXT value to publish for the DKIM key of `dkim_private_key_path`, or None without a key.

    Raises:
        NewsletterError: the key file cannot be read as a PEM private key.
    """
    if not settings.dkim_private_key_path:
        return None
    try:
        return _public_record(settings.dkim_private_key_path)
    except (OSError, ValueError, TypeError) as error:
        raise NewsletterError(f"cannot read the DKIM key {settings.dkim_private_key_path}: {error}") from None


def _public_record(path: str) -> str:
    """The DKIM TXT value of the PEM private key at `path` (raises what reading or parsing it raises)."""
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    kind = "ed25519" if key.__class__.__name__.startswith("Ed25519") else "rsa"
    if kind == "ed25519":  # RFC 8463 3: the bare 32-byte key, not the SubjectPublicKeyInfo
        public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"v=DKIM1; k={kind}; p={base64.b64encode(public).decode()}"


def checklist(settings: Settings, lang: str, resolver: dns.resolver.Resolver | None = None) -> list[Check]:
    """Every record the newsletter's mail needs, checked against DNS now, named and explained in `lang`."""
    if resolver is None:
        try:
            resolver = dns.resolver.Resolver()
        except dns.exception.DNSException:  # no /etc/resolv.conf: offline
            resolver = dns.resolver.Resolver(configure=False)
        resolver.lifetime = DNS_TIMEOUT_SECONDS
    if not settings.from_address:
        note = language.gettext(lang, N_("from_address is not set: nothing to check"))
        return [Check("From", "", "", "", (), Verdict.UNKNOWN, note)]
    domain = domain_of(settings.from_address)
    checks = []
    relay_domain = language.gettext(lang, N_("<your relay's SPF domain>"))
    spf = f"v=spf1 include:{relay_domain} -all"
    found, verdict, note = _check(resolver, lang, "SPF", domain, "TXT", "v=spf1")
    note = note or language.gettext(lang, N_("the relay's addresses must be in it"))
    checks.append(Check("SPF", domain, "TXT", spf, found, verdict, note))
    checks.append(_dkim(settings, resolver, lang, domain))
    dmarc_host = f"_dmarc.{domain}"
    dmarc = f"v=DMARC1; p=none; rua=mailto:dmarc@{domain}"
    found, verdict, note = _check(resolver, lang, "DMARC", dmarc_host, "TXT", "v=DMARC1")
    note = note or language.gettext(lang, N_("Gmail and Yahoo ask bulk senders for one"))
    checks.append(Check("DMARC", dmarc_host, "TXT", dmarc, found, verdict, note))
    _local, bounce_domain = bounce_base(settings)
    receiver = language.gettext(lang, N_("<the host that receives %(domain)s's mail>")) % {"domain": bounce_domain}
    mx = f"10 {receiver}."
    found, verdict, note = _check(resolver, lang, "MX", bounce_domain, "MX")
    note = note or language.gettext(lang, N_("bounces come back here"))
    checks.append(Check(language.gettext(lang, N_("Bounce MX")), bounce_domain, "MX", mx, found, verdict, note))
    return checks


def _dkim(settings: Settings, resolver: dns.resolver.Resolver, lang: str, domain: str) -> Check:
    path = settings.dkim_private_key_path
    try:
        publish = _public_record(path) if path else None
    except (OSError, ValueError, TypeError) as error:
        note = language.gettext(lang, N_("cannot read the DKIM key %(path)s: %(error)s"))
        return Check("DKIM", "", "TXT", "", (), Verdict.UNKNOWN, note % {"path": path, "error": error})
    if publish is None or not settings.dkim_selector:
        note = language.gettext(lang, N_("dkim_private_key_path and dkim_selector are not set: mail goes out unsigned"))
        return Check("DKIM", "", "TXT", "", (), Verdict.MISSING, note)
    host = f"{settings.dkim_selector}._domainkey.{settings.dkim_domain or domain}"
    found, verdict, note = _check(resolver, lang, "DKIM", host, "TXT", "v=DKIM1")
    if verdict == Verdict.OK:
        wanted = publish.rpartition("p=")[2]
        published = {record.replace(" ", "").rpartition("p=")[2].rstrip(";") for record in found}
        if wanted not in published:
            verdict = Verdict.WRONG
            note = language.gettext(lang, N_("the published key is not the key of dkim_private_key_path"))
    return Check("DKIM", host, "TXT", publish, found, verdict, note)


def settings_in_effect(settings: Settings, lang: str) -> list[tuple[str, str]]:
    """Every setting and its value, secrets masked (shown as set or not, in `lang`)."""
    shown = []
    unset = language.gettext(lang, N_("(not set)"))
    for item in dataclasses.fields(settings):
        value = getattr(settings, item.name)
        if any(word in item.name for word in SECRET_WORDS):
            text = MASK if value else unset
        elif item.name.endswith("_url") and "@" in str(value):
            text = _mask_url_password(str(value))
        else:
            text = str(value)
        shown.append((item.name, text))
    return shown


def _mask_url_password(url: str) -> str:
    """postgresql://user:secret@host/db as postgresql://user:••••@host/db."""
    scheme, _, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    user, colon, _password = credentials.partition(":")
    return f"{scheme}://{user}{':' + MASK if colon else ''}{at}{host}"
