"""Stream: the handle a backend returns for one request, consumable sync or async.

The backend's worker thread pushes events; the consumer reads them either by iterating
(blocking) or with `async for` on an asyncio loop, without a thread per waiter.
"""

from __future__ import annotations

import asyncio
import queue
import threading

from steernpc.generation.base import Delta, Finished


class Stream:
    def __init__(self, request_id: str):
        self.request_id = request_id
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._cancelled = threading.Event()
        self._done = threading.Event()
        self._final: Finished | None = None
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._lock = threading.Lock()

    # -- producer side (backend thread) -------------------------------------------------
    def push(self, event: Delta | Finished) -> None:
        if self._done.is_set():
            return
        if isinstance(event, Finished):
            self._final = event
            self._done.set()
        self._queue.put(event)
        with self._lock:
            waiters = list(self._waiters)
        for loop, flag in waiters:
            try:
                loop.call_soon_threadsafe(flag.set)
            except RuntimeError:  # that loop is closed: its consumer is gone
                pass

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    def buffered(self) -> int:
        """Events pushed and not yet read (approximate while the producer runs)."""
        return self._queue.qsize()

    # -- consumer side -------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask the backend to stop; it finishes with reason "cancelled" at its next step."""
        self._cancelled.set()

    def __iter__(self):
        while True:
            event = self._queue.get()
            yield event
            if isinstance(event, Finished):
                return

    def result(self, timeout: float | None = None) -> Finished:
        if not self._done.wait(timeout):
            raise TimeoutError(f"request {self.request_id} did not finish in {timeout} s")
        return self._final

    async def __aiter__(self):
        loop = asyncio.get_running_loop()
        flag = asyncio.Event()
        with self._lock:
            self._waiters.append((loop, flag))
        try:
            while True:
                try:
                    event = self._queue.get_nowait()
                except queue.Empty:
                    flag.clear()
                    # Re-check after clearing so an event pushed in between is not missed.
                    if self._queue.empty():
                        await flag.wait()
                    continue
                yield event
                if isinstance(event, Finished):
                    return
        finally:
            with self._lock:
                self._waiters.remove((loop, flag))
