"""The shared upstream client never keeps a cookie one user's upstream answer set."""

from __future__ import annotations

import httpx

from gateway_service.upstream_http import HttpSettings, make_client


async def test_upstream_cookies_are_never_kept() -> None:
    seen: list[httpx.Headers] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(200, headers={"set-cookie": "__cf_bm=abc; Path=/"}, text="ok")

    # The production configuration on an in-memory transport: the policy lives on the client.
    async with make_client(HttpSettings(), transport=httpx.MockTransport(handler)) as client:
        for _ in range(2):
            await client.get("http://upstream.test/")
        assert not client.cookies
    assert all("cookie" not in headers for headers in seen)
