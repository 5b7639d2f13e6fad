"""Reading rich gRPC errors in tests."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from rpc_common.status import error_info


def error_details(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo every failure of ours carries (asserts it is there)."""
    status = rpc_status.from_call(error)  # works on aio errors: it reads code + trailers
    info = error_info(status)
    assert info is not None, f"no ErrorInfo on {error.code()}: {error.details()}"
    return info


def reason(error: grpc.aio.AioRpcError) -> str:
    """The stable ErrorInfo reason of a failed call."""
    return str(error_details(error).reason)
