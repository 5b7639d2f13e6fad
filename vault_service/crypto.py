"""Envelope encryption of stored provider keys: passphrase → KEK (PBKDF2), random DEK per key, AES-256-GCM.

Record format, version 1 (every field has a fixed size except the last):

    offset  size    field
    0       1       format version, 0x01
    1       8       KEK id = HMAC-SHA256(kek, b"native1api/kek-id")[:8]
    9       12      DEK nonce (os.urandom)
    21      48      the 32-byte DEK sealed under the KEK: ciphertext (32) ‖ tag (16)
    69      12      key nonce (os.urandom)
    81      n + 16  the API key (UTF-8, n >= 1) sealed under the DEK: ciphertext (n) ‖ tag (16)

Both AES-GCM layers authenticate associated data built by `_associated_data`: the length-prefixed
tuple (domain, format version, layer label, KEK id, uid, provider). So a row copied to another user,
relabelled with another provider, given another KEK id in its header, or spliced from two records
fails to open. Every failure raises the one `DecryptionError`.

The KEK is derived once per process (PBKDF2 is slow on purpose); `KeyRing` then seals and opens in
microseconds. Python cannot reliably wipe memory (pyca/cryptography "limitations"), so plaintext
keys are simply kept short-lived and never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from vault_service.errors import DecryptionError, VaultConfigError

_LOGGER = logging.getLogger(__name__)

# AES-256-GCM with 96-bit nonces and full 128-bit tags, the only parameters this format uses.
KEY_LEN: Final = 32
NONCE_LEN: Final = 12
TAG_LEN: Final = 16

# PBKDF2-HMAC-SHA256 work factor: OWASP's (and ASVS 5.0 appendix C's) floor for SHA-256.
KDF_ALGORITHM: Final = "pbkdf2-hmac-sha256"
PBKDF2_ITERATIONS: Final = 600_000
SALT_LEN: Final = 16
MIN_PASSPHRASE_CHARS: Final = 32

FORMAT_VERSION: Final = 1
KEK_ID_LEN: Final = 8
KEK_ID_LABEL: Final = b"native1api/kek-id"
# Far above any real provider key; bounds what `open` will feed to AES-GCM from storage.
MAX_API_KEY_BYTES: Final = 16 * 1024

_WRAPPED_DEK_LEN: Final = KEY_LEN + TAG_LEN
HEADER_LEN: Final = 1 + KEK_ID_LEN + NONCE_LEN + _WRAPPED_DEK_LEN + NONCE_LEN
MIN_RECORD_LEN: Final = HEADER_LEN + 1 + TAG_LEN
MAX_RECORD_LEN: Final = HEADER_LEN + MAX_API_KEY_BYTES + TAG_LEN
MAX_FIELD_BYTES: Final = 1024

_AAD_DOMAIN: Final = b"native1api/vault"
_LAYER_DEK: Final = b"dek"
_LAYER_KEY: Final = b"api-key"


# --- AEAD: a thin layer over AESGCM, so the Wycheproof vectors exercise exactly this path ---------


def aead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM encrypt; returns ciphertext ‖ 16-byte tag.

    The caller guarantees `nonce` never repeats under `key` (`KeyRing` always uses `os.urandom`).
    Wrong sizes are programming errors here, so they raise `ValueError`.
    """
    if len(key) != KEY_LEN:
        raise ValueError("AES-256-GCM needs a 32-byte key")
    if len(nonce) != NONCE_LEN:
        raise ValueError("AES-GCM nonces must be 12 bytes")
    return AESGCM(key).encrypt(nonce, plaintext, aad)


