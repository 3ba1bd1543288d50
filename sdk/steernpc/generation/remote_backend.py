"""Remote backend: stream from an OpenAI-compatible `/v1/completions` endpoint.

What trtllm-serve, vLLM, llama.cpp's server (and llama-cpp-python's) speak, for
scale-out: the runtime builds the SteerLM prompt exactly as for the embedded backends and
sends it as a plain completion with `stream: true`, honouring stop / max_tokens /
temperature / top_p / top_k / repetition penalty / seed. Cancelling a request closes its
HTTP stream (the server stops generating when it notices the disconnect).

Servers differ in their extensions and defaults, so the backend asks `/v1/models` who it
is talking to (`owned_by`) and adapts:

- trtllm-serve (`tensorrt_llm`) rejects unknown fields: only documented ones are sent.
- vLLM: `top_k`, `repetition_penalty`, `add_special_tokens: false`.
- llama.cpp / llama-cpp-python (`llamacpp` / `me`): their defaults are top_k 40, min_p
  0.05 and repeat_penalty 1.1, so `top_k`, `min_p` and `repeat_penalty` are always sent.

Stop strings are sent to the server and also enforced here (servers cap how many they
take, and text arriving in pieces may hide one), with the same whitespace handling as the
embedded backends: leading and trailing whitespace of a reply is dropped.

The structured tail (GenerationRequest.tail): once the reply has streamed, a second
completion on prompt + reply + the format's marker asks for one tail line. llama.cpp's
server constrains it with the persona's grammar (`grammar`: GBNF, what steernpc.actions
writes); servers without a grammar option here (OpenAI, vLLM, trtllm-serve) generate it
unconstrained, and a tail that does not parse is reported in Finished.tail_error, saying
that the server did not constrain it.

Standard library only (http.client): one thread per running request, bounded.
"""

from __future__ import annotations

import collections
import http.client
import json
import logging
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from steernpc.generation.base import (
    Backend, BackendUnavailable, Delta, Finished, GenerationRequest, QueueFull, read_tail, refuse_guidance,
)  # fmt: skip
from steernpc.generation.detokenize import TextStops
from steernpc.generation.stream import Stream

log = logging.getLogger("steernpc.remote")

DIALECTS = ("auto", "openai", "vllm", "trtllm", "llamacpp")
_OWNERS = {"tensorrt_llm": "trtllm", "vllm": "vllm", "llamacpp": "llamacpp", "llama.cpp": "llamacpp", "me": "llamacpp"}


@dataclass(eq=False)
class _Job:
    request: GenerationRequest
    stream: Stream
    submitted: float
    stops: TextStops
    conn: Any = None
    first_token_at: float | None = None
    chunks: int = 0
    usage: dict = field(default_factory=dict)
    aborted: bool = False


