"""The whole stack accepts ID tokens issued by the real Firebase Auth Emulator (SPEC §4, §8)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from fakes.content import reply_text
from tests.integration.conftest import EMULATOR_PROJECT_ID, AuthEmulator
from tests.integration.test_firebase_emulator import API_KEY, sign_in, sign_up
from tests.support.e2e import MODEL, OR_KEY, running_processes

pytestmark = [pytest.mark.emulator, pytest.mark.e2e]


async def test_real_emulator_token_gets_a_completion(
    tmp_path: Path, firebase_auth_emulator: AuthEmulator
) -> None:
    async with httpx.AsyncClient(base_url=firebase_auth_emulator.base_url, timeout=30) as emulator:
        account = await sign_up(emulator)
    with running_processes(tmp_path, emulator_host=firebase_auth_emulator.host_port) as stack:
        headers = {"Authorization": f"Bearer {account.id_token.reveal()}"}
        body = {"model": MODEL, "messages": [{"role": "user", "content": "from the emulator"}]}
        async with httpx.AsyncClient(timeout=30) as client:
            reply = await client.post(
                f"{stack.bridge_url}/v1/chat/completions", json=body, headers=headers
            )
            assert reply.status_code == 200, reply.text
            message = reply.json()["choices"][0]["message"]
            assert message["content"] == reply_text("from the emulator")
            saved = await client.post(
                f"{stack.bridge_url}/v1/vault", json={"apiKey": OR_KEY}, headers=headers
            )
            assert saved.json() == {"exists": True, "provider": "openrouter"}
    # The key is stored under the emulator user's localId: the token's `sub` is the caller.
    with sqlite3.connect(tmp_path / "vault.db") as db:
        assert [uid for (uid,) in db.execute("SELECT uid FROM vault_keys")] == [account.local_id]


async def _set_custom_claims(emulator: httpx.AsyncClient, local_id: str, claims: str) -> None:
    """What the Admin SDK's setCustomUserClaims does, against the emulator's admin API."""
    response = await emulator.post(
        f"/identitytoolkit.googleapis.com/v1/projects/{EMULATOR_PROJECT_ID}/accounts:update",
        json={"localId": local_id, "customAttributes": claims},
        headers={"Authorization": "Bearer owner"},  # the emulator's admin credential
    )
    assert response.status_code == 200, response.status_code


async def _sign_up_anonymously(emulator: httpx.AsyncClient) -> str:
    response = await emulator.post(
        "/identitytoolkit.googleapis.com/v1/accounts:signUp",
        params={"key": API_KEY},
        json={"returnSecureToken": True},
    )
    assert response.status_code == 200, response.status_code
    token: str = response.json()["idToken"]
    return token


async def test_the_tier_comes_from_emulator_tokens(
    tmp_path: Path, firebase_auth_emulator: AuthEmulator
) -> None:
    """A custom claim set the Admin SDK way selects its tier, an anonymous sign-in gets the
    anonymous tier, anyone else the default (SPEC §10), with real emulator tokens."""
    limits = tmp_path / "limits.toml"
    limits.write_text(
        "[tiers.default]\nrequests_per_minute = 11\n"
        "[tiers.anonymous]\nrequests_per_minute = 2\n"
        "[tiers.pro]\nrequests_per_minute = 99\n",
        encoding="utf-8",
    )
    async with httpx.AsyncClient(base_url=firebase_auth_emulator.base_url, timeout=30) as emulator:
        plain = await sign_up(emulator)
        paying = await sign_up(emulator)
        await _set_custom_claims(emulator, paying.local_id, '{"tier": "pro"}')
        _, pro_token = await sign_in(emulator, paying)  # a new token carries the claim
        anonymous_token = await _sign_up_anonymously(emulator)
    with running_processes(
        tmp_path,
        emulator_host=firebase_auth_emulator.host_port,
        extra_env={"LIMITS_FILE": str(limits)},
    ) as stack:
        async with httpx.AsyncClient(timeout=30) as client:
            tiers = {}
            for name, token in (
                ("plain", plain.id_token.reveal()),
                ("pro", pro_token.reveal()),
                ("anonymous", anonymous_token),
            ):
                response = await client.get(
                    f"{stack.bridge_url}/v1/usage", headers={"Authorization": f"Bearer {token}"}
                )
                assert response.status_code == 200, response.text
                report = response.json()
                tiers[name] = (report["tier"], report["limits"]["requests_per_minute"])
    assert tiers == {"plain": ("default", 11), "pro": ("pro", 99), "anonymous": ("anonymous", 2)}
