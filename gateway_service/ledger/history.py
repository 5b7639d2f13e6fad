"""A user's usage history for `GetUsage`: the date range asked for, checked, and the rollups.

Dates are UTC days, YYYY-MM-DD, both inclusive; `to` defaults to today; a range spans at most
`MAX_RANGE_DAYS`. A bad date, `from` after `to`, or a longer range is INVALID_ARGUMENT naming the
parameter (`from` / `to`, as the REST query calls them), which the bridge answers with 400.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

import grpc

from gateway_service.ledger.store import Rollup, UsageStore, UsageUnavailable
from native1api.gateway.v1 import gateway_service_pb2
from rpc_common.openai.errors import invalid
from rpc_common.status import RpcError

MAX_RANGE_DAYS: Final = 366
USAGE_HISTORY_UNAVAILABLE: Final = "USAGE_HISTORY_UNAVAILABLE"


def requested_range(
    request: gateway_service_pb2.GetUsageRequest, today: dt.date
) -> tuple[dt.date, dt.date] | None:
    """The (first, last) days asked for, None when the request asks for no history."""
    has_from, has_to = request.HasField("from_date"), request.HasField("to_date")
    if not has_from and not has_to:
        return None
    if not has_from:
        raise invalid(
            "Missing `from`: a usage history needs its first day (YYYY-MM-DD).",
            "from",
            "missing_required_parameter",
        )
    first = _day(request.from_date, "from")
    last = _day(request.to_date, "to") if has_to else today
    if first > last:
        raise invalid(
            f"`from` ({first.isoformat()}) is after `to` ({last.isoformat()}).",
            "from",
            "invalid_date_range",
        )
    days = (last - first).days + 1
    if days > MAX_RANGE_DAYS:
        raise invalid(
            f"The range spans {days} days; at most {MAX_RANGE_DAYS} can be asked for at once.",
            "to",
            "invalid_date_range",
        )
    return first, last


def _day(raw: str, param: str) -> dt.date:
    shown = raw[:20]
    if len(raw) != 10:  # fromisoformat also takes 20261206 and other forms
        raise invalid(
            f"`{param}` must be a date as YYYY-MM-DD, got {shown!r}.", param, "invalid_date"
        )
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise invalid(
            f"`{param}` must be a date as YYYY-MM-DD, got {shown!r}.", param, "invalid_date"
        ) from None


def unavailable() -> RpcError:
    return RpcError(
        grpc.StatusCode.UNAVAILABLE,
        USAGE_HISTORY_UNAVAILABLE,
        "The usage history is unavailable right now; retry shortly.",
        {"code": "service_unavailable", "retry_after": "1"},
        retry_delay=1.0,
    )


def not_recorded() -> RpcError:
    return RpcError(
        grpc.StatusCode.UNIMPLEMENTED,
        USAGE_HISTORY_UNAVAILABLE,
        "This gateway keeps no usage ledger, so it has no usage history.",
        {"code": "usage_history_not_recorded"},
    )


async def fill_history(
    history: gateway_service_pb2.UsageHistory,
    store: UsageStore,
    uid: str,
    first: dt.date,
    last: dt.date,
) -> None:
    """Read the user's rollups and write them into `history` (days with usage, in order)."""
    try:
        rows = await store.history(uid, first, last)
    except UsageUnavailable:
        raise unavailable() from None
    history.from_date = first.isoformat()
    history.to_date = last.isoformat()
    day: gateway_service_pb2.UsageHistoryDay | None = None
    for row in rows:
        date = row.day.isoformat()
        if day is None or day.date != date:
            day = history.days.add(date=date)
        _add(day, row)
        entry = day.by_model.add(
            provider=row.provider,
            model=row.model,
            requests=row.requests,
            prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens,
            total_tokens=row.total_tokens,
            unpriced_requests=row.unpriced_requests,
            estimated_requests=row.estimated_requests,
        )
        if row.cost_usd is not None:
            entry.cost_usd = row.cost_usd


def _add(day: gateway_service_pb2.UsageHistoryDay, row: Rollup) -> None:
    day.requests += row.requests
    day.prompt_tokens += row.prompt_tokens
    day.completion_tokens += row.completion_tokens
    day.total_tokens += row.total_tokens
    day.unpriced_requests += row.unpriced_requests
    if row.cost_usd is not None:
        day.cost_usd = (day.cost_usd if day.HasField("cost_usd") else 0.0) + row.cost_usd
