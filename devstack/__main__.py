"""`python -m devstack` (what `make run` calls): the whole stack on one machine, dev defaults.

Starts the vault, the gateway and the REST bridge as child processes with SQLite, dev secrets in
`data/`, emulator-mode auth for `demo-native1api`, the limits the product ships
(`config/limits.toml`, kept in the gateway's process: one replica needs no Redis) and, when no
Cloudflare credentials are set, the local Workers AI stand-in. Ctrl-C stops everything; a child
that dies stops the rest.

It also serves the browser example (`examples/web-chat/`) on its own origin, allowed in the
bridge's CORS list, and starts the real Firebase Auth Emulator for it when Node is installed:
see `devstack.browser`.

`python -m devstack --replicas` (what `make run-replicas` calls) starts two of each instead, on
PostgreSQL and Redis, behind one round-robin front: see `devstack.replicas`.
"""

from __future__ import annotations

import argparse
import importlib.util
import signal
import sys
import time

from devstack.browser import CommandChild, emulator_child, emulator_ready, start_web
from devstack.stack import (
    READY_TIMEOUT_SECONDS,
    STANDIN_PORT,
    Child,
    common_env,
    ready,
    say,
    standin_child,
    stop,
)


def _env() -> tuple[dict[str, str], bool]:
    """The children's environment, and whether the Workers AI stand-in is needed."""
    env, standin = common_env()
    env.setdefault("VAULT_DATABASE_URL", "sqlite:///data/vault.db")
    return env, standin


def _children(env: dict[str, str], standin: bool) -> list[Child]:
    children: list[Child] = []
    if standin:
        children.append(standin_child(env))
    for module in ("vault_service", "gateway_service", "rest_bridge"):
        if importlib.util.find_spec(f"{module}.__main__") is None:
            say(f"{module} is not built yet; starting without it")
            continue
        children.append(Child(module, module))
    return children


def _banner(env: dict[str, str], standin: bool, page_url: str | None, emulator: str) -> None:
    bridge = env.get("BRIDGE_LISTEN_ADDR", "127.0.0.1:8080")
    lines = [
        "",
        "=" * 72,
        f" Native1API is running: http://{bridge}",
    ]
    if page_url:
        lines += [
            f" Web chat (open in a browser): {page_url}",
            "   sign up or continue anonymously, then chat; allowed in BRIDGE_CORS_ORIGINS",
        ]
    lines += [
        f" Auth: Firebase Auth Emulator mode, project {env['FIREBASE_PROJECT_ID']}",
        "   (signatures NOT checked: development only)",
        f" Auth Emulator: {emulator}",
        " A dev ID token:   make token USER=alice",
        "",
        " curl:",
        "   TOKEN=$(make -s token USER=alice)",
        f'   curl -s http://{bridge}/v1/chat/completions -H "Authorization: Bearer $TOKEN" \\',
        "     -H 'Content-Type: application/json' \\",
        '     -d \'{"model":"@cf/meta/llama-3.2-3b-instruct",',
        '          "messages":[{"role":"user","content":"Hello"}],"stream":true}\'',
        "",
        " OpenAI SDK (Python):",
        f'   OpenAI(base_url="http://{bridge}/v1", api_key=TOKEN)',
        " Our SDK (sdk/python/native1api_client.py, sdk/js/native1api.mjs):",
        f'   Native1API("http://{bridge}", token=TOKEN).chat.completions.create(...)',
    ]
    if "LIMITS_FILE" in env:
        store = "Redis" if env.get("LIMITS_REDIS_URL") else "in-process"
        lines += [
            "",
            f" Limits: {env['LIMITS_FILE']} ({store} store);"
            f" a user's state: GET http://{bridge}/v1/usage",
        ]
    if standin:
        lines += [
            "",
            " !! No CLOUDFLARE_ACCOUNT_ID / CLOUDFLARE_API_TOKEN set: completions are served by",
            f" !! the LOCAL Workers AI STAND-IN on 127.0.0.1:{STANDIN_PORT}, not real models.",
        ]
    lines += [" Ctrl-C stops everything.", "=" * 72, ""]
    sys.stderr.write("\n".join(lines) + "\n")


def _stop(children: list[Child], grace_seconds: float = 15.0) -> None:
    # Stop in reverse start order: the bridge drains first, the vault last.
    stop([[child] for child in reversed(children)], grace_seconds)


def run_single() -> int:
    env, standin = _env()
    # Before the children start: the page's origin goes into the bridge's CORS list.
    web = start_web(env)
    emulator, emulator_note = emulator_child(env)
    children = _children(env, standin)
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    if emulator is not None:
        # Labelled: its start-up box would otherwise read like ours.
        emulator.start(env, label=True)
        assert emulator.process is not None
        say(f"started {emulator.name} (pid {emulator.process.pid}; about 10 s to be ready)")
    for child in children:
        child.start(env)
        assert child.process is not None
        say(f"started {child.name} (pid {child.process.pid})")
    ready_url = f"http://{env.get('BRIDGE_LISTEN_ADDR', '127.0.0.1:8080')}/readyz"
    announced = False
    started = time.monotonic()
    code = 0
    while not stopping:
        emulator_note = _watch_emulator(emulator, env, emulator_note)
        dead = next((c for c in children if c.process and c.process.poll() is not None), None)
        if dead is not None:
            assert dead.process is not None
            say(
                f"{dead.name} exited with status {dead.process.returncode}; stopping the others. "
                "Its log lines above say why."
            )
            code = 1
            break
        if not announced:
            if ready(ready_url) and _emulator_settled(emulator, env, started):
                _banner(env, standin, web.page_url if web else None, emulator_note)
                announced = True
            elif time.monotonic() - started > READY_TIMEOUT_SECONDS:
                say(
                    f"the stack is not ready after {READY_TIMEOUT_SECONDS:.0f} s; see the logs above"
                )
                code = 1
                break
        time.sleep(0.2)
    say("stopping")
    _stop([*([emulator] if emulator else []), *children])
    if web is not None:
        web.stop()
    return code


def _emulator_settled(emulator: CommandChild | None, env: dict[str, str], started: float) -> bool:
    """Whether the banner may go out: the emulator we started serves, died, or is late."""
    if emulator is None or not emulator.running:
        return True
    if time.monotonic() - started > READY_TIMEOUT_SECONDS:
        return True
    return emulator_ready(env["FIREBASE_AUTH_EMULATOR_HOST"])


def _watch_emulator(emulator: CommandChild | None, env: dict[str, str], note: str) -> str:
    """The emulator is a convenience: if it dies, say so once and keep the stack running."""
    if emulator is None or emulator.process is None or emulator.running or "EXITED" in note:
        return note
    emulator.flush_output()
    say(
        f"the Auth Emulator exited with status {emulator.process.returncode}; the web page "
        "cannot sign in (make token still works). Its lines above say why."
    )
    return f"EXITED (status {emulator.process.returncode}); expected at http://{env['FIREBASE_AUTH_EMULATOR_HOST']}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack",
        description="The whole Native1API stack on this machine, with dev defaults.",
    )
    parser.add_argument(
        "--replicas",
        action="store_true",
        help="two bridges, gateways and vaults on PostgreSQL and Redis behind one round-robin "
        "front (make run-replicas)",
    )
    args = parser.parse_args(argv)
    if args.replicas:
        from devstack.replicas import run_replicas

        return run_replicas()
    return run_single()


if __name__ == "__main__":
    sys.exit(main())
