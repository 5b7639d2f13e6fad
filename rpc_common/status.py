"""Rich gRPC errors: a status code plus a `google.rpc.ErrorInfo` with a stable reason.

Every failure our services return goes through `abort`, so callers (the REST bridge, internal
gRPC clients) can rely on `ErrorInfo.reason` instead of parsing messages.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "native1api.dev"


class RpcError(Exception):
    """A failure meant for the caller: raised in domain code, turned into a status at the edge.

    `message` is shown to the caller, so it must never contain a secret. `retry_delay`
    (seconds), when set, is also sent as a `google.rpc.RetryInfo` detail, the standard way to
    tell a gRPC client when to retry.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        metadata: Mapping[str, str] | None = None,
        *,
        retry_delay: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.metadata = dict(metadata or {})
        self.retry_delay = retry_delay


RETRY_PUSHBACK: Final = "grpc-retry-pushback-ms"
NO_RETRY: Final = (RETRY_PUSHBACK, "-1")
"""Trailing metadata of every error we send: a negative pushback tells a gRPC client's retry
policy not to retry this call (gRFC A6). A status our service chose (UNAVAILABLE because an
upstream or a dependency is down, say) is an answer: repeating it on another replica would
repeat the upstream call or hammer the dead dependency. Calls lost with a broken connection
carry no such trailer and are retried on another replica (`rpc_common.channels`)."""


@dataclass(frozen=True)
class _Status(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def to_status(error: RpcError) -> grpc.Status:
    """Build the `grpc.Status` (with an ErrorInfo detail, and the no-retry pushback) that
    `context.abort_with_status` sends."""
    info = error_details_pb2.ErrorInfo(
        reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    details = [detail]
    if error.retry_delay is not None:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromNanoseconds(int(error.retry_delay * 1_000_000_000))
        retry_detail = any_pb2.Any()
        retry_detail.Pack(retry)
        details.append(retry_detail)
    status = status_pb2.Status(code=error.code.value[0], message=error.message, details=details)
    built = rpc_status.to_status(status)
    return _Status(built.code, built.details, (*built.trailing_metadata, NO_RETRY))


async def abort(context: grpc.aio.ServicerContext[object, object], error: RpcError) -> NoReturn:
    """Abort the RPC with `error`'s code, message and ErrorInfo detail."""
    await context.abort_with_status(to_status(error))
    raise AssertionError("abort_with_status returned")  # pragma: no cover


def error_info(call_status: status_pb2.Status | None) -> error_details_pb2.ErrorInfo | None:
    """Return the first ErrorInfo detail of a received status, if any."""
    if call_status is None:
        return None
    for detail in call_status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


_LOGGER = logging.getLogger(__name__)
_Self = TypeVar("_Self")
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
_Ctx = TypeVar("_Ctx", bound="grpc.aio.ServicerContext[Any, Any]")

INTERNAL = RpcError(grpc.StatusCode.INTERNAL, "INTERNAL", "internal error; it has been logged")


def unary_errors(
    method: Callable[[_Self, _Req, _Ctx], Awaitable[_Resp]],
) -> Callable[[_Self, _Req, _Ctx], Awaitable[_Resp]]:
    """Turn `RpcError` into its status and any other exception into a logged, generic INTERNAL.

    This is the single boundary where domain errors become gRPC statuses.
    """

    @functools.wraps(method)
    async def wrapper(self: _Self, request: _Req, context: _Ctx) -> _Resp:
        try:
            return await method(self, request, context)
        except RpcError as error:
            await abort(context, error)
        except grpc.aio.AbortError:
            raise  # the RPC was already aborted with its own status (e.g. by `authenticate`)
        except Exception:
            _LOGGER.exception("unhandled error in %s", method.__qualname__)
            await abort(context, INTERNAL)

    return wrapper


def stream_errors(
    method: Callable[[_Self, _Req, _Ctx], AsyncIterator[_Resp]],
) -> Callable[[_Self, _Req, _Ctx], AsyncIterator[_Resp]]:
    """`unary_errors` for server-streaming methods (async generators)."""

    @functools.wraps(method)
    async def wrapper(self: _Self, request: _Req, context: _Ctx) -> AsyncIterator[_Resp]:
        try:
            async for item in method(self, request, context):
                yield item
        except RpcError as error:
            await abort(context, error)
        except grpc.aio.AbortError:
            raise  # the RPC was already aborted with its own status (e.g. by `authenticate`)
        except Exception:
            _LOGGER.exception("unhandled error in %s", method.__qualname__)
            await abort(context, INTERNAL)

    return wrapper
