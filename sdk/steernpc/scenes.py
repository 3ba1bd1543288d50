"""Scenes: several NPCs in one conversation, and who speaks next.

A scene is a table of members (characters) and the player. It keeps one shared transcript
of lines, each with its speaker's id and name. Every member has its own session state
(mood, steer; its persona's limits apply to it alone) and sees the transcript from its
own point of view: its own lines are its replies, everyone else's lines (the player's and
the other members') reach it as "Name: text" in the player's turn of its prompt. Its
prompt is built from its own persona card and its own attribute vector only
(scene_turns.py), so one NPC's profile never enters another's prompt.

Who speaks (deterministic; the same scene state always picks the same member):

    player line  1. the members addressed by id, in the order given;
                 2. else the first member the line names ("Brom, ask Marta ..." -> Brom;
                    Marta may answer in the banter that follows);
                 3. else the last member who spoke (the player is talking with them);
                 4. else the seeded tie-break among all members.
    banter line  (Continue; never the member who spoke last)
                 1. the first member the last line names;
                 2. else the last speaker's counterpart: the member it answered, i.e. the
                    latest other member who spoke before it (after a player line: the
                    last member who spoke);
                 3. else the first other member named by the newest earlier line that
                    names one ("Brom, tell Marta ..." -> Marta after Brom's answer);
                 4. else the seeded tie-break among the others.

A line names a member when it contains, as a whole word, the member's full name or a word
of it with 3+ letters (case as written in the name: "Brom", "Ironhand") that no other
member's name shares. The seeded tie-break takes the member who spoke least recently
(never spoken first), then the lowest sha256 of (scene seed, line number, member id).

A member who joins mid-scene hears the lines from its arrival on; a member who leaves
keeps its lines in the transcript (under its name), and a later member with the same id
is a new arrival.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from steernpc.limits import MAX_CONTINUE_TURNS, MAX_MEMBERS, MAX_SCENE_LINES, echo  # noqa: F401 (the scene limits, re-exported)
from steernpc.prompt import Exchange

PLAYER_ID = "player"  # the speaker id of the player's lines (no member may take it)
PLAYER_NAME = "Player"  # the player's name in transcripts when the scene has none
SCENE_OPENING = "(The scene begins.)"  # a member's first turn when nobody has spoken to it yet
GO_ON = "(The others wait for you to go on.)"  # when nothing new was said since its last line


class SceneError(ValueError):
    """A scene request that cannot be done; subclasses say which status it is."""


class UnknownMember(SceneError):
    """No member with this id in the scene (NOT_FOUND)."""


class EmptyScene(SceneError):
    """The scene has no member to answer (FAILED_PRECONDITION)."""


class MemberExists(SceneError):
    """A member with this id is already in the scene (ALREADY_EXISTS)."""


class SceneFull(SceneError):
    """The scene has MAX_MEMBERS members (FAILED_PRECONDITION)."""


@dataclass
class Line:
    """One line of the shared transcript."""

    speaker_id: str  # PLAYER_ID or a member id
    speaker: str  # the speaker's name when it spoke
    text: str
    labels: dict[str, int] = field(default_factory=dict)  # a member's line: the vector it was made under


@dataclass
class Member:
    """A character at the table, with its own session state."""

    member_id: str
    character_id: str
    name: str  # how the others and the transcript call it (default: the persona's name)
    mood: str = ""
    steer: dict[str, int] = field(default_factory=dict)
    joined_at: int = 0  # the absolute number of the first line it heard

    def apply_steer(self, mood: str | None = None, attributes: Mapping[str, int] | None = None, clear: bool = False) -> None:
        """As Session.apply_steer: `clear` first, a non-empty mood replaces, attributes merge."""
        if clear:
            self.mood, self.steer = "", {}
        if mood:
            self.mood = mood
        if attributes:
            self.steer.update({k: int(v) for k, v in attributes.items()})


@dataclass
class Scene:
    scene_id: str
    player_name: str = ""
    context: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    members: list[Member] = field(default_factory=list)
    transcript: list[Line] = field(default_factory=list)
    offset: int = 0  # lines dropped from the front so far (transcript[0] is line `offset`)
    created_at: float = field(default_factory=time.time)
    updated_at: float = 0.0

    def __post_init__(self) -> None:
        if not self.updated_at:
            self.updated_at = self.created_at

    @classmethod
    def new(cls, scene_id: str | None = None, *, player_name: str = "", context: Mapping[str, str] | None = None,
            seed: int | None = None) -> "Scene":  # fmt: skip
        """A new scene without members; a random id when `scene_id` is empty, a random
        seed when `seed` is None or 0."""
        return cls(scene_id=scene_id or uuid.uuid4().hex, player_name=player_name, context=dict(context or {}),
                   seed=seed or secrets.randbits(63))  # fmt: skip

    # -- members ---------------------------------------------------------------------------
    def member(self, member_id: str) -> Member:
        for m in self.members:
            if m.member_id == member_id:
                return m
        known = ", ".join(m.member_id for m in self.members) or "none"
        raise UnknownMember(f"member {echo(member_id)} is not in scene {echo(self.scene_id)}; members: {known}")

    def has(self, member_id: str) -> bool:
        return any(m.member_id == member_id for m in self.members)

    def join(self, member_id: str, character_id: str, name: str, mood: str = "", steer: Mapping[str, int] | None = None) -> Member:
        """Add a member; it hears the lines from now on."""
        if member_id == PLAYER_ID:
            raise SceneError(f"member_id {PLAYER_ID!r} is the player's; choose another id")
        if self.has(member_id):
            raise MemberExists(f"member {echo(member_id)} is already in scene {echo(self.scene_id)}")
        if len(self.members) >= MAX_MEMBERS:
            raise SceneFull(f"scene {echo(self.scene_id)} is full: {len(self.members)} members (at most {MAX_MEMBERS})")
        member = Member(member_id, character_id, name, mood, dict(steer or {}), joined_at=self.lines)
        self.members.append(member)
        self.touch()
        return member

    def leave(self, member_id: str) -> Member:
        member = self.member(member_id)
        self.members.remove(member)
        self.touch()
        return member

    def require_members(self, what: str = "answer") -> None:
        if not self.members:
            raise EmptyScene(f"scene {echo(self.scene_id)} has no members to {what}; JoinScene first")

    # -- the transcript ----------------------------------------------------------------------
    @property
    def lines(self) -> int:
        """The absolute number of the next line (lines dropped from the front included)."""
        return self.offset + len(self.transcript)

    @property
    def player(self) -> str:
        return self.player_name or PLAYER_NAME

    def record(self, speaker_id: str, text: str, labels: Mapping[str, int] | None = None) -> Line:
        """Append a line by the player (PLAYER_ID) or a present member."""
        name = self.player if speaker_id == PLAYER_ID else self.member(speaker_id).name
        line = Line(speaker_id, name, text, dict(labels or {}))
        self.transcript.append(line)
        self.touch()
        return line

    def trim(self, keep: int) -> int:
        """Keep only the newest `keep` lines; return how many were dropped."""
        dropped = max(0, len(self.transcript) - keep)
        if dropped:
            del self.transcript[:dropped]
            self.offset += dropped
            self.touch()
        return dropped

    def heard(self, member: Member) -> list[Line]:
        """The lines `member` was present for."""
        return self.transcript[max(0, member.joined_at - self.offset):]

    def view(self, member: Member) -> tuple[list[Exchange], str]:
        """The transcript from `member`'s point of view: its history (others' lines as the
        player's turn, its own lines as replies with their labels) and what it now answers."""
        exchanges: list[Exchange] = []
        pending: list[str] = []
        for line in self.heard(member):
            if line.speaker_id == member.member_id:
                exchanges.append(Exchange("\n".join(pending) or SCENE_OPENING, line.text, dict(line.labels)))
                pending = []
            else:
                pending.append(f"{line.speaker}: {line.text}")
        return exchanges, "\n".join(pending) or GO_ON

    def last_speaker(self) -> str | None:
        """Who spoke the newest line (PLAYER_ID, a member id, or None for none)."""
        return self.transcript[-1].speaker_id if self.transcript else None

    def touch(self) -> None:
        self.updated_at = max(time.time(), self.created_at)

    def copy(self) -> "Scene":
        return Scene(
            scene_id=self.scene_id, player_name=self.player_name, context=dict(self.context), seed=self.seed,
            members=[Member(m.member_id, m.character_id, m.name, m.mood, dict(m.steer), m.joined_at) for m in self.members],
            transcript=[Line(x.speaker_id, x.speaker, x.text, dict(x.labels)) for x in self.transcript],
            offset=self.offset, created_at=self.created_at, updated_at=self.updated_at,
        )  # fmt: skip