def aead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM decrypt `ciphertext ‖ tag`; any failure is `DecryptionError`."""
    # Check sizes before AESGCM: it accepts 8-128-byte nonces and shorter keys, which this format
    # never produces, and its ValueErrors must not escape as a second kind of failure.
    if len(key) != KEY_LEN or len(nonce) != NONCE_LEN or len(ciphertext) < TAG_LEN:
        raise DecryptionError()
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad)
    except (InvalidTag, ValueError, OverflowError):
        raise DecryptionError() from None


# --- Key derivation ---------------------------------------------------------------------------------


def derive_kek(passphrase: str, salt: bytes) -> bytes:
    """Stretch a passphrase into a 256-bit KEK: PBKDF2-HMAC-SHA256, `PBKDF2_ITERATIONS` rounds.

    Takes a noticeable fraction of a second by design; call it at start-up only.
    """
    if len(salt) != SALT_LEN:
        raise ValueError(f"the KDF salt must be {SALT_LEN} bytes")
    try:
        secret = passphrase.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("the passphrase is not valid UTF-8 text") from None
    kdf = PBKDF2HMAC(
        algorithm=hashes.SHA256(), length=KEY_LEN, salt=salt, iterations=PBKDF2_ITERATIONS
    )
    return kdf.derive(secret)


def kek_id(kek: bytes) -> bytes:
    """The 8-byte public id of a KEK, stored in each record so `open` picks the right KEK directly."""
    return hmac.new(kek, KEK_ID_LABEL, hashlib.sha256).digest()[:KEK_ID_LEN]


def split_previous_passphrases(raw: str) -> tuple[str, ...]:
    """Parse `VAULT_PREVIOUS_MASTER_KEYS`: comma-separated, surrounding blanks and empties dropped.

    A passphrase therefore cannot contain a comma or start/end with whitespace.
    """
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _check_passphrase(passphrase: str, variable: str) -> None:
    # Messages name the variable and the rule, never the value.
    if not isinstance(passphrase, str) or not passphrase:
        raise VaultConfigError(f"{variable} is required")
    if len(passphrase) < MIN_PASSPHRASE_CHARS:
        raise VaultConfigError(
            f"{variable} must be at least {MIN_PASSPHRASE_CHARS} characters long"
        )
    try:
        passphrase.encode("utf-8")
    except UnicodeEncodeError:
        raise VaultConfigError(f"{variable} must be valid UTF-8 text") from None


# --- Record format ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Record:
    kek_id: bytes
    dek_nonce: bytes
    wrapped_dek: bytes
    key_nonce: bytes
    sealed_key: bytes


def _reject(reason: str) -> DecryptionError:
    # At most one generic debug line: a coarse reason, never the blob, the uid or any key.
    _LOGGER.debug("vault record rejected: %s", reason)
    return DecryptionError()


def _parse(blob: bytes) -> _Record:
    """Split a record strictly by the fixed layout; anything off is `DecryptionError`."""
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise _reject("not bytes")
    data = bytes(blob)
    if not MIN_RECORD_LEN <= len(data) <= MAX_RECORD_LEN:
        raise _reject("bad length")
    if data[0] != FORMAT_VERSION:
        raise _reject("unknown format version")
    pos = 1
    fields: list[bytes] = []
    for size in (KEK_ID_LEN, NONCE_LEN, _WRAPPED_DEK_LEN, NONCE_LEN):
        fields.append(data[pos : pos + size])
        pos += size
    return _Record(fields[0], fields[1], fields[2], fields[3], data[pos:])


def _encode_field(value: str, name: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{name} must be valid UTF-8 text") from None
    if len(encoded) > MAX_FIELD_BYTES:
        raise ValueError(f"{name} is too long")
    return encoded


def _associated_data(layer: bytes, kid: bytes, uid: bytes, provider: bytes) -> bytes:
    # Each component is length-prefixed, so ("ab", "c") and ("a", "bc") give different AAD.
    parts = (_AAD_DOMAIN, bytes([FORMAT_VERSION]), layer, kid, uid, provider)
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


# --- The key ring -----------------------------------------------------------------------------------


class KeyRing:
    """The current KEK (seals) plus previous ones (open only), keyed by KEK id.

    Built once at start-up: `KeyRing(current_passphrase, previous_passphrases, salt)` runs PBKDF2
    for each distinct passphrase. Sealing and opening never derive anything.
    """

    __slots__ = ("_current_id", "_keks")

    _current_id: bytes
    _keks: dict[bytes, bytes]

    def __init__(
        self, current_passphrase: str, previous_passphrases: Sequence[str], salt: bytes
    ) -> None:
        # Validate everything before the first (slow) derivation, so bad config fails fast.
        _check_passphrase(current_passphrase, "VAULT_MASTER_KEY")
        if isinstance(previous_passphrases, str):
            raise TypeError("previous_passphrases must be a sequence of strings, not one string")
        for passphrase in previous_passphrases:
            _check_passphrase(passphrase, "VAULT_PREVIOUS_MASTER_KEYS")
        if not isinstance(salt, bytes) or len(salt) != SALT_LEN:
            raise ValueError(f"the KDF salt must be {SALT_LEN} bytes")
        distinct = [current_passphrase]
        for passphrase in previous_passphrases:
            if passphrase not in distinct:
                distinct.append(passphrase)
        self._install([derive_kek(passphrase, salt) for passphrase in distinct])

    @classmethod
    def from_keks(cls, current: bytes, previous: Sequence[bytes] = ()) -> KeyRing:
        """Build from already-derived 32-byte KEKs (tests and tools; the service uses passphrases)."""
        ring = cls.__new__(cls)
        ring._install([current, *previous])
        return ring

    def _install(self, keks: Sequence[bytes]) -> None:
        table: dict[bytes, bytes] = {}
        for kek in keks:
            if not isinstance(kek, bytes) or len(kek) != KEY_LEN:
                raise ValueError(f"a KEK must be {KEY_LEN} bytes")
            kid = kek_id(kek)
            known = table.get(kid)
            if known is None:
                table[kid] = kek
            elif not hmac.compare_digest(known, kek):
                # 2^-64 odds; refusing beats silently shadowing a key.
                raise ValueError("two different master keys have the same KEK id")
        self._current_id = kek_id(keks[0])
        self._keks = table

    @property
    def current_kek_id(self) -> bytes:
        """Id of the KEK that `seal` uses."""
        return self._current_id

    @property
    def kek_ids(self) -> tuple[bytes, ...]:
        """Ids of every KEK this ring can open, the current one first."""
        return (self._current_id, *(kid for kid in self._keks if kid != self._current_id))

    def __repr__(self) -> str:
        # Ids only: they are public (stored in every record); the KEKs never appear.
        return f"KeyRing(current={self._current_id.hex()}, keks={len(self._keks)})"

    def seal(self, uid: str, provider: str, api_key: str) -> bytes:
        """Encrypt `api_key` for (`uid`, `provider`) under a fresh DEK and the current KEK."""
        uid_bytes = _encode_field(uid, "uid")
        provider_bytes = _encode_field(provider, "provider")
        if not isinstance(api_key, str) or not api_key:
            raise ValueError("api_key must be a non-empty string")
        try:
            plaintext = api_key.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("api_key must be valid UTF-8 text") from None
        if len(plaintext) > MAX_API_KEY_BYTES:
            raise ValueError(f"api_key is longer than {MAX_API_KEY_BYTES} bytes")
        kid = self._current_id
        dek = os.urandom(KEY_LEN)
        dek_nonce = os.urandom(NONCE_LEN)
        key_nonce = os.urandom(NONCE_LEN)
        wrapped_dek = aead_encrypt(
            self._keks[kid],
            dek_nonce,
            dek,
            _associated_data(_LAYER_DEK, kid, uid_bytes, provider_bytes),
        )
        sealed_key = aead_encrypt(
            dek,
            key_nonce,
            plaintext,
            _associated_data(_LAYER_KEY, kid, uid_bytes, provider_bytes),
        )
        return b"".join(
            (bytes([FORMAT_VERSION]), kid, dek_nonce, wrapped_dek, key_nonce, sealed_key)
        )

    def open(self, uid: str, provider: str, blob: bytes) -> str:
        """Decrypt a record sealed for (`uid`, `provider`); any failure is `DecryptionError`."""
        uid_bytes = _encode_field(uid, "uid")
        provider_bytes = _encode_field(provider, "provider")
        record = _parse(blob)
        kek = self._keks.get(record.kek_id)
        if kek is None:
            raise _reject("unknown KEK id")
        try:
            dek = aead_decrypt(
                kek,
                record.dek_nonce,
                record.wrapped_dek,
                _associated_data(_LAYER_DEK, record.kek_id, uid_bytes, provider_bytes),
            )
            plaintext = aead_decrypt(
                dek,
                record.key_nonce,
                record.sealed_key,
                _associated_data(_LAYER_KEY, record.kek_id, uid_bytes, provider_bytes),
            )
        except DecryptionError:
            raise _reject("authentication failed") from None
        try:
            return plaintext.decode("utf-8")
        except UnicodeDecodeError:
            raise _reject("plaintext is not UTF-8") from None

    def needs_rewrap(self, blob: bytes) -> bool:
        """True when a well-formed record was sealed under a KEK other than the current one.

        Reads the header only (no decryption); a malformed record raises `DecryptionError`.
        """
        return _parse(blob).kek_id != self._current_id

    def reseal(self, uid: str, provider: str, blob: bytes) -> bytes:
        """Open a record and seal its key again under the current KEK with a fresh DEK.

        Used by rewrap, so the plaintext never leaves this module.
        """
        return self.seal(uid, provider, self.open(uid, provider, blob))
