"""A tiny OTLP/gRPC trace receiver for tests: what the three processes export, kept as sent.

It implements `opentelemetry.proto.collector.trace.v1.TraceService/Export` (the collector's own
API, generated code shipped with the exporter) on a free loopback port and keeps every request,
both as bytes (to search for secrets in exactly what left the process) and parsed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2


@dataclass(frozen=True)
class ExportedSpan:
    """One span as received, with the `service.name` of the process that sent it."""

    service: str
    span: trace_pb2.Span

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_id(self) -> str:
        return self.span.parent_span_id.hex()

    @property
    def attributes(self) -> dict[str, Any]:
        return {item.key: _value(item.value) for item in self.span.attributes}

    @property
    def events(self) -> dict[str, dict[str, Any]]:
        return {
            event.name: {item.key: _value(item.value) for item in event.attributes}
            for event in self.span.events
        }


def _value(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None


class _Service(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self._receiver.add(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver:
    """Start with `with OtlpReceiver() as receiver:`; `receiver.endpoint` is what
    OTEL_EXPORTER_OTLP_ENDPOINT should say."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self._raw: list[bytes] = []
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        # The generated registration function is untyped.
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _Service(self), self._server
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> OtlpReceiver:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(None)

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        with self._lock:
            self._requests.append(request)
            self._raw.append(request.SerializeToString())

    def raw(self) -> bytes:
        """Every export request as it arrived on the wire, concatenated."""
        with self._lock:
            return b"".join(self._raw)

    def spans(self) -> list[ExportedSpan]:
        with self._lock:
            requests = list(self._requests)
        return list(_spans(requests))

    def wait_for(
        self, done: Callable[[list[ExportedSpan]], bool], timeout: float = 15.0
    ) -> list[ExportedSpan]:
        """Poll until `done(spans)`; the spans either way (the assertions say what is missing)."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if done(spans) or time.monotonic() > deadline:
                return spans
            time.sleep(0.05)


def _spans(
    requests: list[trace_service_pb2.ExportTraceServiceRequest],
) -> Iterator[ExportedSpan]:
    for request in requests:
        for resource_spans in request.resource_spans:
            service = ""
            for item in resource_spans.resource.attributes:
                if item.key == "service.name":
                    service = item.value.string_value
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    yield ExportedSpan(service, span)