# -- who speaks ----------------------------------------------------------------------------------

def name_words(member: Member, others: Sequence[Member]) -> list[str]:
    """What names `member` in a line: its full name and its name's words of 3+ letters that
    no other member's name has."""
    shared = {w for o in others if o is not member for w in o.name.split()}
    words = [w for w in member.name.split() if len(w) >= 3 and w not in shared]
    return [member.name, *words]


def named_members(scene: Scene, text: str, among: Sequence[Member] | None = None) -> list[str]:
    """The members `text` names, in the order of their first mention."""
    among = scene.members if among is None else among
    found: list[tuple[int, int, str]] = []
    for order, member in enumerate(among):
        first = None
        for word in name_words(member, scene.members):
            m = re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text)
            if m and (first is None or m.start() < first):
                first = m.start()
        if first is not None:
            found.append((first, order, member.member_id))
    return [member_id for _, _, member_id in sorted(found)]


def tie_break(scene: Scene, candidates: Sequence[Member]) -> str:
    """The seeded tie-break: least recently spoken first, then the lowest
    sha256(seed:line number:member id)."""
    last_spoke = {}
    for i, line in enumerate(scene.transcript):
        last_spoke[line.speaker_id] = i

    def rank(member: Member):
        digest = hashlib.sha256(f"{scene.seed}:{scene.lines}:{member.member_id}".encode()).hexdigest()
        return (last_spoke.get(member.member_id, -1), digest)

    return min(candidates, key=rank).member_id


