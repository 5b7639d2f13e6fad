"""TLS and mutual TLS between the services (SPEC §11), one rule for every server and client.

| variable | on a server | on a client |
| --- | --- | --- |
| `GRPC_TLS_CERT_FILE`, `GRPC_TLS_KEY_FILE` | serve TLS with this certificate | present it (mutual TLS) |
| `GRPC_TLS_CA_FILE` | require client certificates signed by this CA (mutual TLS) | trust servers signed by it |

Unset: plaintext, as on one machine or a private network. A client with `GRPC_TLS_CA_FILE` speaks
only TLS, so a secret (the service token, a user's ID token, a decrypted key coming back from
the vault) never crosses the network in clear. Certificates must name the address clients dial
(a DNS name such as `vault`, or an IP address in the subjectAltName).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from rpc_common.channels import balanced_options
from rpc_common.config import ConfigError

CERT = "GRPC_TLS_CERT_FILE"
KEY = "GRPC_TLS_KEY_FILE"
CA = "GRPC_TLS_CA_FILE"


@dataclass(frozen=True)
class TlsSettings:
    """The PEM bytes read once at start-up; empty: not configured."""

    cert: bytes = b""
    key: bytes = field(default=b"", repr=False)
    ca: bytes = b""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> TlsSettings:
        cert, key, ca = (_read(environ, name) for name in (CERT, KEY, CA))
        if bool(cert) != bool(key):
            raise ConfigError(f"set both {CERT} and {KEY}, or neither")
        if cert and b"-----BEGIN" not in cert:
            raise ConfigError(f"{CERT} must be a PEM certificate")
        if key and b"PRIVATE KEY-----" not in key:
            raise ConfigError(f"{KEY} must be a PEM private key")
        if ca and b"-----BEGIN CERTIFICATE-----" not in ca:
            raise ConfigError(f"{CA} must hold PEM CA certificates")
        return cls(cert=cert, key=key, ca=ca)

    @property
    def serves_tls(self) -> bool:
        return bool(self.cert)

    @property
    def dials_tls(self) -> bool:
        return bool(self.ca)

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """TLS for a server (None: plaintext); with a CA, client certificates are required."""
        if not self.cert:
            return None
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)],
            root_certificates=self.ca or None,
            require_client_auth=bool(self.ca),
        )

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """TLS for a client (None: plaintext); presents this process's certificate when it has
        one, for servers that require mutual TLS."""
        if not self.ca:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca,
            private_key=self.key or None,
            certificate_chain=self.cert or None,
        )

    def aio_channel(
        self,
        target: str,
        options: Sequence[tuple[str, Any]] = (),
        *,
        health_service: str | None = None,
    ) -> grpc.aio.Channel:
        """An asyncio channel to `target`, over TLS when a CA is configured.

        With `health_service` (the service the caller uses, as its health checks name it, e.g.
        `native1api.vault.v1.VaultService`) the channel balances over every replica `target`
        names, healthy ones only, and retries calls lost with a broken connection: see
        `rpc_common.channels` (SPEC §12).
        """
        if health_service is not None:
            options = balanced_options(health_service, options)
        credentials = self.channel_credentials()
        if credentials is None:
            return grpc.aio.insecure_channel(target, options=options)
        return grpc.aio.secure_channel(target, credentials, options=options)

    def sync_channel(self, target: str) -> grpc.Channel:
        """A blocking channel (health probes), over TLS when a CA is configured."""
        credentials = self.channel_credentials()
        if credentials is None:
            return grpc.insecure_channel(target)
        return grpc.secure_channel(target, credentials)


def _read(environ: Mapping[str, str], name: str) -> bytes:
    path = environ.get(name, "").strip()
    if not path:
        return b""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path} ({exc.strerror})") from None
