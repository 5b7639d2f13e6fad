"""Optional check of a key with its provider before it is stored (`"validate": true`)."""

from __future__ import annotations

import logging

import grpc
import httpx

from rpc_common.status import RpcError
from vault_service.api_keys import OPENROUTER

_LOGGER = logging.getLogger(__name__)


class ProviderKeyChecker:
    """Asks the provider whether a key is valid: OpenRouter `GET /key`, Together `GET /models`.

    Holds one pooled HTTP client for the process; the key is sent only as a bearer header.
    """

    def __init__(
        self,
        *,
        openrouter_base_url: str,
        together_base_url: str,
        timeout_seconds: float,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._urls = {
            OPENROUTER: f"{openrouter_base_url.rstrip('/')}/key",
            "together": f"{together_base_url.rstrip('/')}/models",
        }
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_seconds, connect=min(5.0, timeout_seconds)),
            follow_redirects=False,
        )

    async def check(self, provider: str, api_key: str) -> None:
        """Return when the provider accepts the key; raise RpcError otherwise.

        A rejected key is INVALID_ARGUMENT/INVALID_API_KEY; a provider we cannot reach or that
        answers oddly is UNAVAILABLE, so a transient outage is not reported as a bad key.
        """
        try:
            response = await self._http.get(
                self._urls[provider], headers={"Authorization": f"Bearer {api_key}"}
            )
        except httpx.HTTPError as exc:
            _LOGGER.warning("key check with %s failed: %s", provider, type(exc).__name__)
            raise RpcError(
                grpc.StatusCode.UNAVAILABLE,
                "PROVIDER_UNREACHABLE",
                f"could not reach {provider} to validate the key; try again, or save it "
                "without validate",
                {"provider": provider},
            ) from None
        if response.status_code in (401, 403):
            raise RpcError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "INVALID_API_KEY",
                f"{provider} rejected the key; it was not stored",
                {"provider": provider, "param": "apiKey"},
            )
        if response.status_code != 200:
            raise RpcError(
                grpc.StatusCode.UNAVAILABLE,
                "PROVIDER_UNREACHABLE",
                f"{provider} answered HTTP {response.status_code} while validating the key; "
                "try again later",
                {"provider": provider},
            )

    async def aclose(self) -> None:
        """Close the HTTP client if this checker created it."""
        if self._own_http:
            await self._http.aclose()
