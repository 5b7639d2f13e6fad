"""GatewayService: authenticate, validate, route, call the provider, normalise, log."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration

from gateway_service.limits import Admission
from gateway_service.limits.estimate import chunk_characters
from gateway_service.metrics import GatewayMetrics
from gateway_service.normalize import StreamNormalizer, new_completion_id
from gateway_service.providers.base import PROVIDER_ENUM, UpstreamCall
from gateway_service.request_log import RequestRecord
from gateway_service.routing import Route, Router
from gateway_service.vault_client import VaultClient
from native1api.gateway.v1 import gateway_service_pb2, gateway_service_pb2_grpc
from rpc_common.auth import AppCheck, Caller, TokenVerifier, authenticate, require_app_check
from rpc_common.openai import validate_request
from rpc_common.request_id import new_request_id, request_id_or_new
from rpc_common.status import RpcError, stream_errors, unary_errors

Context = grpc.aio.ServicerContext[Any, Any]


def _request_id(context: Context) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id":
            return request_id_or_new(value)  # a forged id could forge log fields
    return new_request_id()


def _send_head(
    context: Context, metadata: tuple[tuple[str, str], ...]
) -> asyncio.Task[None] | None:
    """Start sending the caller's `x-ratelimit-*` state as initial metadata while the upstream
    works, instead of making the request wait for that write; `_head_sent` joins it."""
    if not metadata:
        return None
    return asyncio.get_running_loop().create_task(context.send_initial_metadata(metadata))


async def _head_sent(head: asyncio.Task[None] | None) -> None:
    """Wait for the head (it goes before any message, and before the call ends)."""
    if head is None:
        return
    if not head.done():
        await asyncio.wait((head,))
    if not head.cancelled():
        head.exception()  # retrieved: if the call died meanwhile, the call reports it


class GatewayServicer(gateway_service_pb2_grpc.GatewayServiceServicer):
    """Implements GatewayService for the user named by each call's ID token."""

    def __init__(
        self,
        *,
        verifier: TokenVerifier,
        vault: VaultClient,
        router: Router,
        metrics: GatewayMetrics,
        admission: Admission,
        app_check: AppCheck | None = None,
    ) -> None:
        self._verifier = verifier
        self._app_check = app_check
        self._vault = vault
        self._router = router
        self._metrics = metrics
        self._admission = admission

    def _finish(self, record: RequestRecord, started: float) -> None:
        record.latency_ms = (time.perf_counter() - started) * 1000
        record.emit()
        self._metrics.observe(record)

    async def _route(self, caller: Caller, model: str) -> Route:
        return self._router.route(model, await self._vault.byok_key(caller))

    @unary_errors
    async def CreateChatCompletion(
        self, request: gateway_service_pb2.CreateChatCompletionRequest, context: Context
    ) -> gateway_service_pb2.CreateChatCompletionResponse:
        started = time.perf_counter()
        record = RequestRecord(_request_id(context), "", "CreateChatCompletion")
        try:
            caller = await authenticate(context, self._verifier)
            record.uid = caller.uid
            await require_app_check(context, self._app_check)
            req = request.request
            validate_request(req)
            record.model = req.model  # only once validated: it goes into logs and labels
            route = await self._route(caller, req.model)
            record.provider = route.provider.name
            lease = await self._admission.admit(
                caller, req, provider=route.provider.name, byok=route.byok
            )
            head = _send_head(context, lease.metadata)
            try:
                call = UpstreamCall(req, route.model, route.api_key, route.byok, record.request_id)
                upstream_started = time.perf_counter()
                completion = await route.provider.complete(call)
                upstream = time.perf_counter() - upstream_started
                record.upstream_ms = upstream * 1000
                record.usage = completion.usage if completion.HasField("usage") else None
            finally:
                # Every end frees the slot: success, upstream error, client cancel, deadline.
                lease.settle(record.usage)
                await _head_sent(head)
            completion.model = req.model
            if not completion.id:
                completion.id = new_completion_id()
            return gateway_service_pb2.CreateChatCompletionResponse(
                completion=completion,
                provider=PROVIDER_ENUM[route.provider.name],
                upstream_duration=Duration(
                    seconds=int(upstream), nanos=int((upstream % 1) * 1_000_000_000)
                ),
            )
        except RpcError as error:
            record.status, record.reason = error.code.name, error.reason
            raise
        except asyncio.CancelledError:
            record.status = "CANCELLED"  # the client went away, or its deadline passed
            raise
        finally:
            self._finish(record, started)

    @stream_errors
    async def StreamChatCompletion(
        self, request: gateway_service_pb2.StreamChatCompletionRequest, context: Context
    ) -> AsyncIterator[gateway_service_pb2.StreamChatCompletionResponse]:
        started = time.perf_counter()
        record = RequestRecord(_request_id(context), "", "StreamChatCompletion")
        try:
            caller = await authenticate(context, self._verifier)
            record.uid = caller.uid
            await require_app_check(context, self._app_check)
            req = request.request
            validate_request(req)
            record.model = req.model  # only once validated: it goes into logs and labels
            route = await self._route(caller, req.model)
            record.provider = route.provider.name
            lease = await self._admission.admit(
                caller, req, provider=route.provider.name, byok=route.byok
            )
            streamed = 0  # characters generated, to settle a stream cut before its usage
            normalizer = StreamNormalizer(req.model, route.provider.name)
            head = _send_head(context, lease.metadata)
            try:
                call = UpstreamCall(req, route.model, route.api_key, route.byok, record.request_id)
                provider = PROVIDER_ENUM[route.provider.name]
                response = gateway_service_pb2.StreamChatCompletionResponse
                first = True
                upstream = route.provider.stream(call)
                self._metrics.streams_in_flight.inc()
                try:
                    async for chunk in upstream:
                        for out in normalizer.feed(chunk):
                            streamed += chunk_characters(out)
                            if first:
                                first = False
                                await _head_sent(head)  # the head goes before any chunk
                                yield response(chunk=out, provider=provider)
                            else:
                                yield response(chunk=out)
                    for out in normalizer.finish():
                        yield response(chunk=out)
                finally:
                    # Closing the provider's generator closes the upstream connection at once,
                    # also when the gRPC call was cancelled mid-stream.
                    await upstream.aclose()
                    self._metrics.streams_in_flight.dec()
                    record.usage = normalizer.usage
            finally:
                # Every end frees the slot: last byte, upstream error, client gone, deadline.
                lease.settle(normalizer.usage, streamed)
                await _head_sent(head)
        except RpcError as error:
            record.status, record.reason = error.code.name, error.reason
            raise
        except (asyncio.CancelledError, GeneratorExit):
            record.status = "CANCELLED"  # the client went away
            raise
        except Exception:
            record.status = "INTERNAL"
            raise
        finally:
            self._finish(record, started)

    @unary_errors
    async def GetUsage(
        self, request: gateway_service_pb2.GetUsageRequest, context: Context
    ) -> gateway_service_pb2.GetUsageResponse:
        caller = await authenticate(context, self._verifier)
        return await self._admission.usage(caller)

    @unary_errors
    async def ListModels(
        self, request: gateway_service_pb2.ListModelsRequest, context: Context
    ) -> gateway_service_pb2.ListModelsResponse:
        caller = await authenticate(context, self._verifier)
        route = self._router.for_listing(await self._vault.byok_key(caller))
        models = await route.provider.list_models(route.api_key, byok=route.byok)
        return gateway_service_pb2.ListModelsResponse(
            models=models, provider=PROVIDER_ENUM[route.provider.name]
        )
