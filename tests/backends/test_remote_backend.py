"""The remote backend against a scripted OpenAI-compatible server (errors, disconnects,
dialects) and against the real llama.cpp server (cancel frees the server)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from steernpc.generation import BackendUnavailable, GenerationRequest, SamplingParams
from steernpc.generation.detokenize import TextStops
from steernpc.generation.remote_backend import RemoteBackend

# CompletionRequest fields trtllm-serve accepts (it forbids others: extra="forbid"), from
# tensorrt_llm/serve/openai_protocol.py (class CompletionRequest).
TRTLLM_COMPLETION_FIELDS = {
    "model", "prompt", "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs", "max_tokens", "n",
    "presence_penalty", "seed", "stop", "stream", "stream_options", "suffix", "temperature", "top_p", "user",
    "lora_request", "prompt_ignore_length", "use_beam_search", "top_k", "top_p_min", "min_p", "repetition_penalty",
    "length_penalty", "early_stopping", "stop_token_ids", "include_stop_str_in_output", "ignore_eos", "min_tokens",
    "skip_special_tokens", "spaces_between_special_tokens", "truncate_prompt_tokens", "return_context_logits",
    "detokenize", "add_special_tokens", "response_format", "disaggregated_params", "priority", "conversation_params",
}  # fmt: skip


class Script:
    """What the scripted server does; tests set its fields."""

    def __init__(self) -> None:
        self.owned_by = "vllm"
        self.status = 200
        self.chunks: list[str] = ["Hello", " there", ",", " traveller", "."]
        self.delay = 0.0
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.disconnected = threading.Event()
        self.finish = "stop"
        self.sent = 0  # chunks written before the client went away
        self.tail_chunks: list[str] | None = None  # sent instead of `chunks` to a structured-tail request

    def chunks_for(self, body: dict) -> list[str]:
        tail = body.get("prompt", "").endswith(("\n<extra_id_3>", "\n<tail>"))
        return self.tail_chunks if tail and self.tail_chunks is not None else self.chunks


@pytest.fixture
def scripted():
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):  # /v1/models
            body = json.dumps({"object": "list", "data": [{"id": "npc-model", "object": "model", "owned_by": script.owned_by}]})
            self._send(200, body.encode(), "application/json")

        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            script.bodies.append(json.loads(self.rfile.read(length)))
            script.headers.append(dict(self.headers))
            if script.status != 200:
                self._send(script.status, json.dumps({"error": {"message": "max_tokens is too large"}}).encode(), "application/json")
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            try:
                self.wfile.write(b": ping\n\n")
                chunks = script.chunks_for(script.bodies[-1])
                for i, piece in enumerate(chunks):
                    last = i == len(chunks) - 1
                    chunk = {"choices": [{"index": 0, "text": piece, "finish_reason": script.finish if last else None}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                    script.sent += 1
                    time.sleep(script.delay)
                usage = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": len(script.chunks)}}
                self.wfile.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                script.disconnected.set()

        def _send(self, status, body, ctype):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    script.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield script
    server.shutdown()
    server.server_close()


def req(prompt="<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", n=20, stop=(), **params):
    return GenerationRequest(prompt, SamplingParams(max_new_tokens=n, **params), stop=list(stop))


def test_streams_and_reports_usage(scripted):
    backend = RemoteBackend(url=scripted.url, api_key="k-123")
    try:
        stream = backend.submit(req(temperature=0.7, top_p=0.9, seed=3))
        events = list(stream)
        final = events[-1]
        assert "".join(e.text for e in events[:-1]) == final.text == "Hello there, traveller."
        assert final.reason == "stop" and final.prompt_tokens == 7 and final.completion_tokens == 5
        body = scripted.bodies[-1]
        assert body["model"] == "npc-model" and body["stream"] is True and body["prompt"].startswith("<|im_start|>")
        assert (body["temperature"], body["top_p"], body["seed"], body["max_tokens"]) == (0.7, 0.9, 3, 20)
        assert scripted.headers[-1]["Authorization"] == "Bearer k-123"
    finally:
        backend.close()


def test_client_side_stop_string_split_across_chunks(scripted):
    scripted.chunks = ["The sw", "ord is re", "ady. ##", "# END", " more"]
    backend = RemoteBackend(url=scripted.url)
    try:
        final = backend.generate([req(stop=["###"])])[0]
        assert final.reason == "stop" and final.text == "The sword is ready."
        assert scripted.bodies[-1]["stop"] == ["###"]
    finally:
        backend.close()


def test_length_finish_reason(scripted):
    scripted.finish = "length"
    backend = RemoteBackend(url=scripted.url)
    try:
        assert backend.generate([req()])[0].reason == "length"
    finally:
        backend.close()


def test_http_error_becomes_an_error_event(scripted):
    scripted.status = 400
    backend = RemoteBackend(url=scripted.url)
    try:
        final = backend.generate([req()])[0]
        assert final.reason == "error" and "HTTP 400" in final.error and "max_tokens is too large" in final.error
    finally:
        backend.close()


def test_cancel_closes_the_http_stream(scripted):
    # a reply that would stream for 200 s: only the cancel can end it early
    scripted.chunks = [f" {i}" for i in range(10_000)]
    scripted.delay = 0.02
    backend = RemoteBackend(url=scripted.url)
    try:
        stream = backend.submit(req(n=4096))
        for event in stream:
            stream.cancel()
            break
        final = stream.result(timeout=60)
        assert final.reason == "cancelled"
        assert scripted.disconnected.wait(60), "the server never saw the client go away"
        assert scripted.sent < len(scripted.chunks)
    finally:
        backend.close()


def test_trtllm_dialect_sends_only_documented_fields(scripted):
    scripted.owned_by = "tensorrt_llm"
    backend = RemoteBackend(url=scripted.url, model="npc-model")
    try:
        assert backend.dialect == "trtllm"
        backend.generate([req(stop=["<|im_end|>"], temperature=0.8, top_k=40, repetition_penalty=1.1, seed=1)])
        body = scripted.bodies[-1]
        assert set(body) <= TRTLLM_COMPLETION_FIELDS
        assert body["add_special_tokens"] is False and body["top_k"] == 40 and body["repetition_penalty"] == 1.1
        assert body["stream_options"] == {"include_usage": True}
    finally:
        backend.close()


def test_llamacpp_dialect_overrides_its_sampling_defaults(scripted):
    scripted.owned_by = "me"  # llama-cpp-python's /v1/models
    backend = RemoteBackend(url=scripted.url)
    try:
        assert backend.dialect == "llamacpp"
        backend.generate([req(temperature=0.0)])
        body = scripted.bodies[-1]
        assert (body["top_k"], body["min_p"], body["repeat_penalty"]) == (0, 0.0, 1.0)
    finally:
        backend.close()


def test_unreachable_server_is_unavailable():
    with pytest.raises(BackendUnavailable, match="cannot reach"):
        RemoteBackend(url="http://127.0.0.1:9")
    with pytest.raises(ValueError, match="needs a server URL"):
        RemoteBackend(url=None)


def test_text_stops_hold_back_partial_stops_and_whitespace():
    stops = TextStops(["<|im_end|>"])
    pieces = ["\n Hel", "lo ", "there <|im", "_end|> never"]
    out = [stops.feed(p) for p in pieces]
    assert out == ["Hel", "lo", " there", ""]
    assert stops.stopped and stops.text == "Hello there" and stops.finish() == ""
    plain = TextStops([])
    assert plain.feed("a ") + plain.feed("b\n") + plain.finish() == "a b" == plain.text


def test_llama_cpp_server_stops_generating_on_cancel(llama_server_process):
    """After a cancel the server stops that reply (its log says so) and serves the next one."""
    log = llama_server_process.log
    noticed = "Disconnected from client"  # llama_cpp.server prints this when it drops a stream
    before = log.read_text().count(noticed)
    backend = RemoteBackend(url=llama_server_process.url)
    try:
        count = "<|im_start|>user\nCount from 1 to 2000 with commas.<|im_end|>\n<|im_start|>assistant\n"
        stream = backend.submit(req(count, n=1500, temperature=0.0, ignore_eos=True))
        for event in stream:
            stream.cancel()
            break
        final = stream.result(timeout=60)
        assert final.reason == "cancelled" and final.completion_tokens < 1500
        deadline = time.monotonic() + 120
        while log.read_text().count(noticed) == before:
            assert time.monotonic() < deadline, f"the server never dropped the cancelled stream; see {log}"
            time.sleep(0.05)
        short = backend.generate([req("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", n=3, temperature=0.0)])[0]
        assert short.reason in ("length", "stop") and short.completion_tokens >= 1
    finally:
        backend.close()


def _tail_request():
    from steernpc.actions import ActionSpec, ArgSpec, TailSpec, tail_grammar
    from steernpc.generation import TailRequest
    from steernpc.prompt import tail_marker

    spec = TailSpec(("neutral", "angry"), (ActionSpec("call_guards"), ActionSpec("give_item", args=(ArgSpec("item", "enum", ("map",)),))))
    request = req(stop=["<extra_id_3>", "<extra_id_1>"], temperature=0.0)
    request.tail = TailRequest(tail_marker("nemo"), tail_grammar(spec), spec)
    return request


def test_llamacpp_gets_the_tail_grammar(scripted):
    scripted.owned_by = "me"
    scripted.chunks = ["Halt", " there", ".", "\n<extra_", "id_3>angry"]  # the model begins its own tail: cut
    scripted.tail_chunks = ["angry give_item(", "item=map)", "\n"]
    backend = RemoteBackend(url=scripted.url)
    try:
        final = backend.generate([_tail_request()])[0]
        assert final.text == "Halt there." and final.tail_error is None
        assert (final.tail.emotion, final.tail.action.name, final.tail.action.args) == ("angry", "give_item", {"item": "map"})
        reply, tail = scripted.bodies[-2:]
        assert "grammar" not in reply
        assert tail["grammar"] == _tail_request().tail.grammar and tail["stop"] == ["\n"]
        assert tail["prompt"] == reply["prompt"] + "Halt there.\n<extra_id_3>"
    finally:
        backend.close()


def test_server_without_grammar_reports_an_invalid_tail_clearly(scripted):
    scripted.owned_by = "vllm"
    scripted.tail_chunks = ["furious attack()\n"]
    backend = RemoteBackend(url=scripted.url, model="npc-model")
    try:
        final = backend.generate([_tail_request()])[0]
        assert final.text == "Hello there, traveller." and final.tail is None
        assert "grammar" not in scripted.bodies[-1]
        assert final.tail_error == ("invalid tail 'furious attack()': emotion 'furious' is not declared; emotions: neutral, angry "
                                    "(this vllm server takes no grammar here, so the tail was not constrained)")
    finally:
        backend.close()
