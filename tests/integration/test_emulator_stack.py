"""The whole stack accepts ID tokens issued by the real Firebase Auth Emulator (SPEC §4, §8)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from fakes.content import reply_text
from tests.integration.conftest import AuthEmulator
from tests.integration.test_firebase_emulator import sign_up
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
