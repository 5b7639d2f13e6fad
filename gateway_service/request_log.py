"""One structured log line per completion: who (hashed), what, where, how long, how many tokens.

Never prompts, keys or tokens. The uid is hashed so logs can be correlated per user without
holding the identifier itself.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from native1api.gateway.v1 import chat_pb2

_LOGGER = logging.getLogger("native1api.requests")


def hash_uid(uid: str) -> str:
    return hashlib.sha256(uid.encode("utf-8")).hexdigest()[:16]


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    uid: str
    rpc: str
    model: str = ""
    provider: str = ""
    status: str = "OK"
    reason: str = ""
    latency_ms: float = 0.0
    upstream_ms: float = 0.0
    usage: chat_pb2.Usage | None = None
    # Set once the completion is admitted (`routed`): what the usage ledger needs beyond the log.
    admitted: bool = False
    upstream_model: str = ""
    byok: bool = False
    prompt_estimate: int = 0
    streamed_characters: int = 0

    def routed(self, upstream_model: str, byok: bool, prompt_estimate: int) -> None:
        """Mark the completion admitted: from now on it ends in a usage ledger record."""
        self.admitted = True
        self.upstream_model = upstream_model
        self.byok = byok
        self.prompt_estimate = prompt_estimate

    def emit(self) -> None:
        prompt = self.usage.prompt_tokens if self.usage is not None else -1
        completion = self.usage.completion_tokens if self.usage is not None else -1
        _LOGGER.info(
            "request_id=%s uid_hash=%s rpc=%s provider=%s model=%s status=%s reason=%s "
            "latency_ms=%.1f upstream_ms=%.1f prompt_tokens=%d completion_tokens=%d",
            self.request_id,
            hash_uid(self.uid) if self.uid else "-",
            self.rpc,
            self.provider or "-",
            self.model or "-",
            self.status,
            self.reason or "-",
            self.latency_ms,
            self.upstream_ms,
            prompt,
            completion,
        )
