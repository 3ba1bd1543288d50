"""The characters a server serves: personas loaded from a folder, hot-reloaded.

A background thread polls the folder (mtime + size) once a second. A new or edited file
that validates replaces the old version; a broken edit keeps the last good version and
logs `FILE:LINE: message`; a deleted file removes its character.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from steernpc.persona import Persona, PersonaError, load_persona, persona_files

log = logging.getLogger("steernpc.characters")


class CharacterRegistry:
    def __init__(self, folder: str | Path, poll_seconds: float = 1.0):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"personas folder {self.folder} does not exist")
        self.poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._by_file: dict[Path, Persona] = {}
        self._stamps: dict[Path, tuple[float, int]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.problems: list[str] = []
        self.scan()

    # -- lookups -----------------------------------------------------------------------------
    def get(self, character_id: str) -> Persona | None:
        with self._lock:
            return next((p for p in self._by_file.values() if p.id == character_id), None)

    def all(self) -> list[Persona]:
        with self._lock:
            return sorted(self._by_file.values(), key=lambda p: p.id)

    # -- reloading -------------------------------------------------------------------------------
    def scan(self) -> bool:
        """Load what changed since the last scan; return True if anything did."""
        files = set(persona_files([self.folder]))
        changed = False
        with self._lock:
            for gone in set(self._stamps) - files:
                self._stamps.pop(gone)
                if self._by_file.pop(gone, None) is not None:
                    log.info("removed character from %s", gone)
                    changed = True
        for file in sorted(files):
            try:
                stat = file.stat()
            except OSError:
                continue
            stamp = (stat.st_mtime, stat.st_size)
            if self._stamps.get(file) == stamp:
                continue
            self._stamps[file] = stamp
            changed = True
            try:
                persona = load_persona(file)
            except PersonaError as exc:
                kept = " (keeping the last good version)" if file in self._by_file else ""
                for problem in exc.problems:
                    log.error("%s%s", problem, kept)
                self.problems = [str(p) for p in exc.problems]
                continue
            with self._lock:
                clash = next((f for f, p in self._by_file.items() if p.id == persona.id and f != file), None)
                if clash is not None:
                    log.error("%s:1: id %r is already used by %s; ignored", file, persona.id, clash)
                    continue
                reloaded = file in self._by_file
                self._by_file[file] = persona
            log.info("%s character %s from %s", "reloaded" if reloaded else "loaded", persona.id, file)
        return changed

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="steernpc-persona-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.scan()
            except Exception:  # never let a watcher crash take the server's characters away
                log.exception("persona reload failed")
