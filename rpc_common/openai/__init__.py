"""OpenAI Chat Completions JSON <-> the `native1api.gateway.v1` chat protos.

Pure functions, no I/O. The REST bridge parses client bodies with `request_from_json` and
renders replies with `completion_to_json` / `chunk_to_json_bytes`; the gateway applies
`validate_request` to every request, builds upstream bodies with `request_to_json` and reads
provider replies with `completion_from_json` / `chunk_from_json`.
"""

from rpc_common.openai.chunk import chunk_from_json, chunk_to_json, chunk_to_json_bytes
from rpc_common.openai.errors import UpstreamFormatError, UpstreamReportedError
from rpc_common.openai.names import (
    FINISH_REASON_ALIASES,
    FINISH_REASON_NAMES,
    FINISH_REASON_VALUES,
    ROLE_NAMES,
    ROLE_VALUES,
)
from rpc_common.openai.request import ParsedRequest, request_from_json
from rpc_common.openai.request_render import request_to_json
from rpc_common.openai.response import completion_from_json, completion_to_json
from rpc_common.openai.usage import usage_from_json, usage_to_json
from rpc_common.openai.validate import validate_request

__all__ = [
    "FINISH_REASON_ALIASES",
    "FINISH_REASON_NAMES",
    "FINISH_REASON_VALUES",
    "ROLE_NAMES",
    "ROLE_VALUES",
    "ParsedRequest",
    "UpstreamFormatError",
    "UpstreamReportedError",
    "chunk_from_json",
    "chunk_to_json",
    "chunk_to_json_bytes",
    "completion_from_json",
    "completion_to_json",
    "request_from_json",
    "request_to_json",
    "usage_from_json",
    "usage_to_json",
    "validate_request",
]
