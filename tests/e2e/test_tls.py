"""gRPC between the services over mutual TLS (SPEC §11): the three processes with GRPC_TLS_*,
a client without a certificate refused, and no secret on the wire between gateway and vault."""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.certs import ThrowawayCA
from tests.support.e2e import CF_TOKEN, MODEL, OR_KEY, running_processes
from tests.support.procs import free_port, run_module

pytestmark = pytest.mark.e2e


class Recorder:
    """A TCP relay that keeps every byte it forwards (what a wiretap would see)."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.seen = bytearray()
        self._target = target_port
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self._target))
            except OSError:
                client.close()  # the target is not up yet: like a refused connection
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                with self._lock:
                    self.seen += data
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            source.close()  # each socket is the source of exactly one pump

    def close(self) -> None:
        self._server.close()


@pytest.fixture
def ca(tmp_path: Path) -> ThrowawayCA:
    return ThrowawayCA(tmp_path)


@pytest.fixture
def tls_env(ca: ThrowawayCA) -> dict[str, str]:
    service = ca.issue("service")
    return {
        "GRPC_TLS_CERT_FILE": str(service.cert),
        "GRPC_TLS_KEY_FILE": str(service.key),
        "GRPC_TLS_CA_FILE": str(ca.cert_path),
    }


def _health(address: str, credentials: grpc.ChannelCredentials | None) -> str:
    """SERVING, or the status code name of the failed check."""
    channel = (
        grpc.insecure_channel(address)
        if credentials is None
        else grpc.secure_channel(address, credentials)
    )
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=3
            )
        except grpc.RpcError as exc:
            return str(exc.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def test_the_stack_over_mutual_tls(
    tmp_path: Path, ca: ThrowawayCA, tls_env: dict[str, str]
) -> None:
    vault_port = free_port()
    recorder = Recorder(vault_port)
    env = {
        **tls_env,
        "VAULT_LISTEN_ADDR": f"127.0.0.1:{vault_port}",
        # The gateway and the bridge reach the vault through the wiretap.
        "VAULT_ADDR": f"127.0.0.1:{recorder.port}",
    }
    try:
        with running_processes(tmp_path, extra_env=env) as stack:
            headers = stack.headers("tls-user")
            body = {"model": MODEL, "messages": [{"role": "user", "content": "over tls"}]}
            async with httpx.AsyncClient(base_url=stack.bridge_url, timeout=30) as http:
                saved = await http.post("/v1/vault", json={"apiKey": OR_KEY}, headers=headers)
                assert saved.status_code == 200, saved.text
                byok = await http.post(
                    "/v1/chat/completions",
                    json={**body, "model": "openai/gpt-4o-mini"},
                    headers=headers,
                )
                assert byok.status_code == 200, byok.text
                assert byok.headers["x-native1api-provider"] == "openrouter"
            ca_only = ca.cert_path.read_bytes()
            client = ca.issue("client")
            with_cert = grpc.ssl_channel_credentials(
                ca_only, client.key.read_bytes(), client.cert.read_bytes()
            )
            for address in (stack.vault_address, stack.gateway_address):
                assert _health(address, with_cert) == "SERVING"
                # No client certificate: the handshake is refused.
                assert _health(address, grpc.ssl_channel_credentials(ca_only)) == "UNAVAILABLE"
                # Plaintext: refused too.
                assert _health(address, None) == "UNAVAILABLE"
            # The compose health probe speaks TLS from the same variables.
            probe = run_module("rpc_common.healthcheck", ["grpc", stack.vault_address], tls_env)
            assert probe.returncode == 0, probe.stderr
            plain = run_module("rpc_common.healthcheck", ["grpc", stack.vault_address], {})
            assert plain.returncode == 1
            service_token = stack.env["SERVICE_TOKEN"]
            id_token = headers["Authorization"].removeprefix("Bearer ")
    finally:
        recorder.close()
    wire = bytes(recorder.seen)
    assert len(wire) > 1000  # the wiretap really saw the gateway's and the bridge's calls
    for secret in (service_token, id_token, OR_KEY, CF_TOKEN, "AccessApiKey"):
        assert secret.encode() not in wire


def test_a_half_configured_tls_refuses_to_start(tmp_path: Path, ca: ThrowawayCA) -> None:
    service = ca.issue("lonely")
    env = {
        "FIREBASE_PROJECT_ID": "demo-native1api",
        "VAULT_MASTER_KEY": "m" * 40,
        "SERVICE_TOKEN": "t" * 30,
        "VAULT_DATABASE_URL": f"sqlite:///{tmp_path}/vault.db",
        "GRPC_TLS_CERT_FILE": str(service.cert),
    }
    result = run_module("vault_service", [], env, timeout=30)
    assert result.returncode != 0
    assert "GRPC_TLS_KEY_FILE" in result.stderr
