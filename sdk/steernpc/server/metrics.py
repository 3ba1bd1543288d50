"""Prometheus metrics: time to first token, inter-token gaps, tokens, queue depth, sessions."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.ttft = Histogram("steernpc_time_to_first_token_seconds", "Say: request to first delta", buckets=_LATENCY_BUCKETS, registry=r)
        self.inter_token = Histogram("steernpc_inter_token_seconds", "gap between deltas of one reply", buckets=_LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("steernpc_generated_tokens", "completion tokens generated", registry=r)
        self.replies = Counter("steernpc_replies", "finished replies by finish reason", ["reason"], registry=r)
        self.tokens_per_second = Gauge("steernpc_tokens_per_second", "completion tokens/s over the last 10 s", registry=r)
        self.queue_depth = Gauge("steernpc_queue_depth", "requests waiting for the generation loop", registry=r)
        self.running = Gauge("steernpc_running_requests", "requests in the decode batch", registry=r)
        self.active_sessions = Gauge("steernpc_active_sessions", "sessions with a turn in the last 10 minutes", registry=r)
        self._window: list[tuple[float, int]] = []
        self._session_seen: dict[str, float] = {}

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        start_http_server(port, addr=host, registry=self.registry)

    def reply_finished(self, session_id: str, reason: str, completion_tokens: int) -> None:
        now = time.monotonic()
        self.tokens.inc(completion_tokens)
        self.replies.labels(reason).inc()
        self._window = [(t, n) for t, n in self._window if now - t < 10.0] + [(now, completion_tokens)]
        self.tokens_per_second.set(sum(n for _, n in self._window) / 10.0)
        self._session_seen[session_id] = now
        self._session_seen = {k: t for k, t in self._session_seen.items() if now - t < 600}
        self.active_sessions.set(len(self._session_seen))

    def backend_stats(self, stats: dict) -> None:
        self.queue_depth.set(stats.get("queue_depth", 0))
        self.running.set(stats.get("running", 0))
