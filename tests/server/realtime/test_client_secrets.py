"""Short-lived client secrets for browsers: minted with a real key through the official `openai` client, taken by
`/v1/realtime` (with the session settings they carry) on any server holding that key, refused once expired,
tampered with, or minted elsewhere."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import openai
import pytest

from fishvoice.errors import FishvoiceError
from fishvoice.server.http.auth import secret_signer
from fishvoice.server.realtime.client_secrets import SecretRequest, mint, redeem
from tests.realtime_client import WAIT_S
from tests.servers import server

KEY = "client-secret-test-key"


def test_a_secret_grants_its_namespace_and_settings_until_it_expires():
    asked = SecretRequest.model_validate({"expires_after": {"seconds": 60}, "session": {"instructions": "Be brief."}})
    minted = mint(KEY, asked, now=1000.0)
    assert minted["expires_at"] == 1060 and minted["value"].startswith("ek_")
    assert minted["session"]["instructions"] == "Be brief."
    namespace, settings = redeem(minted["value"], [secret_signer("other"), secret_signer(KEY)], now=1059.0)
    assert namespace.startswith("key:") and settings is not None and settings.instructions == "Be brief."
    refusals = [
        (minted["value"], [secret_signer(KEY)], 1060.0, "expired"),
        (minted["value"], [secret_signer("another server's key")], 1000.0, "not valid"),
        (minted["value"][:-2] + "AA", [secret_signer(KEY)], 1000.0, "not valid"),
        ("ek_garbage", [secret_signer(KEY)], 1000.0, "not valid"),
    ]
    for secret, signers, now, says in refusals:
        with pytest.raises(FishvoiceError) as caught:
            redeem(secret, signers, now=now)
        assert caught.value.code == "unauthorized" and says in caught.value.message


@pytest.mark.model
def test_a_secret_minted_on_one_server_opens_a_session_on_another_with_its_settings(tmp_path: Path):
    with server(tmp_path, api_key=KEY) as minting, server(tmp_path, api_key=KEY) as serving:
        minted = openai.OpenAI(base_url=f"{minting}/v1", api_key=KEY).realtime.client_secrets.create(
            expires_after={"anchor": "created_at", "seconds": 120},
            session={"type": "realtime", "instructions": "Answer in one word.", "output_modalities": ["text"]},
        )
        assert minted.value.startswith("ek_") and minted.expires_at > time.time() + 100

        async def open_with(secret: str) -> object:
            client = openai.AsyncOpenAI(base_url=f"{serving}/v1", api_key=secret, max_retries=0)
            async with client.realtime.connect(model="fishvoice") as connection:
                return await asyncio.wait_for(connection.recv(), WAIT_S)

        created = asyncio.run(open_with(minted.value))
        assert created.type == "session.created"
        assert created.session.instructions == "Answer in one word." and created.session.output_modalities == ["text"]
        refused = asyncio.run(open_with(minted.value[:-3] + "abc"))
        assert refused.type == "error" and refused.error.code == "unauthorized"

        # A secret is not a key: it mints nothing; a bad lifetime is refused by its field.
        again = httpx.post(f"{minting}/v1/realtime/client_secrets", headers={"Authorization": f"Bearer {minted.value}"})
        assert again.status_code == 401
        short = httpx.post(
            f"{minting}/v1/realtime/client_secrets",
            headers={"Authorization": f"Bearer {KEY}"},
            json={"expires_after": {"seconds": 5}},
        )
        assert short.status_code == 400 and short.json()["error"]["param"] == "expires_after.seconds"
