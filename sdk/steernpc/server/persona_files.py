"""The personas folder as the studio's editor sees it: list, read, validate and save persona
YAML, where no path a client sends can reach outside the folder.

A path is relative to the folder, in `/` form, and names a `.yaml` / `.yml` file. Refused,
before the disk is touched: an absolute path, `~`, `..` or `.` parts, backslashes, NUL,
hidden parts (`.git/...`), any other suffix. Then the file is opened one folder at a time
from the folder's own descriptor with O_NOFOLLOW, so a symlink anywhere on the way (the
file itself or a folder above it) is refused, and so is one swapped in after the check. A
save writes a temporary file beside the target (`.NAME.*.tmp`, which the hot reloader
ignores) and renames it over the target, so a reader never sees half a file.

Validation gives the same `FILE:LINE: message` problems as `steernpc validate FOLDER`
(FILE is the folder as given plus the relative path), including an id that another file
of the folder already uses. A save with problems is refused and the file is left as it
was: the last good version keeps serving.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path, PurePosixPath

from steernpc.limits import MAX_PERSONA_FILE, echo
from steernpc.persona import PersonaError, persona_files, persona_from_located
from steernpc.yamlsource import Problem, SourceError, parse_located

SUFFIXES = (".yaml", ".yml")
MAX_PATH = 255


class PathRefused(ValueError):
    """A path that may not be read or written; the message says why."""


class PersonaFolder:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)  # as given: the FILE part of every problem
        self.root = Path(os.path.realpath(self.folder))
        if not self.root.is_dir():
            raise FileNotFoundError(f"personas folder {self.folder} does not exist")

    # -- paths -----------------------------------------------------------------------------------
    def check_path(self, path: object) -> PurePosixPath:
        """`path` as a safe relative path, or PathRefused."""
        if not isinstance(path, str) or not path:
            raise PathRefused("path is empty: name a persona file relative to the personas folder, e.g. brom.yaml")
        if len(path) > MAX_PATH:
            raise PathRefused(f"path is too long: {len(path)} characters (at most {MAX_PATH})")
        if "\x00" in path or "\\" in path:
            raise PathRefused(f"path {echo(path)} contains a NUL or a backslash")
        if path.startswith(("/", "~")) or (len(path) > 1 and path[1] == ":"):
            raise PathRefused(f"path {echo(path)} is absolute: paths are relative to the personas folder")
        rel = PurePosixPath(path)
        parts = path.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise PathRefused(f"path {echo(path)} has an empty, '.' or '..' part: paths stay inside the personas folder")
        if any(part.startswith(".") for part in parts):
            raise PathRefused(f"path {echo(path)} names a hidden file or folder")
        if rel.suffix not in SUFFIXES:
            raise PathRefused(f"path {echo(path)} is not a persona file (.yaml or .yml)")
        return rel

    def display(self, rel: PurePosixPath) -> str:
        return str(self.folder / rel)

    def _open_parent(self, rel: PurePosixPath) -> int:
        """A descriptor of `rel`'s folder, opened part by part without following symlinks."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for part in rel.parts[:-1]:
                try:
                    nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except FileNotFoundError:
                    raise PathRefused(f"folder {part!r} of {str(rel)!r} does not exist (the editor creates files, not folders)") from None
                except (NotADirectoryError, OSError):
                    raise PathRefused(f"{str(rel)!r}: {part!r} is a symlink or not a folder; symlinks are refused") from None
                os.close(fd)
                fd = nxt
            return fd
        except BaseException:
            os.close(fd)
            raise

    # -- reading ---------------------------------------------------------------------------------
    def files(self) -> list[str]:
        """The persona files under the folder, relative, in `steernpc validate`'s order
        (symlinked ones left out: the editor can neither open nor save them)."""
        out = []
        for file in persona_files([self.root]):
            rel = file.relative_to(self.root)
            try:
                self.check_path(rel.as_posix())
            except PathRefused:
                continue
            if any(self.root.joinpath(*rel.parts[: i + 1]).is_symlink() for i in range(len(rel.parts))):
                continue
            out.append(rel.as_posix())
        return out

    def read(self, path: object) -> str:
        rel = self.check_path(path)
        fd = self._open_parent(rel)
        try:
            try:
                ffd = os.open(rel.name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                raise FileNotFoundError(f"persona file {str(rel)!r} does not exist") from None
            except OSError:
                raise PathRefused(f"{str(rel)!r} is a symlink or cannot be opened; symlinks are refused") from None
            with os.fdopen(ffd, "rb") as fh:
                data = fh.read(MAX_PERSONA_FILE + 1)
        finally:
            os.close(fd)
        if len(data) > MAX_PERSONA_FILE:
            raise PathRefused(f"{str(rel)!r} is larger than {MAX_PERSONA_FILE} bytes")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise PathRefused(f"{str(rel)!r} is not UTF-8 text") from None

    # -- validating and saving ---------------------------------------------------------------------
    def validate(self, path: object, text: str, registry=None) -> list[Problem]:
        """The problems `steernpc validate` would print for `text` saved at `path` ([] = good).
        `registry` (a CharacterRegistry) catches an id that another file already serves."""
        rel = self.check_path(path)
        display = self.display(rel)
        if len(text.encode("utf-8")) > MAX_PERSONA_FILE:
            return [Problem(display, 1, f"the file is larger than {MAX_PERSONA_FILE} bytes")]
        try:
            persona = persona_from_located(parse_located(text, display), base_dir=self.root / rel.parent)
        except (PersonaError, SourceError) as exc:
            return list(exc.problems)
        if registry is not None:
            target = self.root / rel
            for other in registry.all():
                if other.id == persona.id and Path(os.path.realpath(other.source)) != target:
                    src = parse_located(text, display)
                    return [Problem(display, src.line("id"), f"id {persona.id!r} is already used by {other.source}")]
        return []

    def save(self, path: object, text: str, registry=None) -> list[Problem]:
        """Write `text` to `path` if it validates; return the problems (then nothing is written)."""
        problems = self.validate(path, text, registry)
        if problems:
            return problems
        rel = self.check_path(path)
        fd = self._open_parent(rel)
        try:
            try:  # the target itself must not be a symlink (rename would replace the link, but refuse it plainly)
                st = os.stat(rel.name, dir_fd=fd, follow_symlinks=False)
                if not _is_regular(st):
                    raise PathRefused(f"{str(rel)!r} is a symlink or not a regular file; symlinks are refused")
            except FileNotFoundError:
                pass
            tmp = f".{rel.name}.{secrets.token_hex(6)}.tmp"
            tfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=fd)
            try:
                with os.fdopen(tfd, "wb") as fh:
                    fh.write(text.encode("utf-8"))
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, rel.name, src_dir_fd=fd, dst_dir_fd=fd)
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=fd)
                except FileNotFoundError:
                    pass
                raise
        finally:
            os.close(fd)
        return []


def _is_regular(st: os.stat_result) -> bool:
    import stat

    return stat.S_ISREG(st.st_mode)
