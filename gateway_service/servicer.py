"""GatewayService: authenticate, validate, route, call the provider, normalise, log."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any, Final

import grpc
from google.protobuf.duration_pb2 import Duration

from gateway_service import tracing
from gateway_service.batching import ready_batches
from gateway_service.ledger import UsageLedger
from gateway_service.ledger.history import fill_history, not_recorded, requested_range
from gateway_service.limits import Admission
from gateway_service.limits.estimate import chunk_characters, prompt_tokens
from gateway_service.metrics import GatewayMetrics
from gateway_service.normalize import StreamNormalizer, new_completion_id
from gateway_service.providers.base import PROVIDER_ENUM, UpstreamCall
from gateway_service.request_log import RequestRecord
from gateway_service.routing import Route, Router
from gateway_service.vault_client import VaultClient
from native1api.gateway.v1 import chat_pb2, gateway_service_pb2, gateway_service_pb2_grpc
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


_NO_PROVIDER: Final = gateway_service_pb2.PROVIDER_UNSPECIFIED  # said on the first message only


async def _normalized(
    upstream: AsyncIterator[chat_pb2.ChatCompletionChunk], normalizer: StreamNormalizer
) -> AsyncIterator[chat_pb2.ChatCompletionChunk]:
    """The provider's chunks as the client gets them (role first, one finish, usage last)."""
    async for chunk in upstream:
        for out in normalizer.feed(chunk):
            yield out
    for out in normalizer.finish():
        yield out


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
        ledger: UsageLedger | None = None,
    ) -> None:
        self._ledger = ledger
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
        if record.admitted and self._ledger is not None:
            self._ledger.record(record)  # an O(1) append; written off the request path

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
            with tracing.admission(caller.uid):
                lease = await self._admission.admit(
                    caller, req, provider=route.provider.name, byok=route.byok
                )
            # From here on every end writes a ledger record (an unmetered lease has no estimate).
            record.routed(route.model, route.byok, lease.prompt_estimate or prompt_tokens(req))
            head = _send_head(context, lease.metadata)
            try:
                call = UpstreamCall(req, route.model, route.api_key, route.byok, record.request_id)
                upstream_started = time.perf_counter()
                with tracing.upstream(route, req.model) as traced:
                    completion = await route.provider.complete(call)
                    traced.completed(completion)
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
        except Exception:
            record.status = "INTERNAL"  # what unary_errors answers; never logged or billed as OK
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
            with tracing.admission(caller.uid):
                lease = await self._admission.admit(
                    caller, req, provider=route.provider.name, byok=route.byok
                )
            record.routed(route.model, route.byok, lease.prompt_estimate or prompt_tokens(req))
            streamed = 0  # characters generated, to settle a stream cut before its usage
            normalizer = StreamNormalizer(req.model, route.provider.name)
            head = _send_head(context, lease.metadata)
            try:
                call = UpstreamCall(req, route.model, route.api_key, route.byok, record.request_id)
                provider = PROVIDER_ENUM[route.provider.name]
                response = gateway_service_pb2.StreamChatCompletionResponse
                together = request.allow_batches  # several ready chunks may share a message
                first = True
                upstream = route.provider.stream(call)
                batches = ready_batches(_normalized(upstream, normalizer))
                traced = tracing.upstream(route, req.model)
                self._metrics.streams_in_flight.inc()
                try:
                    async for batch in batches:
                        for out in batch:
                            streamed += chunk_characters(out)
                        if first:
                            traced.first_token()
                            await _head_sent(head)  # the head goes before any chunk
                        if together:
                            yield response(
                                chunk=batch[0],
                                more_chunks=batch[1:],
                                provider=provider if first else _NO_PROVIDER,
                            )
                            first = False
                        else:
                            for out in batch:
                                yield response(
                                    chunk=out, provider=provider if first else _NO_PROVIDER
                                )
                                first = False
                finally:
                    # Closing the provider's generator closes the upstream connection at once,
                    # also when the gRPC call was cancelled mid-stream.
                    await batches.aclose()
                    await upstream.aclose()
                    self._metrics.streams_in_flight.dec()
                    traced.end(normalizer.usage, normalizer.finish_reasons)
                    record.usage = normalizer.usage
            finally:
                # Every end frees the slot: last byte, upstream error, client gone, deadline.
                record.streamed_characters = streamed  # the ledger's estimate when cut
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
        days = requested_range(request, dt.datetime.now(dt.UTC).date())
        response = await self._admission.usage(caller)
        if days is not None:
            if self._ledger is None:
                raise not_recorded()
            await self._ledger.flushed(within=2.0)  # include the caller's latest completions
            await fill_history(response.history, self._ledger.store, caller.uid, *days)
        return response

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
