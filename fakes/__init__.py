"""Local fake LLM upstreams (Workers AI, OpenRouter, Together) that speak the real wire formats.

Used by the test suite, the benchmark and the local run command (as a loudly announced stand-in
for Workers AI when no Cloudflare credentials are configured). Each fake is a Starlette app with a
`FakeControl` at ``app.control``; `fakes.server` serves one on a free loopback port:

    from fakes import workers_ai
    from fakes.server import serve_in_thread

    app = workers_ai.create_app(tokens=["t"])
    with serve_in_thread(app) as base_url:   # http://127.0.0.1:PORT/client/v4
        app.control.fail_next(503, retry_after=1)
        ...

Faults can also be requested from inside a prompt with ``[[fake:key=value,...]]`` markers (see
`fakes.behavior`), and replies are deterministic (see `fakes.content.reply_text`).
"""

from fakes.app import FakeApp
from fakes.behavior import Behavior, MarkerError, parse_markers, strip_markers
from fakes.content import DEFAULT_CHUNKS, count_prompt_tokens, digest, reply_chunks, reply_text
from fakes.control import DisconnectEvent, FakeControl, RequestRecord
from fakes.server import RunningServer, serve, serve_in_thread

__all__ = [
    "DEFAULT_CHUNKS",
    "Behavior",
    "DisconnectEvent",
    "FakeApp",
    "FakeControl",
    "MarkerError",
    "RequestRecord",
    "RunningServer",
    "count_prompt_tokens",
    "digest",
    "parse_markers",
    "reply_chunks",
    "reply_text",
    "serve",
    "serve_in_thread",
    "strip_markers",
]
