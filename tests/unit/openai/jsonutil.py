"""Test helpers: a type-exact JSON comparison and the RpcError fields our assertions read."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from native1api.gateway.v1 import chat_pb2
from rpc_common.openai import ParsedRequest, request_from_json, validate_request
from rpc_common.status import RpcError


def canonical(value: Any) -> bytes:
    """Compact JSON with sorted keys: equal only if values AND number types match (1 != 1.0)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def base_body(**overrides: Any) -> dict[str, Any]:
    """A minimal valid body with `overrides` applied (a value of `...` deletes the key)."""
    body: dict[str, Any] = {
        "model": "@cf/meta/llama-3.2-3b-instruct",
        "messages": [{"role": "user", "content": "Hi"}],
    }
    for key, value in overrides.items():
        if value is ...:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def over_grpc(parsed: ParsedRequest) -> chat_pb2.ChatCompletionRequest:
    """The request as the gateway sees it after the gRPC hop (serialised and parsed again)."""
    return chat_pb2.ChatCompletionRequest.FromString(parsed.request.SerializeToString())


def rejection(body: Any) -> RpcError:
    """The RpcError that parsing or validating `body` raises (fails the test if none)."""
    with pytest.raises(RpcError) as info:
        validate_request(request_from_json(body).request)
    return info.value
