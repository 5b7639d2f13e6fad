"""`python -m devstack.front`: the replicated dev stack's one URL, a tiny round-robin TCP front.

    python -m devstack.front --listen 127.0.0.1:8080 \
        --backend 127.0.0.1:8081 --backend 127.0.0.1:8082

Layer 4, like a TCP load balancer: each new client connection goes to the next backend in turn,
and its bytes are copied both ways unchanged (HTTP keep-alive, server-sent events, half-closes),
so everything on one connection reaches one bridge. A backend that refuses the connection (or does
not accept it within `--connect-timeout`) is skipped: the next one is tried, and the skip is
logged when a backend goes away and when it comes back. When no backend accepts, the client gets a
plain `502` in OpenAI's error shape rather than a dropped connection.

SIGTERM or SIGINT closes the listener at once; connections already open keep flowing (the bridges
behind drain their own) for up to `--grace` seconds, then are cut.

For development only: no TLS, no health checks beyond the connect, no limits of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from rpc_common import aio

_LOGGER: Final = logging.getLogger("devstack.front")
_CHUNK: Final = 64 * 1024
_NO_BACKEND_BODY: Final = json.dumps(
    {
        "error": {
            "message": "No bridge accepted the connection (devstack front); try again shortly.",
            "type": "server_error",
            "param": None,
            "code": "no_backend",
        }
    }
).encode()
NO_BACKEND_RESPONSE: Final = (
    b"HTTP/1.1 502 Bad Gateway\r\n"
    b"content-type: application/json\r\n"
    b"cache-control: no-store\r\n"
    b"connection: close\r\n"
    b"content-length: " + str(len(_NO_BACKEND_BODY)).encode() + b"\r\n\r\n" + _NO_BACKEND_BODY
)


def parse_address(value: str) -> tuple[str, int]:
    """`HOST:PORT` (an IPv6 host in brackets) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


@dataclass
class Front:
    """The round-robin state and the connections it carries."""

    backends: Sequence[tuple[str, int]]
    connect_timeout: float = 2.0
    connections: list[int] = field(init=False)
    """Connections handed to each backend so far."""
    unserved: int = field(default=0, init=False)
    """Connections no backend accepted (answered 502)."""
    _next: int = field(default=0, init=False)
    _down: set[int] = field(default_factory=set, init=False)
    _open: set[asyncio.Task[None]] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        if not self.backends:
            raise ValueError("at least one backend is needed")
        self.connections = [0] * len(self.backends)

    def _name(self, index: int) -> str:
        host, port = self.backends[index]
        return f"{host}:{port}"

    async def _connect(self) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter] | None:
        """The next backend that accepts, starting after the last one used."""
        for _ in range(len(self.backends)):
            index = self._next
            self._next = (self._next + 1) % len(self.backends)
            host, port = self.backends[index]
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), self.connect_timeout
                )
            except (OSError, TimeoutError) as exc:
                if index not in self._down:
                    self._down.add(index)
                    _LOGGER.warning(
                        "backend %s is not accepting connections (%s); skipping it",
                        self._name(index),
                        type(exc).__name__,
                    )
                continue
            if index in self._down:
                self._down.discard(index)
                _LOGGER.info("backend %s accepts connections again", self._name(index))
            self.connections[index] += 1
            return index, reader, writer
        return None

    async def handle(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            picked = await self._connect()
            if picked is None:
                self.unserved += 1
                client.write(NO_BACKEND_RESPONSE)
                await client.drain()
                return
            _, upstream_reader, upstream = picked
            await asyncio.gather(
                _pipe(client_reader, upstream, client),
                _pipe(upstream_reader, client, upstream),
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._open.discard(task)
            for writer in (client, upstream):
                if writer is not None:
                    writer.transport.abort()

    async def drain(self, grace_seconds: float) -> int:
        """Wait up to `grace_seconds` for the open connections to end, then cut the rest;
        returns how many were cut."""
        pending = set(self._open)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=grace_seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
        return len(pending)

    def summary(self) -> str:
        parts = [f"{self._name(i)}: {n}" for i, n in enumerate(self.connections)]
        total = sum(self.connections) + self.unserved
        return f"{total} connections ({', '.join(parts)}; no backend: {self.unserved})"


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, source: asyncio.StreamWriter
) -> None:
    """Copy `reader` into `writer` until EOF, then half-close `writer`. A failure on either side
    cuts both connections, so the other direction ends too (a bridge sees its client go)."""
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof() and not writer.is_closing():
            writer.write_eof()
    except OSError:
        writer.transport.abort()
        source.transport.abort()


async def serve(
    listen: tuple[str, int],
    backends: Sequence[tuple[str, int]],
    grace_seconds: float,
    connect_timeout: float = 2.0,
) -> None:
    front = Front(backends, connect_timeout)
    server = await asyncio.start_server(front.handle, listen[0], listen[1], reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()
    _LOGGER.info(
        "listening on http://%s:%d, round robin over %s",
        bound[0],
        bound[1],
        ", ".join(f"{host}:{port}" for host, port in backends),
    )
    await stop.wait()
    server.close()
    _LOGGER.info("stopping: no new connections; open ones get up to %.0f s", grace_seconds)
    cut = await front.drain(grace_seconds)
    _LOGGER.info("stopped after %s%s", front.summary(), f"; cut {cut}" if cut else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.front",
        description="A round-robin TCP front over several bridges (development only).",
    )
    parser.add_argument("--listen", required=True, help="HOST:PORT to accept connections on")
    parser.add_argument(
        "--backend",
        action="append",
        required=True,
        help="HOST:PORT of a backend; repeat for each (tried in this order, in turn)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=20.0,
        help="seconds open connections may take to end after SIGTERM (default 20)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=2.0,
        help="seconds a backend may take to accept before the next is tried (default 2)",
    )
    args = parser.parse_args(argv)
    try:
        listen = parse_address(args.listen)
        backends = [parse_address(value) for value in args.backend]
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s devstack.front %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        aio.run(serve(listen, backends, args.grace, args.connect_timeout))
    except OSError as exc:
        _LOGGER.error("cannot listen on %s: %s", args.listen, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
