"""The URLs and addresses that name a subscriber, an issue or a delivery: one place builds them all."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote

from newsletter.settings import Settings
from newsletter.tokens import Purpose, Signer


def domain_of(address: str) -> str:
    """The domain of an address, lower-cased."""
    return address.rpartition("@")[2].strip().lower()


def sender_domain(settings: Settings) -> str:
    """The domain mail is sent from: that of from_address (required)."""
    settings.require("from_address")
    return domain_of(settings.from_address)


def issue_url(settings: Settings, slug: str) -> str:
    """The web version of an issue in the archive (the email's view-in-browser link)."""
    return f"{settings.base_url.rstrip('/')}/issues/{quote(slug)}"


def unsubscribe_url(settings: Settings, signer: Signer, subscriber_id: int) -> str:
    """The page with one button that unsubscribes; its POST is also the RFC 8058 one-click target."""
    token = signer.dumps_permanent(Purpose.UNSUBSCRIBE, subscriber_id)
    return f"{settings.base_url.rstrip('/')}/unsubscribe/{token}"


def preferences_url(settings: Settings, signer: Signer, subscriber_id: int) -> str:
    """The page where a subscriber sees, exports or erases what is stored about them."""
    token = signer.dumps_permanent(Purpose.PREFERENCES, subscriber_id)
    return f"{settings.base_url.rstrip('/')}/preferences/{token}"


def confirm_url(settings: Settings, token: str) -> str:
    """The double opt-in page of a confirmation token (`optin.confirmation_token`: it names the request)."""
    return f"{settings.base_url.rstrip('/')}/confirm/{token}"


def bounce_base(settings: Settings) -> tuple[str, str]:
    """The local part and domain of the VERP base: bounce_address, else bounces@ the From domain."""
    base = settings.bounce_address or f"bounces@{sender_domain(settings)}"
    local, _, domain = base.rpartition("@")
    return local, domain.lower()


def return_path(settings: Settings, signer: Signer, delivery_id: int) -> str:
    """The VERP envelope sender of one delivery: bounces+TOKEN@domain."""
    local, domain = bounce_base(settings)
    return f"{local}+{signer.address_token(Purpose.BOUNCE, delivery_id)}@{domain}"


def outbound_return_path(settings: Settings, signer: Signer, outbound_id: int) -> str:
    """The VERP envelope sender of a one-off message (a confirmation mail): bounces+TOKEN@domain as well."""
    local, domain = bounce_base(settings)
    return f"{local}+{signer.address_token(Purpose.OUTBOUND_BOUNCE, outbound_id)}@{domain}"


def unsubscribe_mailto(settings: Settings, signer: Signer, subscriber_id: int) -> str:
    """The mailto URI of List-Unsubscribe (RFC 2369): a mail to it unsubscribes."""
    _, domain = bounce_base(settings)
    token = signer.address_token(Purpose.MAILTO_UNSUBSCRIBE, subscriber_id)
    return f"mailto:unsubscribe+{token}@{domain}?subject=unsubscribe"


def list_id(settings: Settings) -> str:
    """The List-Id header value (RFC 2919): `"Name" <id>`, the id derived from From when unset."""
    identifier = settings.list_id or f"newsletter.{sender_domain(settings)}"
    name = settings.newsletter_name.replace('"', "'")
    return f'"{name}" <{identifier}>'


MESSAGE_ID_MAC_HEX_CHARS = 16  # 64 bits: a report quoting a Message-ID we never issued is told apart


def message_id(settings: Settings, issue_id: int, subscriber_id: int) -> str:
    """A Message-ID that is the same every time one issue goes to one subscriber (resends included).

    It carries a MAC, so a report that returns it is known to be about a delivery we made (read_message_id).
    """
    mac = _message_id_mac(settings, issue_id, subscriber_id)
    return f"<{issue_id}.{subscriber_id}.{mac}@{sender_domain(settings)}>"


def read_message_id(settings: Settings, value: str) -> tuple[int, int] | None:
    """The (issue id, subscriber id) of a Message-ID that `message_id` made with this key, else None."""
    local, _, domain = value.strip().strip("<>").lower().rpartition("@")
    issue, _, rest = local.partition(".")
    subscriber, _, mac = rest.partition(".")
    if domain != sender_domain(settings) or not (issue.isdigit() and subscriber.isdigit()) or len(issue) > 18:
        return None
    if len(subscriber) > 18 or not hmac.compare_digest(mac, _message_id_mac(settings, int(issue), int(subscriber))):
        return None
    return int(issue), int(subscriber)


def _message_id_mac(settings: Settings, issue_id: int, subscriber_id: int) -> str:
    mac = hmac.new(settings.secret_key.encode(), f"{issue_id}.{subscriber_id}".encode(), hashlib.sha256)
    return mac.hexdigest()[:MESSAGE_ID_MAC_HEX_CHARS]
