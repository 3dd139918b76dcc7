"""DKIM signatures (RFC 6376) on outgoing messages, covering the unsubscribe headers (RFC 8058 4)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import dkim
import dkim.crypto
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

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
# composing a signed message. OpenSSL (through `cryptography`) makes the same signature in a fraction of
# that; dkimpy keeps doing the rest (canonicalization, the header). Verification is left as it is.
_python_rsa_sign = dkim.crypto.RSASSA_PKCS1_v1_5_sign
dkim.RSASSA_PKCS1_v1_5_sign = _openssl_rsa_sign


class DkimSigner:
    """Signs messages with one private key for one selector and domain."""

    def __init__(self, selector: str, domain: str, private_key: bytes) -> None:
        self._selector = selector.encode("ascii")
        self._domain = domain.encode("ascii")
        self._key = private_key

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

    def sign(self, message: bytes) -> bytes:
        """The message with a DKIM-Signature header in front.

        Raises:
            ConfigError: the private key cannot sign.
        """
        try:
            signature = dkim.sign(
                message,
                self._selector,
                self._domain,
                self._key,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=list(SIGNED_HEADERS),
            )
        except (dkim.DKIMException, ValueError) as error:
            raise ConfigError(f"DKIM signing failed: {error}") from None
        if isinstance(message, WireReady) and is_transparent(signature):  # its folded lines start with a space
            return WireReady(signature + message)
        return bytes(signature) + message
