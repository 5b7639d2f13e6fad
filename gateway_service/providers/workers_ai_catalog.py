"""The Workers AI text-generation catalog behind ``GET /v1/models`` (SPEC §6, wire-formats §2.9).

Fetched from the account's ``ai/models/search?task=Text%20Generation``, page by page until a page
comes back empty (the recorded `total_count` was wrong, so it is not trusted), and kept in memory
for a TTL. One fetch serves every caller that arrives meanwhile (single flight, under a lock).
When the fetch fails the last good list is served, or, before any success, the built-in list in
``workers_ai_models.json``; a warning is logged when the catalog starts failing, not per request,
and the fetch is retried after a shorter back-off so a broken upstream is not hit per request.

The catalog also knows which models take image input (`is_vision`), which the adapter needs to
decide whether content parts may be forwarded as they are.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import orjson

from gateway_service.providers.workers_ai_stream import PROVIDER, parse_error
from gateway_service.upstream_http import HttpSettings, UpstreamClient, open_stream
from native1api.gateway.v1 import gateway_service_pb2
from rpc_common.status import RpcError

_LOGGER = logging.getLogger(__name__)

TEXT_GENERATION: Final = "Text Generation"
BUILTIN_RESOURCE: Final = "workers_ai_models.json"


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One text-generation model as `/v1/models` shows it, plus what the adapter needs."""

    id: str
    created: int
    owned_by: str
    vision: bool = False

    def to_proto(self) -> gateway_service_pb2.Model:
        return gateway_service_pb2.Model(id=self.id, created=self.created, owned_by=self.owned_by)


class CatalogUnavailable(Exception):
    """The search endpoint answered, but not with a usable catalog."""


def owned_by_of(model_id: str) -> str:
    """The id's namespace: ``@cf/meta/llama-3.2-3b-instruct`` -> ``meta``."""
    parts = model_id.split("/")
    return parts[1] if len(parts) >= 3 and parts[1] else "cloudflare"


