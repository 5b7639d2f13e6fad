"""KeyRing: round trip, record layout, tamper/truncation/AAD failures, passphrases and the KDF."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import logging
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.vault.conftest import (
    NEW_PASSPHRASE,
    OLD_PASSPHRASE,
    TEST_SALT,
    Keks,
    Rings,
)
from vault_service import crypto
from vault_service.crypto import KeyRing, split_previous_passphrases
from vault_service.errors import DecryptionError, VaultConfigError

UID = "user-7f3a9c"
PROVIDER = "openrouter"
API_KEY = "sk-or-v1-" + "5e1f0c2b9a8d7e6f" * 4

# The documented v1 layout, written out independently of the module's constants.
HEADER_REGIONS = {
    "version": (0, 1),
    "kek_id": (1, 9),
    "dek_nonce": (9, 21),
    "wrapped_dek": (21, 53),
    "dek_tag": (53, 69),
    "key_nonce": (69, 81),
}


def _regions(length: int) -> dict[str, tuple[int, int]]:
    return {**HEADER_REGIONS, "ciphertext": (81, length - 16), "tag": (length - 16, length)}


def test_round_trip(rings: Rings) -> None:
    blob = rings.old.seal(UID, PROVIDER, API_KEY)
    assert rings.old.open(UID, PROVIDER, blob) == API_KEY
    unicode_key = "clé-🔑-" + "x" * 40
    assert rings.old.open(UID, PROVIDER, rings.old.seal(UID, PROVIDER, unicode_key)) == unicode_key


def test_record_layout(rings: Rings) -> None:
    blob = rings.old.seal(UID, PROVIDER, API_KEY)
    assert len(blob) == 81 + len(API_KEY.encode()) + 16
    assert blob[0] == 1
    assert blob[1:9] == rings.old.current_kek_id
    assert API_KEY.encode() not in blob
    regions = _regions(len(blob))
    covered = sorted(regions.values())
    assert covered[0][0] == 0
    assert covered[-1][1] == len(blob)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(covered))


def _spec_aad(layer: bytes, kid: bytes, uid: str, provider: str) -> bytes:
    """The documented associated data, re-implemented here so format drift fails a test."""
    parts = (b"native1api/vault", b"\x01", layer, kid, uid.encode(), provider.encode())
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def test_independent_decoder_opens_sealed_records(keks: Keks, rings: Rings) -> None:
    blob = rings.old.seal(UID, PROVIDER, API_KEY)
    kid = blob[1:9]
    dek = AESGCM(keks.old).decrypt(blob[9:21], blob[21:69], _spec_aad(b"dek", kid, UID, PROVIDER))
    plaintext = AESGCM(dek).decrypt(
        blob[69:81], blob[81:], _spec_aad(b"api-key", kid, UID, PROVIDER)
    )
    assert plaintext == API_KEY.encode()


def test_records_built_to_the_spec_open(keks: Keks, rings: Rings) -> None:
    """Known answer: fixed DEK and nonces, sealed with raw AESGCM per the documented layout."""
    kid = hmac.new(keks.old, b"native1api/kek-id", hashlib.sha256).digest()[:8]
    dek, dek_nonce, key_nonce = bytes(range(32)), b"\x01" * 12, b"\x02" * 12
    wrapped = AESGCM(keks.old).encrypt(dek_nonce, dek, _spec_aad(b"dek", kid, UID, PROVIDER))
    sealed = AESGCM(dek).encrypt(
        key_nonce, API_KEY.encode(), _spec_aad(b"api-key", kid, UID, PROVIDER)
    )
    blob = b"\x01" + kid + dek_nonce + wrapped + key_nonce + sealed
    assert rings.old.open(UID, PROVIDER, blob) == API_KEY
    # The same record with the KEK id left out of the DEK layer's AAD must not open.
    unbound = AESGCM(keks.old).encrypt(dek_nonce, dek, _spec_aad(b"dek", b"", UID, PROVIDER))
    with pytest.raises(DecryptionError):
        rings.old.open(UID, PROVIDER, b"\x01" + kid + dek_nonce + unbound + key_nonce + sealed)


def test_two_seals_of_one_key_differ(rings: Rings) -> None:
    first = rings.old.seal(UID, PROVIDER, API_KEY)
    second = rings.old.seal(UID, PROVIDER, API_KEY)
    assert first != second
    for name in ("dek_nonce", "wrapped_dek", "key_nonce", "ciphertext"):
        start, end = _regions(len(first))[name]
        assert first[start:end] != second[start:end], name
    assert rings.old.open(UID, PROVIDER, first) == rings.old.open(UID, PROVIDER, second)


@pytest.mark.parametrize("region", [*HEADER_REGIONS, "ciphertext", "tag"])
def test_flipping_any_byte_of_any_region_fails(rings: Rings, region: str) -> None:
    blob = rings.old.seal(UID, PROVIDER, API_KEY)
    start, end = _regions(len(blob))[region]
    assert end > start
    for index in range(start, end):
        for mask in (0x01, 0x80, 0xFF):
            tampered = bytearray(blob)
            tampered[index] ^= mask
            with pytest.raises(DecryptionError):
                rings.old.open(UID, PROVIDER, bytes(tampered))


def test_truncated_or_extended_records_fail(rings: Rings) -> None:
    blob = rings.old.seal(UID, PROVIDER, API_KEY)
    for length in range(len(blob)):
        with pytest.raises(DecryptionError):
            rings.old.open(UID, PROVIDER, blob[:length])
    for suffix in (b"\x00", b"\x00" * 16, blob[-16:]):
        with pytest.raises(DecryptionError):
            rings.old.open(UID, PROVIDER, blob + suffix)


def test_not_bytes_fails_generically(rings: Rings) -> None:
    with pytest.raises(DecryptionError):
        rings.old.open(UID, PROVIDER, "not bytes")  # type: ignore[arg-type]


def test_blob_is_bound_to_its_user(rings: Rings) -> None:
    blob = rings.old.seal("alice", PROVIDER, API_KEY)
    for other in ("bob", "alice ", "Alice", "alic", "alice\x00"):
        with pytest.raises(DecryptionError):
            rings.old.open(other, PROVIDER, blob)


def test_blob_is_bound_to_its_provider(rings: Rings) -> None:
    blob = rings.old.seal(UID, "openrouter", API_KEY)
    with pytest.raises(DecryptionError):
        rings.old.open(UID, "together", blob)


def test_aad_components_are_unambiguous(rings: Rings) -> None:
    """Length prefixes: ("ab", "c") and ("a", "bc") must not share associated data."""
    blob = rings.old.seal("ab", "c", API_KEY)
    with pytest.raises(DecryptionError):
        rings.old.open("a", "bc", blob)


def test_kek_id_in_header_is_authenticated(keks: Keks) -> None:
    """Relabelling a record with another known KEK id fails (the id is in the AAD and picks the key)."""
    ring = KeyRing.from_keks(keks.old, [keks.new])
    blob = ring.seal(UID, PROVIDER, API_KEY)
    other_id = crypto.kek_id(keks.new)
    relabelled = blob[:1] + other_id + blob[9:]
    with pytest.raises(DecryptionError):
        ring.open(UID, PROVIDER, relabelled)


def test_spliced_records_fail(rings: Rings) -> None:
    """The DEK of one record cannot open the key part of another, even for the same user."""
    first = rings.old.seal(UID, PROVIDER, API_KEY)
    second = rings.old.seal(UID, PROVIDER, API_KEY)
    for spliced in (first[:69] + second[69:], second[:69] + first[69:]):
        with pytest.raises(DecryptionError):
            rings.old.open(UID, PROVIDER, spliced)


def test_unknown_version_and_unknown_kek_fail(rings: Rings) -> None:
    blob = rings.old.seal(UID, PROVIDER, API_KEY)
    for version in (0, 2, 255):
        with pytest.raises(DecryptionError):
            rings.old.open(UID, PROVIDER, bytes([version]) + blob[1:])
    with pytest.raises(DecryptionError):
        rings.other.open(UID, PROVIDER, blob)
    with pytest.raises(DecryptionError):
        rings.new_only.open(UID, PROVIDER, blob)


def test_failures_are_one_generic_error_without_key_material(
    rings: Rings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    blob = rings.old.seal(UID, PROVIDER, API_KEY)
    attempts: list[Callable[[], str]] = [
        lambda: rings.old.open("someone-else", PROVIDER, blob),
        lambda: rings.old.open(UID, "together", blob),
        lambda: rings.old.open(UID, PROVIDER, blob[:-1]),
        lambda: rings.old.open(UID, PROVIDER, bytes([9]) + blob[1:]),
        lambda: rings.other.open(UID, PROVIDER, blob),
        lambda: rings.old.open(UID, PROVIDER, blob[:-1] + bytes([blob[-1] ^ 1])),
    ]
    for attempt in attempts:
        with pytest.raises(DecryptionError) as caught:
            attempt()
        error = caught.value
        assert type(error) is DecryptionError
        assert str(error) == DecryptionError.MESSAGE
        assert error.args == (DecryptionError.MESSAGE,)
        # Raised "from None": no InvalidTag/ValueError chained into tracebacks.
        assert error.__cause__ is None
        assert error.__context__ is None or error.__suppress_context__
    text = caplog.text
    assert API_KEY not in text
    assert blob.hex() not in text
    assert UID not in text


def test_needs_rewrap(rings: Rings) -> None:
    old_blob = rings.old.seal(UID, PROVIDER, API_KEY)
    new_blob = rings.rotated.seal(UID, PROVIDER, API_KEY)
    assert not rings.old.needs_rewrap(old_blob)
    assert rings.rotated.needs_rewrap(old_blob)
    assert not rings.rotated.needs_rewrap(new_blob)
    with pytest.raises(DecryptionError):
        rings.rotated.needs_rewrap(old_blob[:10])


def test_rotation_reads_old_writes_new(rings: Rings) -> None:
    old_blob = rings.old.seal(UID, PROVIDER, API_KEY)
    assert rings.rotated.open(UID, PROVIDER, old_blob) == API_KEY
    resealed = rings.rotated.reseal(UID, PROVIDER, old_blob)
    assert resealed[1:9] == rings.rotated.current_kek_id == rings.new_only.current_kek_id
    assert rings.new_only.open(UID, PROVIDER, resealed) == API_KEY
    with pytest.raises(DecryptionError):
        rings.old.open(UID, PROVIDER, resealed)
    assert rings.rotated.kek_ids == (rings.new_only.current_kek_id, rings.old.current_kek_id)


def test_seal_validates_inputs_without_echoing_them(rings: Rings) -> None:
    with pytest.raises(ValueError, match="api_key"):
        rings.old.seal(UID, PROVIDER, "")
    with pytest.raises(ValueError, match="api_key must be valid UTF-8") as caught:
        rings.old.seal(UID, PROVIDER, "sk-secret\ud800tail")
    assert "sk-secret" not in str(caught.value)
    with pytest.raises(ValueError, match="longer than"):
        rings.old.seal(UID, PROVIDER, "k" * (crypto.MAX_API_KEY_BYTES + 1))
    with pytest.raises(ValueError, match="uid"):
        rings.old.seal("", PROVIDER, API_KEY)
    with pytest.raises(ValueError, match="provider"):
        rings.old.seal(UID, "", API_KEY)


def test_repr_shows_ids_not_keys(keks: Keks, rings: Rings) -> None:
    text = repr(rings.rotated)
    assert keks.new.hex() not in text
    assert keks.old.hex() not in text
    assert rings.rotated.current_kek_id.hex() in text


def test_short_passphrases_are_rejected_naming_the_variable() -> None:
    short = "too-short-passphrase-0123456789"  # 31 characters
    assert len(short) == crypto.MIN_PASSPHRASE_CHARS - 1
    with pytest.raises(VaultConfigError, match="VAULT_MASTER_KEY") as config_error:
        KeyRing(short, (), TEST_SALT)
    assert short not in str(config_error.value)
    assert isinstance(config_error.value, ValueError)
    with pytest.raises(ValueError, match="VAULT_MASTER_KEY"):
        KeyRing("", (), TEST_SALT)
    with pytest.raises(ValueError, match="VAULT_PREVIOUS_MASTER_KEYS") as caught:
        KeyRing(NEW_PASSPHRASE, [short], TEST_SALT)
    assert short not in str(caught.value)
    with pytest.raises(ValueError, match="salt"):
        KeyRing(NEW_PASSPHRASE, (), b"\x00" * 15)
    with pytest.raises(TypeError):
        KeyRing(NEW_PASSPHRASE, OLD_PASSPHRASE, TEST_SALT)


def test_split_previous_passphrases() -> None:
    assert split_previous_passphrases("") == ()
    assert split_previous_passphrases(" a , ,b,") == ("a", "b")


def test_kdf_parameters_and_independent_derivation(keks: Keks) -> None:
    """PBKDF2-HMAC-SHA256 with >= 600,000 iterations, checked against hashlib directly."""
    assert crypto.PBKDF2_ITERATIONS >= 600_000
    assert crypto.SALT_LEN == 16
    assert crypto.KDF_ALGORITHM == "pbkdf2-hmac-sha256"

    expected_new = hashlib.pbkdf2_hmac("sha256", NEW_PASSPHRASE.encode(), TEST_SALT, 600_000, 32)
    expected_old = hashlib.pbkdf2_hmac("sha256", OLD_PASSPHRASE.encode(), TEST_SALT, 600_000, 32)
    assert keks.new == expected_new
    assert keks.old == expected_old

    def expected_id(kek: bytes) -> bytes:
        return hmac.new(kek, b"native1api/kek-id", hashlib.sha256).digest()[:8]

    # The production path: the constructor derives from passphrases (PBKDF2 twice, ~0.3 s).
    ring = KeyRing(NEW_PASSPHRASE, [OLD_PASSPHRASE, NEW_PASSPHRASE], TEST_SALT)
    assert ring.current_kek_id == expected_id(expected_new)
    assert ring.kek_ids == (expected_id(expected_new), expected_id(expected_old))
