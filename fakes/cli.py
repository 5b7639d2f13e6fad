"""Command line: run one fake upstream as a local stand-in.

    python -m fakes workers-ai --port 8787 --token dev [--account-id ACCT]
    python -m fakes openrouter --port 8788 --token sk-or-v1-dev
    python -m fakes together   --port 8789 --token dev

Prints a loud banner on stderr (this is NOT the real provider) and, once the socket listens, one
machine-readable line on stdout: ``READY <base URL>`` (the value for ``WORKERS_AI_BASE_URL`` and
friends), so scripts and end-to-end tests can use ``--port 0``. Tokens may also come from
``FAKE_UPSTREAM_TOKENS`` (comma-separated); the default is ``dev``. SIGTERM/SIGINT stop it, exit 0.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType

import uvicorn

from fakes import openrouter, together, workers_ai
from fakes.app import FakeApp
from fakes.server import bind_socket, install_cut_log_filter, uvicorn_config

__all__ = ["build_app", "main"]

_PROVIDERS: dict[str, tuple[str, str, Callable[..., FakeApp]]] = {
    "workers-ai": ("Cloudflare Workers AI", "WORKERS_AI_BASE_URL", workers_ai.create_app),
    "openrouter": ("OpenRouter", "OPENROUTER_BASE_URL", openrouter.create_app),
    "together": ("Together AI", "TOGETHER_BASE_URL", together.create_app),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fakes", description="Run a local fake LLM upstream (not a real provider)."
    )
    parser.add_argument("provider", choices=sorted(_PROVIDERS))
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8787, help="port; 0 picks a free one (default 8787)"
    )
    parser.add_argument(
        "--token", action="append", dest="tokens", help="accepted Bearer token/key; repeatable"
    )
    parser.add_argument(
        "--account-id", help="workers-ai only: the one account id to serve (default: any)"
    )
    parser.add_argument("--chunks", type=int, default=None, help="content chunks per reply")
    parser.add_argument("--chunk-delay", type=float, default=None, help="seconds between chunks")
    parser.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )
    return parser


def _tokens(args: argparse.Namespace) -> list[str]:
    return (
        args.tokens
        or [t for t in os.environ.get("FAKE_UPSTREAM_TOKENS", "").split(",") if t]
        or ["dev"]
    )


def build_app(args: argparse.Namespace) -> FakeApp:
    """The fake app the parsed arguments describe."""
    options: dict[str, object] = {"tokens": _tokens(args)}
    if args.chunks is not None:
        options["chunks"] = args.chunks
    if args.chunk_delay is not None:
        options["chunk_delay"] = args.chunk_delay
    if args.provider == "workers-ai" and args.account_id:
        options["account_id"] = args.account_id
    return _PROVIDERS[args.provider][2](**options)


def _banner(
    provider: str, env_var: str, base_url: str, args: argparse.Namespace, token_count: int
) -> str:
    rule = "=" * 78
    lines = [
        rule,
        f"  LOCAL STAND-IN: THIS IS NOT THE REAL {provider.upper()}",
        "  Replies are deterministic echoes from fakes/, no model runs and nothing leaves this machine.",
        f"  {env_var}={base_url}",
        f"  accepting {token_count} configured token(s)"
        + (
            f"; account id {args.account_id}"
            if args.account_id
            else "; any account id"
            if args.provider == "workers-ai"
            else ""
        ),
    ]
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        lines.append(f"  WARNING: listening on {args.host}, not loopback")
    lines.append(rule)
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, print the banner and serve until signalled."""
    args = _parser().parse_args(argv)
    app = build_app(args)
    provider, env_var, _ = _PROVIDERS[args.provider]
    sock = bind_socket(args.host, args.port)
    port = sock.getsockname()[1]
    base_url = f"http://{args.host}:{port}{app.base_path}"
    sys.stderr.write(_banner(provider, env_var, base_url, args, len(_tokens(args))))
    sys.stderr.flush()
    sys.stdout.write(f"READY {base_url}\n")
    sys.stdout.flush()
    install_cut_log_filter()
    server = uvicorn.Server(uvicorn_config(app, log_level=args.log_level, own_logging=True))

    def stop(signum: int, frame: FrameType | None) -> None:
        server.should_exit = True

    # uvicorn drains on SIGTERM/SIGINT, then restores the previous handlers and re-raises the
    # signal; with these as the previous handlers the re-raise is harmless and we exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0