def parse_created_at(value: Any) -> int:
    """``"2024-09-25 20:05:43.986"`` (not ISO: a space, no zone; UTC) as Unix seconds; 0 when
    absent or unreadable (the proto's "unknown")."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return max(0, int(value))
    if not isinstance(value, str) or not value.strip():
        return 0
    try:
        # Python 3.11's fromisoformat reads the space separator and millisecond fractions too.
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return 0
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0, int(when.timestamp()))


@functools.cache
def builtin_entries() -> tuple[CatalogEntry, ...]:
    """The fallback list shipped in ``workers_ai_models.json`` (read once)."""
    raw = resources.files(__package__).joinpath(BUILTIN_RESOURCE).read_text(encoding="utf-8")
    data = json.loads(raw)
    return tuple(
        CatalogEntry(
            id=item["id"],
            created=int(item.get("created", 0)),
            owned_by=item.get("owned_by") or owned_by_of(item["id"]),
            vision=bool(item.get("vision", False)),
        )
        for item in data["models"]
    )


def entry_from_search(item: Any) -> CatalogEntry | None:
    """A catalog entry from one ``models/search`` result, or None if it is not text generation."""
    if not isinstance(item, dict):
        return None
    name = item.get("name")
    if not isinstance(name, str) or not name.startswith("@"):
        return None
    task = item.get("task")
    task_name = task.get("name") if isinstance(task, dict) else task
    # The query already filters by task; checking again guards against a filter that is ignored.
    if isinstance(task_name, str) and task_name.lower() != TEXT_GENERATION.lower():
        return None
    vision = False
    properties = item.get("properties")
    if isinstance(properties, list):
        for prop in properties:
            # Property values are strings ("true"), per the recording.
            if isinstance(prop, dict) and prop.get("property_id") == "vision":
                vision = str(prop.get("value")).lower() == "true"
    return CatalogEntry(
        id=name,
        created=parse_created_at(item.get("created_at")),
        owned_by=owned_by_of(name),
        vision=vision,
    )


class WorkersAICatalog:
    """The cached catalog of one Cloudflare account."""

    def __init__(
        self,
        http: UpstreamClient,
        settings: HttpSettings,
        base_url: str,
        account_id: str,
        *,
        ttl_seconds: float = 600.0,
        failure_retry_seconds: float = 60.0,
        fetch_timeout_seconds: float = 15.0,
        per_page: int = 100,
        max_pages: int = 50,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._settings = settings
        self._search_url = (
            f"{base_url.rstrip('/')}/accounts/{quote(account_id, safe='')}/ai/models/search"
        )
        self._ttl = ttl_seconds
        self._failure_retry = failure_retry_seconds
        self._fetch_timeout = fetch_timeout_seconds
        self._per_page = per_page
        self._max_pages = max_pages
        self._clock = clock
        self._lock = asyncio.Lock()
        self._current: tuple[CatalogEntry, ...] | None = None
        self._live: tuple[CatalogEntry, ...] | None = None  # the last successful fetch
        self._expires = 0.0
        self._failing = False
        self._vision = frozenset(e.id for e in builtin_entries() if e.vision)

    async def list_models(
        self, api_key: str, *, byok: bool = False
    ) -> list[gateway_service_pb2.Model]:
        """The text-generation models, as fresh protos (the caller may modify them)."""
        return [entry.to_proto() for entry in await self.entries(api_key, byok=byok)]

    async def entries(self, api_key: str, *, byok: bool = False) -> tuple[CatalogEntry, ...]:
        """The cached catalog, refreshed when stale; never raises for upstream failures."""
        current = self._current
        if current is not None and self._clock() < self._expires:
            return current
        async with self._lock:
            # Whoever held the lock before us may have refreshed it already (single flight).
            current = self._current
            if current is not None and self._clock() < self._expires:
                return current
            return await self._refresh(api_key, byok)

    def is_vision(self, model: str) -> bool:
        """Whether `model` takes image content parts (live catalog if fetched, else built-in)."""
        return model in self._vision

    async def _refresh(self, api_key: str, byok: bool) -> tuple[CatalogEntry, ...]:
        try:
            async with asyncio.timeout(self._fetch_timeout):
                live = await self._fetch(api_key, byok)
        except (RpcError, aiohttp.ClientError, CatalogUnavailable, ValueError, TimeoutError) as exc:
            reason = exc.message if isinstance(exc, RpcError) else type(exc).__name__
            if not self._failing:
                _LOGGER.warning(
                    "%s: model catalog fetch failed (%s); serving the %s list",
                    PROVIDER,
                    reason,
                    "last fetched" if self._live else "built-in",
                )
            self._failing = True
            self._current = self._live or builtin_entries()
            self._expires = self._clock() + self._failure_retry
            return self._current
        if self._failing:
            _LOGGER.info("%s: model catalog fetch works again", PROVIDER)
        self._failing = False
        self._live = self._current = live
        self._expires = self._clock() + self._ttl
        self._vision = frozenset(e.id for e in live if e.vision)
        return live

    async def _fetch(self, api_key: str, byok: bool) -> tuple[CatalogEntry, ...]:
        found: dict[str, CatalogEntry] = {}
        names_seen: set[str] = set()
        for page in range(1, self._max_pages + 1):
            items = await self._page(api_key, byok, page)
            if not items:
                break
            names = {item.get("name") for item in items if isinstance(item, dict)}
            new_names = {name for name in names if isinstance(name, str)} - names_seen
            if not new_names:
                break  # the same page again: the upstream ignores `page`; stop rather than loop
            names_seen |= new_names
            for item in items:
                entry = entry_from_search(item)
                if entry is not None:
                    found.setdefault(entry.id, entry)
        if not found:
            raise CatalogUnavailable("no text-generation models")
        return tuple(found.values())

    async def _page(self, api_key: str, byok: bool, page: int) -> list[Any]:
        # The query string is written out: the documented spelling is `Text%20Generation`.
        url = f"{self._search_url}?task=Text%20Generation&per_page={self._per_page}&page={page}"
        response = await open_stream(
            self._http,
            "GET",
            url,
            headers={"Authorization": f"Bearer {api_key}"},
            provider=PROVIDER,
            byok=byok,
            parse_error=parse_error,
            settings=self._settings,
        )
        try:
            raw = await response.read()
        finally:
            await response.aclose()
        data = orjson.loads(raw)
        if not isinstance(data, dict) or data.get("success") is False:
            raise CatalogUnavailable("not a successful search envelope")
        result = data.get("result")
        if not isinstance(result, list):
            raise CatalogUnavailable("`result` is not a list")
        return result
