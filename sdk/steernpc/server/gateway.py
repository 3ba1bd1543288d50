"""The HTTP/JSON + Server-Sent Events gateway, and the studio page it serves.

For web and WebGL builds, where gRPC over HTTP/2 is not available. It runs in the `steernpc
serve` process (`--studio-port`, or `steernpc studio`) on the same asyncio loop as the gRPC
server and calls the same NpcServicer methods (`create_session(request)`,
`say_events(request)` ...): one conversation layer, one validation (`checked`, the
servicer's own checks), one set of sessions, locks and running interactions. A session made
over HTTP can be continued over gRPC and the other way round.

Bodies are the proto3 JSON mapping of the steernpc.v1 request messages (field names as in
the proto); answers are the response messages the same way. A RequestError's gRPC status
becomes the HTTP status of google.rpc's mapping (STATUS_HTTP) with the same message:

    {"error": {"code": "NOT_FOUND", "status": 404, "message": "session 'x' not found ..."}}

Say answers `text/event-stream`: `delta` events, then one `done` (or an `error` event if
generation fails after the stream began); a problem found before the first event is a
plain HTTP error instead. A client that goes away stops its reply at the next step, and
the text streamed so far stays in the session (as with gRPC).

Security: bound to loopback by default; the serve command refuses another address without
API keys (`authorization: Bearer KEY`, the same keys as gRPC; /healthz stays open like gRPC
health). On loopback, requests must name a loopback Host (DNS rebinding), and any request
that changes something must come from the page's own origin and carry JSON (CSRF from other
web pages). Bodies are limited to limits.MAX_HTTP_BODY bytes (413). Persona files are
written only through server/persona_files.py (inside the personas folder), and only when
editing is on (the default on loopback, `--allow-edit` elsewhere).

The studio routes (`/`, `/static/...`, `/api/v1/personas...`, `/api/v1/steerability...`,
`.../resolve`, `/api/v1/status`) serve the page in steernpc/studio/.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Awaitable, Callable

import grpc
from google.protobuf import json_format
from sse_starlette.sse import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from steernpc.attributes import InvalidAttribute
from steernpc.limits import MAX_HTTP_BODY, MAX_NAME, LimitError, check_attribute_map, check_length, echo
from steernpc.server.auth import refusal
from steernpc.server.persona_files import PathRefused, PersonaFolder
from steernpc.server.servicer import NpcServicer, RequestError, checked
from steernpc.sessions import StoreError
from steernpc.wire import pb

log = logging.getLogger("steernpc.gateway")

API = "/api/v1"

# google.rpc.Code -> HTTP (the mapping of google/rpc/code.proto).
STATUS_HTTP = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

STATIC = resources.files("steernpc") / "studio"
_END = object()


class HttpError(Exception):
    """An answer that is not a gRPC status (body too large, wrong media type, ...)."""

    def __init__(self, status: int, code: str, message: str, **extra: Any):
        self.status, self.code, self.message, self.extra = status, code, message, extra
        super().__init__(message)


def error_body(code: str, status: int, message: str, **extra: Any) -> dict:
    return {"error": {"code": code, "status": status, "message": message, **extra}}


def _status_error(exc: RequestError) -> HttpError:
    return HttpError(STATUS_HTTP.get(exc.code, 500), exc.code.name, exc.message)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class LoadState:
    """What the page's progress indicator shows while the model loads."""

    phase: str = "starting"
    started: float = field(default_factory=time.monotonic)
    ready_after: float | None = None  # seconds the load took, once ready
    error: str | None = None
    model: str = ""
    backend: str = ""

    def ready(self) -> None:
        self.ready_after = time.monotonic() - self.started
        self.phase = "ready"

    def as_dict(self) -> dict:
        ready = self.ready_after is not None
        return {
            "ready": ready,
            "phase": self.phase,
            "elapsed_s": round(self.ready_after if ready else time.monotonic() - self.started, 2),
            "error": self.error,
            "model": self.model,
            "backend": self.backend,
        }


class PhaseLog(logging.Handler):
    """Turns the runtime's log lines during the load into the progress indicator's phase."""

    def __init__(self, state: LoadState):
        super().__init__(logging.INFO)
        self.state = state

    def emit(self, record: logging.LogRecord) -> None:
        if self.state.ready_after is None:
            with contextlib.suppress(Exception):
                self.state.phase = record.getMessage()[:200]