def responders(scene: Scene, text: str, member_ids: Sequence[str] = ()) -> list[str]:
    """Who answers the player's line `text` (see the module docstring); raises
    EmptyScene or UnknownMember. Call before recording the line."""
    scene.require_members()
    if member_ids:
        out: list[str] = []
        for member_id in member_ids:
            scene.member(member_id)  # UnknownMember
            if member_id not in out:
                out.append(member_id)
        return out
    named = named_members(scene, text)
    if named:
        return named[:1]
    for line in reversed(scene.transcript):
        if line.speaker_id != PLAYER_ID and scene.has(line.speaker_id):
            return [line.speaker_id]
    return [tie_break(scene, scene.members)]


def next_speaker(scene: Scene) -> str:
    """Who says the next banter line (see the module docstring); raises EmptyScene, or
    SceneError when one member alone cannot banter."""
    scene.require_members("banter")
    if len(scene.members) < 2:
        raise EmptyScene(f"scene {echo(scene.scene_id)} has one member: banter needs two")
    last = scene.last_speaker()
    others = [m for m in scene.members if m.member_id != last]
    if scene.transcript:
        named = named_members(scene, scene.transcript[-1].text, others)
        if named:
            return named[0]
        for line in reversed(scene.transcript[:-1]):
            if line.speaker_id not in (last, PLAYER_ID) and scene.has(line.speaker_id):
                return line.speaker_id
        for line in reversed(scene.transcript[:-1]):
            named = named_members(scene, line.text, others)
            if named:
                return named[0]
    return tie_break(scene, others)
