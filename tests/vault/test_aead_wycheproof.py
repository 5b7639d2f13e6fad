"""Wycheproof AES-GCM vectors (256-bit key, 96-bit IV, 128-bit tag) through our AEAD layer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault_service.crypto import aead_decrypt, aead_encrypt
from vault_service.errors import DecryptionError

VECTORS = Path(__file__).parent / "vectors" / "wycheproof_aes_gcm_256_96.json"
DOC: dict[str, Any] = json.loads(VECTORS.read_text(encoding="utf-8"))
CASES: list[dict[str, Any]] = [test for group in DOC["testGroups"] for test in group["tests"]]


def _hex(case: dict[str, Any], name: str) -> bytes:
    return bytes.fromhex(case[name])


def test_vendored_file_is_the_documented_subset() -> None:
    assert DOC["algorithm"] == "AES-GCM"
    assert DOC["schema"] == "aead_test_schema_v1.json"
    assert DOC["source"]["repository"] == "C2SP/wycheproof"
    assert DOC["source"]["path"] == "testvectors_v1/aes_gcm_test.json"
    assert len(DOC["source"]["commit"]) == 40
    assert DOC["numberOfTests"] == len(CASES) == 66
    for group in DOC["testGroups"]:
        assert (group["keySize"], group["ivSize"], group["tagSize"]) == (256, 96, 128)
    results = [case["result"] for case in CASES]
    assert results.count("valid") == 39
    assert results.count("invalid") == 27
    assert len({case["tcId"] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"tc{case['tcId']}")
def test_vector(case: dict[str, Any]) -> None:
    key, iv, aad = _hex(case, "key"), _hex(case, "iv"), _hex(case, "aad")
    sealed = _hex(case, "ct") + _hex(case, "tag")
    if case["result"] == "valid":
        assert aead_decrypt(key, iv, sealed, aad) == _hex(case, "msg")
        assert aead_encrypt(key, iv, _hex(case, "msg"), aad) == sealed
    else:
        with pytest.raises(DecryptionError):
            aead_decrypt(key, iv, sealed, aad)


def test_other_nonce_sizes_are_refused_before_aesgcm() -> None:
    """AESGCM itself accepts 8-128-byte nonces; our layer only ever uses 12."""
    key = bytes(range(32))
    for size in (8, 16, 64):
        nonce = bytes(size)
        sealed = AESGCM(key).encrypt(nonce, b"payload", b"")
        with pytest.raises(DecryptionError):
            aead_decrypt(key, nonce, sealed, b"")
        with pytest.raises(ValueError, match="12 bytes"):
            aead_encrypt(key, nonce, b"payload", b"")


def test_other_key_sizes_and_short_input_are_refused() -> None:
    nonce = bytes(12)
    short_key = bytes(16)
    sealed = AESGCM(short_key).encrypt(nonce, b"payload", b"")
    with pytest.raises(DecryptionError):
        aead_decrypt(short_key, nonce, sealed, b"")
    with pytest.raises(ValueError, match="32-byte"):
        aead_encrypt(short_key, nonce, b"payload", b"")
    for length in range(16):
        with pytest.raises(DecryptionError):
            aead_decrypt(bytes(32), nonce, bytes(length), b"")