@dataclass
class GatewayOptions:
    host: str = "127.0.0.1"
    port: int = 0
    api_keys: list[str] = field(default_factory=list)
    allow_edit: bool = False
    steerability: Path | None = None  # a `steernpc eval steerability --out` folder

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def edit(self) -> bool:
        """Persona writes: on loopback by default, elsewhere only with --allow-edit."""
        return self.allow_edit or self.loopback


# -- request helpers ------------------------------------------------------------------------------


async def read_json(request: Request, limit: int = MAX_HTTP_BODY) -> dict:
    """The body as a JSON object ({} when empty); 413 past `limit` bytes (counted as they
    arrive, whatever Content-Length says), 415 when it is not sent as JSON."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise HttpError(413, "RESOURCE_EXHAUSTED", f"request body is too large: {int(length)} bytes (at most {limit} bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, "RESOURCE_EXHAUSTED", f"request body is too large: over {limit} bytes (at most {limit} bytes)")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        return {}
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise HttpError(415, "INVALID_ARGUMENT", "send the request body as JSON (Content-Type: application/json)")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HttpError(400, "INVALID_ARGUMENT", f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HttpError(400, "INVALID_ARGUMENT", "request body must be a JSON object")
    return data


def parse_message(data: dict, message):
    """A JSON object as a steernpc.v1 request (proto3 JSON mapping; unknown fields refused)."""
    try:
        return json_format.ParseDict(data, message)
    except json_format.ParseError as exc:
        raise HttpError(400, "INVALID_ARGUMENT", f"request body: {exc}") from None


def to_json(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


class Gateway:
    """The Starlette app over one NpcServicer."""

    def __init__(self, servicer: NpcServicer, state: LoadState, options: GatewayOptions, personas: PersonaFolder):
        self.servicer = servicer
        self.state = state
        self.options = options
        self.personas = personas
        self._keys = [k.encode() for k in options.api_keys if k]
        self._pumps: set[asyncio.Task] = set()
        self.app = Starlette(routes=self._routes(), exception_handlers={404: self._not_found, 405: self._not_allowed})
        self.app.add_middleware(_Guard, gateway=self)

    # -- routes ---------------------------------------------------------------------------------
    def _routes(self) -> list:
        r = Route
        return [
            r("/", self.index),
            r("/healthz", self.healthz),
            r(f"{API}/status", self.api(self.status)),
            r(f"{API}/characters", self.api(self.list_characters)),
            r(f"{API}/characters/{{character_id}}", self.api(self.get_character)),
            r(f"{API}/characters/{{character_id}}/resolve", self.api(self.resolve), methods=["POST"]),
            r(f"{API}/sessions", self.api(self.create_session), methods=["POST"]),
            r(f"{API}/sessions/import", self.api(self.import_session), methods=["POST"]),
            r(f"{API}/sessions/{{session_id}}", self.api(self.get_session), methods=["GET"]),
            r(f"{API}/sessions/{{session_id}}", self.api(self.delete_session), methods=["DELETE"]),
            r(f"{API}/sessions/{{session_id}}/steer", self.api(self.steer), methods=["POST"]),
            r(f"{API}/sessions/{{session_id}}/say", self.api(self.say), methods=["POST"]),
            r(f"{API}/sessions/{{session_id}}/export", self.api(self.export_session), methods=["GET"]),
            r(f"{API}/interactions/{{interaction_id}}/cancel", self.api(self.cancel), methods=["POST"]),
            r(f"{API}/personas", self.api(self.list_personas)),
            r(f"{API}/personas/file", self.api(self.read_persona), methods=["GET"]),
            r(f"{API}/personas/file", self.api(self.save_persona), methods=["PUT"]),
            r(f"{API}/personas/validate", self.api(self.validate_persona), methods=["POST"]),
            r(f"{API}/steerability", self.api(self.steerability)),
            r(f"{API}/steerability/plots/{{name}}", self.api(self.steerability_plot)),
            Mount("/static", app=StaticFiles(directory=str(STATIC)), name="static"),
        ]

    def api(self, handler: Callable[[Request], Awaitable[Any]]):
        """A route body returning a protobuf message, a dict or a Response; every error it
        raises becomes the JSON error body with its HTTP status."""

        async def endpoint(request: Request) -> Response:
            try:
                result = await handler(request)
            except HttpError as exc:
                return JSONResponse(error_body(exc.code, exc.status, exc.message, **exc.extra), exc.status)
            except RequestError as exc:
                err = _status_error(exc)
                return JSONResponse(error_body(err.code, err.status, err.message), err.status)
            except StoreError as exc:
                return JSONResponse(error_body("UNAVAILABLE", 503, f"session store unavailable: {exc}"), 503)
            if isinstance(result, Response):
                return result
            if not isinstance(result, dict):
                result = to_json(result)
            return JSONResponse(result)

        return endpoint

    async def _not_found(self, request: Request, exc) -> Response:
        return JSONResponse(error_body("NOT_FOUND", 404, f"no route {request.method} {echo(request.url.path, 80)}"), 404)

    async def _not_allowed(self, request: Request, exc) -> Response:
        return JSONResponse(error_body("UNIMPLEMENTED", 405, f"{request.method} is not allowed on {echo(request.url.path, 80)}"), 405)

    # -- the page -------------------------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        return FileResponse(str(STATIC / "index.html"), headers={"Cache-Control": "no-store"})

    async def healthz(self, request: Request) -> Response:
        ready = self.servicer.backend is not None
        return JSONResponse({"status": "SERVING" if ready else "NOT_SERVING"}, 200 if ready else 503)

    async def status(self, request: Request) -> dict:
        return {
            **self.state.as_dict(),
            "format": self.servicer.fmt if self.servicer.backend is not None else None,
            "characters": len(self.servicer.characters.all()),
            "personas": str(self.personas.folder),
            "edit": self.options.edit,
            "auth": bool(self._keys),
        }

    # -- characters -------------------------------------------------------------------------------
    async def list_characters(self, request: Request):
        return await self._call(self.servicer.list_characters, pb.ListCharactersRequest())

    async def get_character(self, request: Request) -> dict:
        req = pb.GetCharacterRequest(character_id=request.path_params["character_id"])
        character = to_json(await self._call(self.servicer.get_character, req))
        persona = self.servicer.characters.get(req.character_id)
        # The studio also shows the card, the moods' values and the source file (not on gRPC).
        character["studio"] = {
            "card": persona.card(),
            "moods": persona.moods,
            "limits": {k: {"min": lo, "max": hi} for k, (lo, hi) in persona.limits.items()},
            "profile": persona.attributes,
            "source": persona.source,
            "file": self._relative(persona.source),
            "schema_name": persona.schema.name,
            "generation": {k: getattr(persona.generation, k) for k in type(persona.generation).RULES},
        }
        return character

    async def resolve(self, request: Request) -> dict:
        """The vector layer by layer: defaults -> persona -> mood -> steer -> override ->
        limits, with every value a limit changed. Body: {mood, steer: {..}, attributes: {..}}
        (attributes: a per-reply override, as in say)."""
        body = await read_json(request)
        req = pb.GetCharacterRequest(character_id=request.path_params["character_id"])
        checked(req)
        persona = self.servicer._persona(req.character_id)
        mood = body.get("mood") or ""
        steer, override = body.get("steer") or {}, body.get("attributes") or {}
        try:
            if not isinstance(mood, str):
                raise LimitError("mood", "mood must be a string")
            check_length("mood", mood, MAX_NAME)
            for name, layer in (("steer", steer), ("attributes", override)):
                if not isinstance(layer, dict):
                    raise LimitError(name, f"{name} must be an object of attribute: value")
                check_attribute_map(name, layer)
            persona.schema.check_vector(steer, "steer")
            persona.schema.check_vector(override, "attributes")
            layers = persona.resolve_layers(mood=mood or None, steer=steer, override=override)
        except (LimitError, InvalidAttribute) as exc:
            raise HttpError(400, "INVALID_ARGUMENT", str(exc)) from None
        before = dict(layers[-2][1])
        final = layers[-1][1]
        clamped = {
            name: {"from": before[name], "to": final[name], "limit": f"{persona.limits[name][0]}..{persona.limits[name][1]}"}
            for name in final
            if before[name] != final[name]
        }
        return {
            "character_id": persona.id,
            "order": [name for name, _ in layers],
            "layers": [{"name": name, "vector": vector} for name, vector in layers],
            "vector": final,
            "clamped": clamped,
            "labels": persona.schema.encode(final),
        }

    # -- sessions -------------------------------------------------------------------------------
    async def create_session(self, request: Request):
        req = parse_message(await read_json(request), pb.CreateSessionRequest())
        return await self._call(self.servicer.create_session, req)

    async def get_session(self, request: Request):
        return await self._call(self.servicer.get_session, pb.GetSessionRequest(session_id=request.path_params["session_id"]))

    async def delete_session(self, request: Request):
        return await self._call(self.servicer.delete_session, pb.DeleteSessionRequest(session_id=request.path_params["session_id"]))

    async def steer(self, request: Request):
        req = parse_message(await read_json(request), pb.SteerRequest())
        req.session_id = request.path_params["session_id"]
        return await self._call(self.servicer.steer, req)

    async def export_session(self, request: Request):
        return await self._call(self.servicer.export_session, pb.ExportSessionRequest(session_id=request.path_params["session_id"]))

    async def import_session(self, request: Request):
        body = await read_json(request)
        data = body.get("data")
        if not isinstance(data, str) or not data:
            raise HttpError(400, "INVALID_ARGUMENT", "data is missing: send the snapshot from export as {\"data\": BASE64}")
        try:
            raw = base64.b64decode(data, validate=True)
        except ValueError:
            raise HttpError(400, "INVALID_ARGUMENT", "data is not base64 (send export's `data` unchanged)") from None
        return await self._call(self.servicer.import_session, pb.ImportSessionRequest(data=raw))

    async def cancel(self, request: Request):
        return await self._call(self.servicer.cancel, pb.CancelRequest(interaction_id=request.path_params["interaction_id"]))

    async def _call(self, method, request):
        checked(request)
        return await method(request)

    # -- say: Server-Sent Events ------------------------------------------------------------------
    async def say(self, request: Request) -> Response:
        req = parse_message(await read_json(request), pb.SayRequest())
        req.session_id = request.path_params["session_id"]
        checked(req)
        if not req.interaction_id:
            req.interaction_id = uuid.uuid4().hex
        queue: asyncio.Queue = asyncio.Queue()
        # The reply runs in its own task, as a gRPC handler does: a client that goes away
        # cancels it once, and its cleanup (stop the reply, keep the text so far) runs in
        # full, outside the response's cancel scope.
        pump = asyncio.create_task(self._pump(req, queue))
        self._pumps.add(pump)
        pump.add_done_callback(self._pumps.discard)
        first = await queue.get()
        if isinstance(first, BaseException):  # refused before anything streamed: a plain HTTP error
            raise first
        return EventSourceResponse(
            self._events(first, queue, pump), ping=15, headers={"Cache-Control": "no-store", "X-Interaction-Id": req.interaction_id},
        )  # fmt: skip

    async def _pump(self, req: pb.SayRequest, queue: asyncio.Queue) -> None:
        try:
            async with contextlib.aclosing(self.servicer.say_events(req)) as events:
                async for event in events:
                    queue.put_nowait(event)
            queue.put_nowait(_END)
        except RequestError as exc:
            queue.put_nowait(_status_error(exc))
        except StoreError as exc:
            queue.put_nowait(HttpError(503, "UNAVAILABLE", f"session store unavailable: {exc}"))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never leave the client waiting on a queue nobody fills
            log.exception("say failed")
            queue.put_nowait(HttpError(500, "INTERNAL", f"generation failed: {type(exc).__name__}"))

    async def _events(self, first, queue: asyncio.Queue, pump: asyncio.Task):
        item = first
        try:
            while item is not _END:
                if isinstance(item, HttpError):
                    yield ServerSentEvent(json.dumps(error_body(item.code, item.status, item.message)["error"]), event="error")
                    return
                yield self._sse(item)
                item = await queue.get()
        finally:
            if not pump.done():  # the client went away: the reply stops at its next step
                pump.cancel()

    @staticmethod
    def _sse(event: pb.SayEvent) -> ServerSentEvent:
        kind = event.WhichOneof("event")
        data = to_json(getattr(event, kind))
        data["interaction_id"] = event.interaction_id
        return ServerSentEvent(json.dumps(data), event=kind)

    async def close(self) -> None:
        for task in list(self._pumps):
            task.cancel()
        if self._pumps:
            await asyncio.gather(*self._pumps, return_exceptions=True)

    # -- persona files (the editor) ---------------------------------------------------------------
    def _relative(self, source: str) -> str | None:
        with contextlib.suppress(ValueError, OSError):
            return Path(source).resolve().relative_to(self.personas.root).as_posix()
        return None

    async def list_personas(self, request: Request) -> dict:
        registry = self.servicer.characters
        served = {self._relative(p.source): p.id for p in registry.all()}
        files = await asyncio.to_thread(self.personas.files)
        problems = [str(p) for p in registry.problems]
        return {
            "folder": str(self.personas.folder),
            "edit": self.options.edit,
            "files": [{"path": f, "character_id": served.get(f)} for f in files],
            "problems": problems,
        }

    def _path_error(self, exc: Exception) -> HttpError:
        if isinstance(exc, FileNotFoundError):
            return HttpError(404, "NOT_FOUND", str(exc))
        return HttpError(400, "INVALID_ARGUMENT", str(exc))

    async def read_persona(self, request: Request) -> dict:
        path = request.query_params.get("path", "")
        try:
            text = await asyncio.to_thread(self.personas.read, path)
        except (PathRefused, FileNotFoundError) as exc:
            raise self._path_error(exc) from None
        return {"path": path, "file": self.personas.display(self.personas.check_path(path)), "text": text}

    def _text_body(self, body: dict) -> tuple[str, str]:
        path, text = body.get("path"), body.get("text")
        if not isinstance(text, str):
            raise HttpError(400, "INVALID_ARGUMENT", "text is missing: send {\"path\": \"brom.yaml\", \"text\": \"...YAML...\"}")
        return path, text

    @staticmethod
    def _problems(problems) -> list[dict]:
        return [{"file": p.file, "line": p.line, "message": p.message, "text": str(p)} for p in problems]

    async def validate_persona(self, request: Request) -> dict:
        path, text = self._text_body(await read_json(request))
        try:
            problems = await asyncio.to_thread(self.personas.validate, path, text, self.servicer.characters)
        except PathRefused as exc:
            raise self._path_error(exc) from None
        return {"ok": not problems, "problems": self._problems(problems)}

    async def save_persona(self, request: Request) -> dict:
        if not self.options.edit:
            raise HttpError(403, "PERMISSION_DENIED", "persona editing is off: this studio is not bound to localhost; start it with --allow-edit to allow saving")
        path, text = self._text_body(await read_json(request))
        registry = self.servicer.characters
        try:
            problems = await asyncio.to_thread(self.personas.save, path, text, registry)
        except PathRefused as exc:
            raise self._path_error(exc) from None
        if problems:
            raise HttpError(400, "INVALID_ARGUMENT", f"not saved: {problems[0]} (the last good version keeps serving)",
                            problems=self._problems(problems))  # fmt: skip
        await asyncio.to_thread(registry.scan)  # hot reload now, not at the watcher's next poll
        rel = self.personas.check_path(path)
        persona = next((p for p in registry.all() if self._relative(p.source) == rel.as_posix()), None)
        return {"ok": True, "path": path, "character_id": persona.id if persona else None,
                "reloaded": persona is not None}  # fmt: skip

    # -- steerability ---------------------------------------------------------------------------
    async def steerability(self, request: Request) -> dict:
        folder = self.options.steerability
        report = folder / "report.json" if folder else None
        if report is None or not report.is_file():
            return {"available": False, "folder": str(folder) if folder else None,
                    "hint": "run `steernpc eval steerability --out DIR` and serve with --steerability DIR"}  # fmt: skip
        try:
            data = json.loads(await asyncio.to_thread(report.read_text, encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise HttpError(500, "INTERNAL", f"{report}: cannot read the report: {exc}") from None
        md = folder / "report.md"
        return {
            "available": True,
            "folder": str(folder),
            "model": data.get("model"),
            "adapter": data.get("adapter"),
            "format": data.get("format"),
            "decoding": data.get("decoding"),
            "generations": data.get("generations"),
            "attributes": data.get("attributes", {}),
            "markdown": md.read_text(encoding="utf-8") if md.is_file() else data.get("markdown", ""),
            "plots": self._plots(),
        }

    def _plots(self) -> list[str]:
        folder = self.options.steerability
        plots = folder / "plots" if folder else None
        if plots is None or not plots.is_dir():
            return []
        return sorted(p.stem for p in plots.glob("*.png") if p.is_file() and not p.is_symlink())

    async def steerability_plot(self, request: Request) -> Response:
        name = request.path_params["name"].removesuffix(".png")
        if name not in self._plots():  # only names the folder lists: no path reaches elsewhere
            raise HttpError(404, "NOT_FOUND", f"no plot {echo(name)}; plots: {', '.join(self._plots()) or 'none'}")
        return FileResponse(str(self.options.steerability / "plots" / f"{name}.png"), media_type="image/png")


class _Guard:
    """ASGI middleware, first for every request: Host (DNS rebinding, on loopback), Origin
    (no writes from other web pages), API key (when keys are set; /healthz and the static
    page itself stay open, the API does not)."""

    OPEN = ("/", "/healthz")

    def __init__(self, app, gateway: Gateway):
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        problem = self._problem(request)
        if problem is not None:
            status, code, message = problem
            return await JSONResponse(error_body(code, status, message), status)(scope, receive, send)
        await self.app(scope, receive, send)

    def _problem(self, request: Request) -> tuple[int, str, str] | None:
        options = self.gateway.options
        host = (request.headers.get("host") or "").lower()
        hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if options.loopback and not is_loopback(hostname.strip("[]")):
            return 403, "PERMISSION_DENIED", f"Host {echo(host)} is not this machine: the studio answers on 127.0.0.1 / localhost only"
        origin = request.headers.get("origin")
        if request.method not in ("GET", "HEAD", "OPTIONS") and origin is not None:
            origin_host = origin.split("://", 1)[-1].rstrip("/").lower()
            if origin_host != host:
                return 403, "PERMISSION_DENIED", f"cross-origin request from {echo(origin)} refused"
        path = request.url.path
        if self.gateway._keys and path not in self.OPEN and not path.startswith("/static/"):
            reason = refusal(request.headers.get("authorization", ""), self.gateway._keys, where="header")
            if reason is not None:
                return 401, "UNAUTHENTICATED", reason
        return None


# -- running it in the serve process ---------------------------------------------------------------


def bind(host: str, port: int):
    """The gateway's listening socket, bound now (SystemExit if the port is taken), so that
    the port opens before the model loads, as the gRPC port does."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say
    # they are TCP, and without it every kept-alive response waited ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"cannot listen on {host}:{port} for the studio (in use?): {exc}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def start_gateway(gateway: Gateway, sock) -> "asyncio.Task":
    """Serve `gateway.app` on `sock` in this loop (uvicorn, without its own signal handling:
    the serve command owns SIGINT/SIGTERM). Returns the server task; stop_gateway ends it."""
    import uvicorn

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # the serve command's own handlers stay in charge
            yield

    config = uvicorn.Config(gateway.app, lifespan="off", log_level="warning", access_log=False,
                            h11_max_incomplete_event_size=64 << 10, timeout_graceful_shutdown=2)  # fmt: skip
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="steernpc-gateway")
    task.server = server  # type: ignore[attr-defined]
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if task.done():
        task.result()  # raises what stopped it
    return task


async def stop_gateway(gateway: Gateway, task: "asyncio.Task") -> None:
    await gateway.close()
    task.server.should_exit = True  # type: ignore[attr-defined]
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await asyncio.wait_for(task, 5)


def find_steerability(explicit: str | None, model: str | None, adapter: str | None) -> Path | None:
    """The report folder the studio shows: --steerability, else `steerability/` in the
    served adapter's or model's folder when it holds a report.json."""
    if explicit:
        return Path(explicit)
    for folder in (adapter, model):
        if folder and Path(folder).is_dir() and (Path(folder) / "steerability" / "report.json").is_file():
            return Path(folder) / "steerability"
    return None

