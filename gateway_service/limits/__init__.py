"""Admission control: per-user tiers and limits, in Redis or in process (SPEC §10)."""

from gateway_service.limits.admission import (
    UNMETERED,
    Admission,
    Lease,
    StorePolicy,
)
from gateway_service.limits.memory_store import MemoryStore
from gateway_service.limits.redis_store import RedisStore
from gateway_service.limits.store import LimitStore, StoreUnavailable
from gateway_service.limits.tiers import Tier, TierTable, load_tiers

__all__ = [
    "UNMETERED",
    "Admission",
    "Lease",
    "LimitStore",
    "MemoryStore",
    "RedisStore",
    "StorePolicy",
    "StoreUnavailable",
    "Tier",
    "TierTable",
    "load_tiers",
]
