"""API keys: `authorization: Bearer KEY` on every call except health.

Health stays open so that load balancers and orchestrators can probe a keyed server;
reflection (which describes the whole API) needs the key like the API itself."""

from __future__ import annotations

import hmac

import grpc

OPEN_SERVICES = ("/grpc.health.v1.Health/",)


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, keys: list[str]):
        self._keys = [k.encode() for k in keys if k]

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method or ""
        if not self._keys or method.startswith(OPEN_SERVICES):
            return await continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        reason = refusal(metadata.get("authorization", ""), self._keys)
        if reason is None:
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        return _deny(handler, reason)


def refusal(header: str, keys: list[bytes], where: str = "metadata") -> str | None:
    """None when an `authorization` value carries one of `keys` (`Bearer KEY`), else why
    not. The gRPC interceptor and the HTTP gateway (`where="header"`) answer with it."""
    token = header[7:].strip().encode() if header.lower().startswith("bearer ") else b""
    if token and any(hmac.compare_digest(token, key) for key in keys):
        return None
    return f"missing `authorization: Bearer KEY` {where}" if not header else "API key is not valid"


def _deny(handler, reason: str):
    async def unary(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

    async def streaming(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)
        yield  # pragma: no cover - makes this an async generator

    if handler is None:
        return None
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary, handler.request_deserializer, handler.response_serializer)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(streaming, handler.request_deserializer, handler.response_serializer)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary, handler.request_deserializer, handler.response_serializer)
    return grpc.stream_stream_rpc_method_handler(streaming, handler.request_deserializer, handler.response_serializer)
