"""Requests that are not valid protobuf: INVALID_ARGUMENT, one rate-limited log line.

grpc calls a method's request deserializer before the handler runs; when it raises, the
caller gets UNKNOWN and the log a traceback (unary), or a bidi stream hangs. RequestGuard
swaps every method's deserializer for one that never raises: a frame that does not parse
becomes a `Malformed` value, and the guard answers it with
INVALID_ARGUMENT "request is not a valid steernpc.v1.SayRequest" before (unary requests)
or while (streamed requests) the handler runs.
"""

from __future__ import annotations

import inspect
import logging
import time

import grpc

log = logging.getLogger("steernpc.server")


class Malformed:
    """What a deserializer gives for bytes that are not a `type_name` message."""

    def __init__(self, type_name: str):
        self.message = f"request is not a valid {type_name}"


class MalformedFrame(Exception):
    """Raised from a guarded request stream at a malformed frame; the guard turns it into
    INVALID_ARGUMENT when it leaves the handler."""

    def __init__(self, frame: Malformed):
        self.message = frame.message
        super().__init__(frame.message)


class RateLimitedLog:
    """One warning per `interval` seconds at most, with the count of the ones held back,
    so that nobody on the port can flood the log."""

    def __init__(self, interval: float = 60.0):
        self.interval = interval
        self._last = float("-inf")
        self._held = 0

    def warning(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self._held += 1
            return
        more = f" (and {self._held} more since the last report)" if self._held else ""
        log.warning("%s%s", message, more)
        self._last, self._held = now, 0


def _type_name(deserializer) -> str:
    message_class = getattr(deserializer, "__self__", None)  # pb.X.FromString is a bound classmethod
    descriptor = getattr(message_class, "DESCRIPTOR", None)
    return descriptor.full_name if descriptor is not None else "request message"


def _safe(deserializer):
    if deserializer is None:
        return None
    type_name = _type_name(deserializer)

    def deserialize(data: bytes):
        try:
            return deserializer(data)
        except Exception:  # DecodeError, bad UTF-8, anything a parser may raise
            return Malformed(type_name)

    return deserialize


async def _frames(request_iterator):
    async for frame in request_iterator:
        if isinstance(frame, Malformed):
            raise MalformedFrame(frame)
        yield frame


async def _maybe_await(value):
    return await value if inspect.isawaitable(value) else value


class RequestGuard(grpc.aio.ServerInterceptor):
    def __init__(self, log_interval: float = 60.0):
        self._log = RateLimitedLog(log_interval)

    async def _reject(self, context, method: str, message: str):
        self._log.warning(f"refused a malformed request to {method}: {message}")
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method or "?"
        inner = handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
        deserialize = _safe(handler.request_deserializer)
        reject = self._reject

        if handler.request_streaming:
            if inspect.isasyncgenfunction(inner):

                async def behaviour(request_iterator, context):
                    try:
                        async for response in inner(_frames(request_iterator), context):
                            yield response
                    except MalformedFrame as exc:
                        await reject(context, method, exc.message)

            else:

                async def behaviour(request_iterator, context):
                    try:
                        return await _maybe_await(inner(_frames(request_iterator), context))
                    except MalformedFrame as exc:
                        await reject(context, method, exc.message)

        elif inspect.isasyncgenfunction(inner):

            async def behaviour(request, context):
                if isinstance(request, Malformed):
                    await reject(context, method, request.message)
                    return
                async for response in inner(request, context):
                    yield response

        else:

            async def behaviour(request, context):
                if isinstance(request, Malformed):
                    await reject(context, method, request.message)
                    return None
                return await _maybe_await(inner(request, context))

        make = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(handler.request_streaming, handler.response_streaming)]
        return make(behaviour, deserialize, handler.response_serializer)
