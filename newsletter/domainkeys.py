"""DKIM signatures (RFC 6376) on outgoing messages, covering the unsubscribe headers (RFC 8058 4)."""

from __future__ import annotations

import base64
import re
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import dkim
import dkim.crypto
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import CanonicalizationPolicy, correct_empty_body, strip_trailing_lines

from newsletter.errors import ConfigError
from newsletter.settings import Settings
from newsletter.smtp import WireReady, is_transparent

# RFC 8058 4: the signature must cover List-Unsubscribe and List-Unsubscribe-Post, or receivers
# ignore one-click. From is required by RFC 6376 5.4; the rest keep the visible message intact.
SIGNED_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"reply-to",
    b"list-id",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"mime-version",
    b"content-type",
)
ALGORITHM = b"rsa-sha256"
# RFC 6376 3.4.2 and 3.4.4: relaxed headers survive refolding by relays, a relaxed body re-spacing.
CANONICALIZATION = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
# Up to this many spaces a body is searched space by space (memchr) for one that relaxed canonicalization
# would remove; past it, a two-byte search costs less than the loop. A base64 body has a handful.
FEW_SPACES = 64
_SPACES_RE = re.compile(rb" +")


_RSA_FIELDS = ("prime1", "prime2", "privateExponent", "exponent1", "exponent2", "coefficient")


@lru_cache(maxsize=8)
def _openssl_key(modulus: int, public_exponent: int, private: tuple[int, ...]) -> rsa.RSAPrivateKey:
    p, q, d, dmp1, dmq1, iqmp = private
    public = rsa.RSAPublicNumbers(public_exponent, modulus)
    return rsa.RSAPrivateNumbers(p, q, d, dmp1, dmq1, iqmp, public).private_key()


def _openssl_rsa_sign(digest: Any, private_key: dict[str, int]) -> bytes:
    """dkimpy's RSASSA-PKCS1-v1_5 signature of a digest (RFC 8017 8.2.1), computed by OpenSSL."""
    value = digest.digest()
    if len(value) != hashes.SHA256.digest_size:  # rsa-sha1, which we never sign with: dkimpy's own way
        return bytes(_python_rsa_sign(digest, private_key))
    key = _openssl_key(
        private_key["modulus"], private_key["publicExponent"], tuple(private_key[name] for name in _RSA_FIELDS)
    )
    return key.sign(value, padding.PKCS1v15(), Prehashed(hashes.SHA256()))


# dkimpy computes the RSA signature with Python's pow: about 8 ms a message for a 2048-bit key, 97% of
# composing a signed message. OpenSSL (through `cryptography`) makes the same signature in 0.3 ms; dkimpy
# keeps doing the header (its canonicalization, folding and hash; see DkimSigner._signature). Verification
# is left as it is.
_python_rsa_sign = dkim.crypto.RSASSA_PKCS1_v1_5_sign
dkim.RSASSA_PKCS1_v1_5_sign = _openssl_rsa_sign


def relaxed_body(body: bytes) -> bytes:
    """The body's relaxed canonical form (RFC 6376 3.4.4), byte for byte dkimpy's, in C-speed passes.

    dkimpy strips the tabs and spaces before each CRLF, then turns every run of them into one space,
    with two regular expressions: 1.3 ms over a 77 kB body. Turning each tab into a space, each run of
    spaces into one, then dropping a space before CRLF gives the same bytes; a body with no tab, no two
    spaces in a row and no space before CRLF (base64 has no spaces but its part headers' few) is left as
    it is. dkimpy's own functions apply the rules for trailing empty lines and the empty body.
    """
    if b"\t" in body:
        body = body.replace(b"\t", b" ")
    if _may_hold_loose_space(body):
        body = _single_spaced(body).replace(b" \r\n", b"\r\n")
    canonical: bytes = correct_empty_body(strip_trailing_lines(body))
    return canonical


def _may_hold_loose_space(body: bytes) -> bool:
    """False when no space of `body` is followed by a space or a CRLF; True when one is, or past FEW_SPACES."""
    at = body.find(b" ")
    for _ in range(FEW_SPACES):
        if at < 0:
            return False
        if body.startswith((b"  ", b" \r\n"), at):
            return True
        at = body.find(b" ", at + 1)
    return at >= 0


def _single_spaced(body: bytes) -> bytes:
    """`body` with each run of spaces made one space: one search for the runs, not a pass per halving."""
    pieces = []
    start = 0
    at = body.find(b"  ")
    while at >= 0:
        pieces.append(body[start : at + 1])
        start = _SPACES_RE.match(body, at).end()  # type: ignore[union-attr]  # at holds two spaces
        at = body.find(b"  ", start)
    pieces.append(body[start:])
    return b"".join(pieces)