class RemoteBackend(Backend):
    """Options: url (base URL, e.g. http://gpu-box:8000; env STEERNPC_REMOTE_URL), model
    (the served model id; default: the first id /v1/models lists, or that id when `model`
    names a local model), tokenizer (a local model spec for token counts; default: `model`
    when it resolves locally), api_key (env STEERNPC_REMOTE_API_KEY, sent as Bearer),
    dialect (auto | openai | vllm | trtllm | llamacpp), max_concurrency (requests streamed
    at once), max_queue, timeout (seconds between chunks), extra_body (merged into every
    request, e.g. {"lora_request": {...}} for trtllm-serve)."""

    name = "remote"

    def __init__(
        self,
        url: str | None = None,
        model: str | None = None,
        tokenizer: Any = None,
        api_key: str | None = None,
        dialect: str = "auto",
        max_concurrency: int = 16,
        max_queue: int = 64,
        timeout: float = 120.0,
        connect_timeout: float = 10.0,
        extra_body: dict | None = None,
        adapter: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
    ):
        url = url or os.environ.get("STEERNPC_REMOTE_URL")
        if not url:
            raise ValueError("the remote backend needs a server URL (--backend-url http://host:8000, or STEERNPC_REMOTE_URL)")
        if adapter:
            raise ValueError(
                "the remote backend cannot apply a LoRA adapter itself: merge it at compile time "
                "(steernpc compile --adapter ...) or load it on the server (trtllm-serve lora_config, "
                "then extra_body={'lora_request': ...})"
            )
        if dialect not in DIALECTS:
            raise ValueError(f"dialect {dialect!r}; choose from {', '.join(DIALECTS)}")
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"remote URL {url!r}: expected http(s)://host[:port][/prefix]")
        self.url = url
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        prefix = parts.path.rstrip("/")
        self._prefix = prefix if prefix.endswith("/v1") else prefix + "/v1"
        self.api_key = api_key or os.environ.get("STEERNPC_REMOTE_API_KEY")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.extra_body = dict(extra_body or {})
        self.max_queue = max_queue

        served, owner = self._discover()
        self.dialect = dialect if dialect != "auto" else _OWNERS.get(owner or "", "openai")
        if model and (model in served or not served):
            self.model = model
        elif served:
            self.model = served[0]
        else:
            self.model = model or "default"
        self.tokenizer = self._load_tokenizer(tokenizer if tokenizer is not None else model)

        self._pending: collections.deque[_Job] = collections.deque()
        self._active: set = set()
        self._cond = threading.Condition()
        self._closed = False
        self._workers = [
            threading.Thread(target=self._worker, name=f"steernpc-remote-{i}", daemon=True) for i in range(max(1, max_concurrency))
        ]
        for t in self._workers:
            t.start()
        self._watcher = threading.Thread(target=self._watch, name="steernpc-remote-cancel", daemon=True)
        self._watcher.start()

    # -- set-up ----------------------------------------------------------------------------
    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=ssl.create_default_context())
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _discover(self) -> tuple[list[str], str | None]:
        """(served model ids, owned_by of the first) from GET /v1/models."""
        conn = self._connection(self.connect_timeout)
        try:
            conn.request("GET", f"{self._prefix}/models", headers=self._headers())
            resp = conn.getresponse()
            body = resp.read()
            if resp.status == 401 or resp.status == 403:
                raise BackendUnavailable(f"remote server {self.url} refused the API key (HTTP {resp.status})")
            if resp.status != 200:
                log.warning("GET %s/models answered HTTP %s; assuming a plain OpenAI-compatible server", self._prefix, resp.status)
                return [], None
            data = json.loads(body or b"{}").get("data") or []
            ids = [m.get("id") for m in data if isinstance(m, dict) and m.get("id")]
            owner = data[0].get("owned_by") if data and isinstance(data[0], dict) else None
            return ids, owner
        except (OSError, http.client.HTTPException) as exc:
            raise BackendUnavailable(f"cannot reach the remote server at {self.url}: {exc}") from None
        except json.JSONDecodeError:
            return [], None
        finally:
            conn.close()

    def _load_tokenizer(self, spec: Any) -> Any:
        """A tokenizer object as given, or one loaded from a local model spec (a folder, a
        .gguf, or a prepared name); None when `spec` names only a remote model."""
        if spec is None or not isinstance(spec, (str, os.PathLike)):
            return spec
        from steernpc import models

        if not (os.path.exists(spec) or str(spec) in models.ALIASES or str(spec) == models.DEFAULT_MODEL):
            return None
        try:
            return models.load_tokenizer(spec)
        except Exception as exc:  # noqa: BLE001 - token counts then fall back to an estimate
            log.info("no local tokenizer for %s (%s); token counts are estimates", spec, exc)
            return None

    def count_tokens(self, text: str) -> int:
        if self.tokenizer is not None:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return max(1, len(text) // 4) if text else 0

    # -- public API ------------------------------------------------------------------------
    def submit(self, request: GenerationRequest) -> Stream:
        request.params.validate()
        refuse_guidance(request, self.name)
        stream = Stream(request.request_id)
        job = _Job(request, stream, time.perf_counter(), TextStops(request.stop))
        with self._cond:
            if self._closed:
                raise RuntimeError("backend is closed")
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"remote queue is full ({self.max_queue} waiting); retry shortly")
            self._pending.append(job)
            self._cond.notify_all()
        return stream

    def stats(self) -> dict[str, float]:
        with self._cond:
            return {"queue_depth": len(self._pending), "running": len(self._active)}

    def close(self) -> None:
        with self._cond:
            self._closed = True
            pending, self._pending = list(self._pending), collections.deque()
            active = list(self._active)
            self._cond.notify_all()
        for job in pending:
            job.stream.push(self._finished(job, "cancelled"))
        for job in active:
            self._abort(job)
        for t in self._workers:
            t.join(timeout=5)

    # -- request body ----------------------------------------------------------------------
    def body(self, request: GenerationRequest) -> dict:
        p = request.params
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": request.prompt,
            "max_tokens": p.max_new_tokens,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "stream": True,
        }
        if p.ignore_eos:  # vLLM, trtllm-serve and llama.cpp's llama-server honour it
            body["ignore_eos"] = True
        elif request.stop:
            body["stop"] = list(request.stop)
        if p.seed is not None:
            body["seed"] = int(p.seed)
        if self.dialect in ("vllm", "trtllm"):
            body["stream_options"] = {"include_usage": True}
            body["add_special_tokens"] = False  # the prompt already carries its special tokens
            if p.top_k > 0:
                body["top_k"] = p.top_k
            if p.repetition_penalty != 1.0:
                body["repetition_penalty"] = p.repetition_penalty
        elif self.dialect == "llamacpp":
            body.update(top_k=p.top_k, min_p=0.0, repeat_penalty=p.repetition_penalty, cache_prompt=True)
        else:  # plain OpenAI: only standard fields
            body["stream_options"] = {"include_usage": True}
        body.update(self.extra_body)
        return body

    # -- workers ---------------------------------------------------------------------------
    def _worker(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._pending:
                    self._cond.wait()
                if self._closed:
                    return
                job = self._pending.popleft()
                if job.stream.cancelled:
                    job.stream.push(self._finished(job, "cancelled"))
                    continue
                self._active.add(job)
            try:
                reason, error = self._run(job)
            except Exception as exc:  # noqa: BLE001 - reported on the stream
                reason, error = ("cancelled", None) if job.stream.cancelled else ("error", f"{type(exc).__name__}: {exc}")
            finally:
                with self._cond:
                    self._active.discard(job)
                if job.conn is not None:
                    job.conn.close()
            if reason != "error":
                tail = job.stops.finish() if reason != "cancelled" else ""
                if tail:
                    job.stream.push(Delta(tail))
            final = self._finished(job, reason, error)
            if reason in ("stop", "length") and job.request.tail is not None and not job.stream.cancelled:
                self._tail(job, final)
            job.stream.push(final)

    def _run(self, job: _Job) -> tuple[str, str | None]:
        conn = self._connection(self.connect_timeout)
        job.conn = conn
        payload = json.dumps(self.body(job.request)).encode()
        conn.request("POST", f"{self._prefix}/completions", body=payload, headers=self._headers())
        if job.stream.cancelled:
            return "cancelled", None
        resp = conn.getresponse()
        if resp.status != 200:
            detail = resp.read(4000).decode("utf-8", "replace")
            try:
                detail = json.loads(detail).get("error", {}).get("message") or json.loads(detail).get("message") or detail
            except (json.JSONDecodeError, AttributeError):
                pass
            return "error", f"remote server answered HTTP {resp.status}: {str(detail)[:500]}"
        if conn.sock is not None:
            conn.sock.settimeout(self.timeout)
        reason = None
        for data in _sse_data(resp):
            if job.stream.cancelled:
                return "cancelled", None
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if chunk.get("error"):
                err = chunk["error"]
                return "error", f"remote server: {err.get('message', err) if isinstance(err, dict) else err}"
            if chunk.get("usage"):
                job.usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                text = choice.get("text") or ""
                if text:
                    job.chunks += 1
                    if job.first_token_at is None:
                        job.first_token_at = time.perf_counter()
                    delta = job.stops.feed(text)
                    if delta:
                        job.stream.push(Delta(delta))
                    if job.stops.stopped:
                        self._abort(job)  # stop generating on the server
                        return "stop", None
                if choice.get("finish_reason"):
                    reason = choice["finish_reason"]
        if job.stream.cancelled:
            return "cancelled", None
        return ("length" if reason == "length" else "stop"), None

    @property
    def constrains_tail(self) -> bool:
        """Whether this server takes the tail's grammar (llama.cpp's `grammar`)."""
        return self.dialect == "llamacpp"

    def tail_body(self, request: GenerationRequest, reply: str) -> dict:
        body = self.body(request)
        body.update(prompt=request.prompt + reply + request.tail.marker, max_tokens=request.tail.max_tokens, stop=["\n"])
        body.pop("ignore_eos", None)
        if self.constrains_tail:
            body["grammar"] = request.tail.grammar
        return body

    def _tail(self, job: _Job, final: Finished) -> None:
        """The structured tail after the reply (see the module doc); never streamed."""
        started = time.perf_counter()
        conn = self._connection(self.connect_timeout)
        try:
            conn.request("POST", f"{self._prefix}/completions", body=json.dumps(self.tail_body(job.request, job.stops.text)).encode(),
                         headers=self._headers())  # fmt: skip
            resp = conn.getresponse()
            if resp.status != 200:
                final.tail_error = f"the tail request failed: HTTP {resp.status}: {resp.read(500).decode('utf-8', 'replace')}"
                return
            text = ""
            for data in _sse_data(resp):
                if data == "[DONE]":
                    break
                for choice in json.loads(data).get("choices") or []:
                    text += choice.get("text") or ""
                if "\n" in text:
                    break
            read_tail(job.request, text.split("\n", 1)[0], final)
            if final.tail_error and not self.constrains_tail:
                final.tail_error += f" (this {self.dialect} server takes no grammar here, so the tail was not constrained)"
            if self.tokenizer is not None:
                final.tail_tokens = self.count_tokens(final.tail_text)
        except (OSError, http.client.HTTPException, json.JSONDecodeError) as exc:
            final.tail_error = f"the tail request failed: {type(exc).__name__}: {exc}"
        finally:
            conn.close()
            final.tail_ms = (time.perf_counter() - started) * 1000.0

    def _abort(self, job: _Job) -> None:
        """Close the request's HTTP stream now (from any thread)."""
        job.aborted = True
        conn = job.conn
        sock = getattr(conn, "sock", None) if conn is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _watch(self) -> None:
        """Cancel promptly: a cancelled stream's socket is shut down, which wakes its
        worker from a blocking read; a cancelled queued request finishes at once."""
        while True:
            with self._cond:
                if self._closed:
                    return
                active = [j for j in self._active if j.stream.cancelled and not j.aborted]
                waiting = [j for j in self._pending if j.stream.cancelled]
                for job in waiting:
                    self._pending.remove(job)
            for job in active:
                self._abort(job)
            for job in waiting:
                job.stream.push(self._finished(job, "cancelled"))
            time.sleep(0.02)

    def _finished(self, job: _Job, reason: str, error: str | None = None) -> Finished:
        now = time.perf_counter()
        first = job.first_token_at or now
        usage = job.usage or {}
        prompt_tokens = usage.get("prompt_tokens")
        if prompt_tokens is None:
            prompt_tokens = self.count_tokens(job.request.prompt) if self.tokenizer is not None else 0
        completion = usage.get("completion_tokens")
        if completion is None:
            completion = self.count_tokens(job.stops.raw) if self.tokenizer is not None else job.chunks
        details = usage.get("prompt_tokens_details") or {}
        return Finished(
            text=job.stops.text,
            reason=reason,
            prompt_tokens=int(prompt_tokens or 0),
            completion_tokens=int(completion or 0),
            cached_tokens=int(details.get("cached_tokens") or 0),
            ttft_ms=(first - job.submitted) * 1000.0,
            total_ms=(now - job.submitted) * 1000.0,
            error=error,
        )


def _sse_data(resp: http.client.HTTPResponse):
    """The `data:` payloads of a server-sent-events response (comments, pings and other
    fields are skipped; multi-line data is joined with newlines)."""
    lines: list[str] = []
    while True:
        raw = resp.readline()
        if not raw:
            if lines:
                yield "\n".join(lines)
            return
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if lines:
                yield "\n".join(lines)
                lines = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            lines.append(value[1:] if value.startswith(" ") else value)
