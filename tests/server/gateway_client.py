"""A small HTTP client for the gateway tests and the benchmark's shape: stdlib http.client,
JSON bodies, and Server-Sent Events read as they arrive (so a test can see each delta, or
hang up after the first)."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class Answer:
    status: int
    body: dict
    headers: dict

    @property
    def error(self) -> dict:
        return self.body.get("error", {})


class Http:
    def __init__(self, base: str, key: str | None = None, timeout: float = 60):
        parts = urlsplit(base)
        self.host, self.port = parts.hostname, parts.port
        self.key = key
        self.timeout = timeout

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def headers(self, extra: dict | None = None, json_body: bool = False) -> dict:
        h = {"Content-Type": "application/json"} if json_body else {}
        if self.key:
            h["Authorization"] = f"Bearer {self.key}"
        return {**h, **(extra or {})}

    def call(self, method: str, path: str, body=None, headers: dict | None = None, raw: bytes | None = None) -> Answer:
        conn = self.connection()
        try:
            data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
            conn.request(method, path, body=data, headers=self.headers(headers, json_body=body is not None))
            resp = conn.getresponse()
            text = resp.read()
            try:
                parsed = json.loads(text) if text else {}
            except ValueError:
                parsed = {"_text": text.decode(errors="replace")}
            return Answer(resp.status, parsed, {k.lower(): v for k, v in resp.getheaders()})
        finally:
            conn.close()

    def get(self, path: str, **kw) -> Answer:
        return self.call("GET", path, **kw)

    def post(self, path: str, body=None, **kw) -> Answer:
        return self.call("POST", path, body if body is not None else {}, **kw)

    def say(self, session_id: str, body: dict) -> "SayStream":
        """Open a say; .status / .error for a refusal, else iterate (kind, data) events."""
        conn = self.connection()
        conn.request("POST", f"/api/v1/sessions/{session_id}/say", body=json.dumps(body).encode(), headers=self.headers(json_body=True))
        return SayStream(conn, conn.getresponse())


class SayStream:
    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse):
        self.conn, self.resp = conn, resp
        self.status = resp.status
        self.headers = {k.lower(): v for k, v in resp.getheaders()}
        self.error = json.loads(resp.read()).get("error", {}) if resp.status != 200 else None

    def __iter__(self):
        kind, data = "message", []
        while True:
            line = self.resp.readline()
            if not line:
                return
            line = line.decode().rstrip("\r\n")
            if not line:
                if data:
                    yield kind, json.loads("\n".join(data))
                kind, data = "message", []
            elif line.startswith(":"):
                continue
            elif line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))

    def events(self) -> list[tuple[str, dict]]:
        try:
            return list(self)
        finally:
            self.close()

    def close(self) -> None:
        self.conn.close()
