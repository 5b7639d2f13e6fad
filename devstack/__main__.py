"""`python -m devstack` (what `make run` calls): the whole stack on one machine, dev defaults.

Starts the vault, the gateway and the REST bridge as child processes with SQLite, dev secrets in
`data/`, emulator-mode auth for `demo-native1api`, the limits the product ships
(`config/limits.toml`, kept in the gateway's process: one replica needs no Redis) and, when no
Cloudflare credentials are set, the local Workers AI stand-in. Ctrl-C stops everything; a child
that dies stops the rest.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from devstack.secrets import ensure_secret

DATA = Path("data")
# The shipped limits file, found from the code rather than the working directory.
LIMITS_FILE = Path(__file__).resolve().parents[1] / "config" / "limits.toml"
READY_TIMEOUT_SECONDS = 60.0
STANDIN_PORT = int(os.environ.get("WORKERS_AI_STANDIN_PORT", "8787"))


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None


def _say(message: str) -> None:
    sys.stderr.write(f"[devstack] {message}\n")
    sys.stderr.flush()


def _env() -> tuple[dict[str, str], bool]:
    """The children's environment, and whether the Workers AI stand-in is needed."""
    # An empty variable counts as unset, as it does for the services themselves.
    env = {key: value for key, value in os.environ.items() if value}
    env.setdefault("FIREBASE_PROJECT_ID", "demo-native1api")
    env.setdefault("FIREBASE_AUTH_EMULATOR_HOST", "127.0.0.1:9099")
    env.setdefault("VAULT_DATABASE_URL", "sqlite:///data/vault.db")
    if "VAULT_MASTER_KEY" not in env:
        env.setdefault("VAULT_MASTER_KEY_FILE", str(ensure_secret(DATA / "master.key")))
    if "SERVICE_TOKEN" not in env:
        env.setdefault("SERVICE_TOKEN_FILE", str(ensure_secret(DATA / "service.token")))
    if "LIMITS_FILE" not in env:
        if LIMITS_FILE.is_file():
            env["LIMITS_FILE"] = str(LIMITS_FILE)
        else:
            _say(f"{LIMITS_FILE} is missing; starting without limits")
    standin = not (env.get("CLOUDFLARE_ACCOUNT_ID") and env.get("CLOUDFLARE_API_TOKEN"))
    if standin:
        token_path = ensure_secret(DATA / "workers-ai-standin.token", 24)
        env["CLOUDFLARE_ACCOUNT_ID"] = "local-standin"
        env["CLOUDFLARE_API_TOKEN"] = token_path.read_text(encoding="utf-8").strip()
        env["WORKERS_AI_BASE_URL"] = f"http://127.0.0.1:{STANDIN_PORT}/client/v4"
    return env, standin


def _children(env: dict[str, str], standin: bool) -> list[Child]:
    py = sys.executable
    children: list[Child] = []
    if standin:
        children.append(
            Child(
                "workers-ai-standin",
                [
                    py,
                    "-m",
                    "fakes",
                    "workers-ai",
                    "--port",
                    str(STANDIN_PORT),
                    "--token",
                    env["CLOUDFLARE_API_TOKEN"],
                ],
            )
        )
    for module in ("vault_service", "gateway_service", "rest_bridge"):
        if importlib.util.find_spec(f"{module}.__main__") is None:
            _say(f"{module} is not built yet; starting without it")
            continue
        children.append(Child(module, [py, "-m", module]))
    return children


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (our own http URL)
            return bool(response.status == 200)
    except OSError:
        return False


def _banner(env: dict[str, str], standin: bool) -> None:
    bridge = env.get("BRIDGE_LISTEN_ADDR", "127.0.0.1:8080")
    lines = [
        "",
        "=" * 72,
        f" Native1API is running: http://{bridge}",
        f" Auth: Firebase Auth Emulator mode, project {env['FIREBASE_PROJECT_ID']}",
        "   (signatures NOT checked: development only)",
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
    for child in reversed(children):
        if child.process and child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
            try:
                child.process.wait(grace_seconds)
            except subprocess.TimeoutExpired:
                _say(f"{child.name} did not stop in {grace_seconds:.0f} s; killing it")
                child.process.kill()
                child.process.wait()


def main() -> int:
    env, standin = _env()
    children = _children(env, standin)
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    for child in children:
        # A new session: Ctrl-C reaches only us, and we stop children in order.
        child.process = subprocess.Popen(child.argv, env=env, start_new_session=True)  # noqa: S603 (our own argv)
        _say(f"started {child.name} (pid {child.process.pid})")
    ready_url = f"http://{env.get('BRIDGE_LISTEN_ADDR', '127.0.0.1:8080')}/readyz"
    announced = False
    started = time.monotonic()
    code = 0
    while not stopping:
        dead = next((c for c in children if c.process and c.process.poll() is not None), None)
        if dead is not None:
            assert dead.process is not None
            _say(
                f"{dead.name} exited with status {dead.process.returncode}; stopping the others. "
                "Its log lines above say why."
            )
            code = 1
            break
        if not announced:
            if _ready(ready_url):
                _banner(env, standin)
                announced = True
            elif time.monotonic() - started > READY_TIMEOUT_SECONDS:
                _say(
                    f"the stack is not ready after {READY_TIMEOUT_SECONDS:.0f} s; see the logs above"
                )
                code = 1
                break
        time.sleep(0.2)
    _say("stopping")
    _stop(children)
    return code


if __name__ == "__main__":
    sys.exit(main())