def _header_fields_and_body(message: bytes) -> tuple[list[list[bytes]], bytes]:
    """What dkimpy's rfc822_parse makes of `message`: its header fields as (name, value) and its body.

    rfc822_parse splits the whole message at every line end with a regular expression (0.7 ms for 77 kB)
    to join the body's lines again with CRLF. WireReady bytes have CRLF line ends already: only their
    header block, up to the first empty line, is parsed; the body is the rest, as it is.
    """
    if isinstance(message, WireReady) and not message.startswith(b"\r\n"):
        end = message.find(b"\r\n\r\n")
        if end >= 0:
            fields, _ = dkim.rfc822_parse(message[: end + 2])
            return fields, message[end + 4 :]
    fields, body = dkim.rfc822_parse(message)
    return fields, body


class DkimSigner:
    """Signs messages with one private key for one selector and domain."""

    def __init__(self, selector: str, domain: str, private_key: bytes) -> None:
        """A signer with `private_key` (PEM), parsed here once rather than for every message as dkim.sign does.

        Raises:
            ConfigError: the key is not a PEM RSA private key.
        """
        self._selector = selector.encode("ascii")
        self._domain = domain.encode("ascii")
        try:
            self._key = dkim.crypto.parse_pem_private_key(private_key)
        except (dkim.crypto.UnparsableKeyError, ValueError) as error:
            raise ConfigError(f"the DKIM key is not a PEM RSA private key: {error}") from None

    @classmethod
    def from_settings(cls, settings: Settings) -> DkimSigner | None:
        """The signer the settings describe, or None when no DKIM key is configured.

        Raises:
            ConfigError: a key path is set but the selector or domain is missing, or the key is unreadable.
        """
        if not settings.dkim_private_key_path:
            return None
        if not settings.dkim_selector:
            raise ConfigError("setting 'dkim_selector' is required when dkim_private_key_path is set")
        domain = settings.dkim_domain or settings.from_address.rpartition("@")[2]
        try:
            key = Path(settings.dkim_private_key_path).read_bytes()
        except OSError as error:
            raise ConfigError(f"cannot read the DKIM key {settings.dkim_private_key_path}: {error.strerror}") from None
        signer = cls(settings.dkim_selector, domain, key)
        # A key that cannot sign fails here, once, not on every message.
        signer.sign(b"From: check@" + domain.encode() + b"\r\n\r\nkey check\r\n")
        return signer

    def sign(self, message: bytes, now: int | None = None) -> bytes:
        """The message with a DKIM-Signature header in front, made at `now` (t=; default: this second).

        Raises:
            ConfigError: the private key cannot sign.
        """
        try:
            signature = self._signature(message, int(time.time()) if now is None else now)
        except (dkim.DKIMException, ValueError) as error:
            raise ConfigError(f"DKIM signing failed: {error}") from None
        if isinstance(message, WireReady) and is_transparent(signature):  # its folded lines start with a space
            return WireReady(signature + message)
        return signature + message

    def _signature(self, message: bytes, now: int) -> bytes:
        """What dkim.sign(message, ..., canonicalize=(relaxed, relaxed), include_headers=SIGNED_HEADERS) returns."""
        # dkim.DKIM.sign of dkimpy 1.1.8 (pinned in constraints.txt) with our arguments: its tags in its
        # order, then its gen_header, which folds them, hashes the header fields and signs (with
        # RSASSA_PKCS1_v1_5_sign, OpenSSL's above). Ours are the parts that cost most: the key parsed once
        # (0.16 ms a message), the body not split into lines and joined again (0.7 ms), the body's
        # canonicalization (1.3 ms). A signature of the 77 kB sample went from 2.6 to 0.5 ms of CPU, 0.3 of it
        # RSA. tests/test_domainkeys.py holds the result to dkim.sign's, byte for byte.
        fields, body = _header_fields_and_body(message)
        hasher = dkim.crypto.HASH_ALGORITHMS[ALGORITHM]
        tags = [
            (b"v", b"1"),
            (b"a", ALGORITHM),
            (b"c", CANONICALIZATION.to_c_value()),
            (b"d", self._domain),
            (b"i", b"@" + self._domain),
            (b"q", b"dns/txt"),
            (b"s", self._selector),
            (b"t", str(now).encode("ascii")),
            (b"h", b" : ".join(SIGNED_HEADERS)),
            (b"bh", base64.b64encode(hasher(relaxed_body(body)).digest())),
            (b"b", b"0" * 60),  # dkimpy's placeholder, so that b= is folded onto a line of its own
        ]
        signing = dkim.DKIM(signature_algorithm=ALGORITHM)
        signing.headers = fields
        signing.hasher = hasher
        header = signing.gen_header(tags, SIGNED_HEADERS, CANONICALIZATION, b"DKIM-Signature", self._key)
        return b"DKIM-Signature: " + bytes(header)
