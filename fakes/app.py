"""What the three fakes share: the Starlette app class, request intake and the endpoint adapter.

Each fake is a plain `Starlette` app (`FakeApp`) whose routes are `Reply`-returning handlers. The
intake (`Incoming.read`) records every request in the app's `FakeControl`, parses the JSON body,
extracts the Bearer token, parses ``[[fake:...]]`` markers in the last user message and resolves
the request's `Behavior`. Unknown paths and methods get the provider's own error body through
`FakeApp`'s 404/405 handlers and are recorded too.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from fakes.behavior import Behavior, MarkerError, parse_markers
from fakes.content import DEFAULT_CHUNKS, last_user_text
from fakes.control import FakeControl, RequestRecord
from fakes.wire import Reply

__all__ = ["BaseConfig", "FakeApp", "Handler", "Incoming", "accept_model", "route"]

Handler = Callable[["Incoming"], Awaitable[Reply]]

# Ids a test uses on purpose to get "model not found" from a non-strict fake.
_BAD_MODEL_RE = re.compile(
    r"(?i)(^(bad|foo|unknown|invalid|missing)([/ ]|$))|nonexistent|does-not-exist|not-a-model|\s"
)


@dataclass
class BaseConfig:
    """Settings every fake has. Provider configs extend it."""

    #: Bearer tokens / API keys the fake accepts.
    tokens: Collection[str] = ("dev",)
    #: Content chunks per reply unless a request says otherwise (marker ``chunks=N``).
    chunks: int = DEFAULT_CHUNKS
    #: Seconds between content chunks by default.
    chunk_delay: float = 0.0
    #: Most requests kept in `FakeControl.requests` (counters are never truncated).
    record_limit: int = 10_000
    #: When False, model ids outside the catalog are accepted unless they look deliberately bad.
    strict_models: bool = False
    #: Extra model ids to accept on top of the built-in catalog.
    extra_models: Collection[str] = field(default_factory=tuple)


def accept_model(
    model: str, known: Collection[str], config: BaseConfig, shape: re.Pattern[str]
) -> bool:
    """Whether a fake serves `model`.

    Catalog ids and `config.extra_models` always; with `strict_models` nothing else. Otherwise any
    id of the provider's shape, unless it looks deliberately bad (``bad/model``, ``foo/...``,
    anything containing ``nonexistent`` or ``does-not-exist``, or whitespace): the gateway's alias
    table may target ids this small catalog lacks, and tests still need a reliable unknown id.
    """
    if model in known or model in config.extra_models:
        return True
    if config.strict_models or not shape.fullmatch(model):
        return False
    return _BAD_MODEL_RE.search(model) is None


@dataclass(slots=True)
class Incoming:
    """One received request, recorded, with its resolved behaviour."""

    request: Request
    record: RequestRecord
    control: FakeControl
    body: Any  # parsed JSON; `None` for an empty body
    valid_json: bool
    token: str | None  # Bearer token, None when the header is missing
    has_auth_header: bool
    behavior: Behavior
    prompt: str  # last user message, markers stripped
    marker_error: str | None

    @property
    def json(self) -> Mapping[str, Any]:
        """The body as a mapping ({} when it is not a JSON object)."""
        return self.body if isinstance(self.body, dict) else {}

    @property
    def path_params(self) -> dict[str, Any]:
        return self.request.path_params

    def authorized(self, tokens: Collection[str]) -> bool:
        return self.token is not None and self.token in tokens

    def observe(self, reply: Reply) -> Reply:
        """Attach status, timing knobs and the observer to a reply before it is sent."""
        behavior = self.behavior
        self.record.status = reply.status
        reply.observer = self.control.observer(self.record)
        return reply.timed(
            delay_first=behavior.delay_first,
            chunk_delay=behavior.chunk_delay,
            cut_after=behavior.cut_after,
        )

    @classmethod
    async def read(cls, request: Request, control: FakeControl, *, chat: bool) -> Incoming:
        raw = await request.body()
        body: Any = None
        valid = True
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body, valid = None, False
        scope = request.scope
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        query = scope["query_string"].decode("latin-1")
        record = control.record(scope["method"], scope["path"], query, headers, raw, body)
        auth = headers.get("authorization")
        token: str | None = None
        if auth is not None:
            scheme, _, value = auth.partition(" ")
            token = value.strip() if scheme.lower() == "bearer" and value.strip() else None
        prompt, marker, marker_error, raw_prompt = "", None, None, ""
        if chat and isinstance(body, dict):
            raw_prompt = last_user_text(body)
            try:
                prompt, marker = parse_markers(raw_prompt)
            except MarkerError as exc:
                marker_error = str(exc)
        behavior = control.resolve(marker, chat=chat, marker_text=raw_prompt)
        record.behavior = behavior
        return cls(
            request,
            record,
            control,
            body,
            valid,
            token,
            auth is not None,
            behavior,
            prompt,
            marker_error,
        )


class _Endpoint:
    """Raw ASGI endpoint: Starlette routes call class instances as ASGI apps (no extra wrapping)."""

    __slots__ = ("chat", "handler")

    def __init__(self, handler: Handler, chat: bool) -> None:
        self.handler = handler
        self.chat = chat

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        app: FakeApp = scope["app"]
        incoming = await Incoming.read(request, app.control, chat=self.chat)
        reply = incoming.observe(await self.handler(incoming))
        await reply(scope, receive, send)


def route(path: str, handler: Handler, *, methods: list[str], chat: bool = False) -> Route:
    """A Starlette Route for a fake handler; `chat` routes consume queued chat behaviours."""
    return Route(path, _Endpoint(handler, chat), methods=methods)


class FakeApp(Starlette):
    """A fake upstream: a Starlette app plus its `control`, `provider` name and `base_path`.

    `base_path` is the prefix the gateway's base URL setting carries (``/client/v4``, ``/api/v1``,
    ``/v1``), so ``origin + app.base_path`` is what goes into e.g. ``WORKERS_AI_BASE_URL``.
    """

    def __init__(
        self,
        *,
        provider: str,
        base_path: str,
        routes: list[Route],
        control: FakeControl,
        not_found: Handler,
    ) -> None:
        async def fallback(request: Request, exc: Exception) -> Response:
            # 404 and 405 land here; answer in the provider's format and record the request.
            incoming = await Incoming.read(request, control, chat=False)
            status = exc.status_code if isinstance(exc, HTTPException) else 404
            reply = await not_found(incoming)
            reply.status = status
            incoming.record.status = status
            incoming.record.outcome = "completed"
            body = b"".join(frame.data for frame in reply.frames)
            headers = {k.decode(): v.decode() for k, v in reply.headers}
            return Response(body, status_code=status, headers=headers)

        super().__init__(routes=routes, exception_handlers={404: fallback, 405: fallback})
        self.provider = provider
        self.base_path = base_path
        self.control = control
