"""Dataset formats and converters.

Every conversational format is read into one in-memory shape, `Conversation` (a system
text, a list of `Turn`s of user line + reply + labels), and written back out from it:

=============  ====  =====  ===================================================================
name           read  write  shape (one JSON object per line unless noted)
=============  ====  =====  ===================================================================
``nemo``       yes   yes    NeMo SteerLM: {"system", "mask": "User", "type": "VALUE_TO_TEXT",
                            "conversations": [{"from": "User", "value", "label": null},
                            {"from": "Assistant", "value", "label": "quality:4,..."}]}
``regression`` yes   yes    NeMo APM regression: {"text": <NeMo prompt up to and including the
                            reply> + "<extra_id_2>", "label": [floats in schema order, -100 =
                            missing]}
``npc``        yes   yes    SteerNPC dialogue: {"id"?, "character"?, "category"?, "system"?,
                            "turns": [{"user", "reply", "labels"?: {name: int} or "a:1,b:2",
                            "emotion"?, "action"?: {"name", "args"}}]}; other keys are ignored
``helpsteer``  yes   yes    HelpSteer / HelpSteer2 rows: {"prompt", "response", "helpfulness",
                            "correctness", "coherence", "complexity", "verbosity"}; HelpSteer2's
                            multi-turn prompts use "<extra_id_1>" separators
``oasst``      yes   no     OpenAssistant message trees ({"message_tree_id", "prompt": {message
                            with "replies": [...]}}); one conversation per root-to-leaf path;
                            labels quality/toxicity/humor/creativity (0..1) -> round(v * 4)
``chitchat``   yes   no     the `chitchat-dataset` package's dataset.json (IN = ``chitchat`` or a
                            path); npc schema labels, see `chitchat_labels`
=============  ====  =====  ===================================================================

Files ending in ``.gz`` are read and written gzip-compressed. A malformed line raises
`DataError` naming FILE:LINE; with ``skip_bad=True`` it is skipped and counted instead.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from steernpc.attributes import AttributeSchema, InvalidAttribute, parse_pairs
from steernpc.prompt import NEMO_BOS, NEMO_LABEL, NEMO_SYSTEM, NEMO_TURN, Exchange

from steernpc_train.records import Conversation, DataError, Turn  # noqa: F401 (re-exported: the record types)

READ_FORMATS = ("nemo", "regression", "npc", "helpsteer", "oasst", "chitchat")
WRITE_FORMATS = ("nemo", "regression", "npc", "helpsteer")
MISSING = -100  # NeMo's "no label" value in the regression format

NEMO_ATTRIBUTES = (
    "quality", "toxicity", "humor", "creativity",  # OASST
    "helpfulness", "correctness", "coherence", "complexity", "verbosity",  # HelpSteer
)  # fmt: skip
OASST_ATTRIBUTES = NEMO_ATTRIBUTES[:4]
HELPSTEER_ATTRIBUTES = NEMO_ATTRIBUTES[4:]


@dataclass
class RegressionExample:
    text: str
    label: list[float]
    source: tuple[str, int] = ("", 0)


@dataclass
class ReadStats:
    records: int = 0
    skipped: int = 0
    first_errors: list[str] = field(default_factory=list)

    def skip(self, err: DataError) -> None:
        self.skipped += 1
        if len(self.first_errors) < 5:
            self.first_errors.append(str(err))


# -- files ------------------------------------------------------------------------------------

def open_text(path: str | os.PathLike, mode: str = "r") -> io.TextIOBase:
    path = str(path)
    if path.endswith(".gz"):
        return gzip.open(path, mode + "t", encoding="utf-8")
    return open(path, mode, encoding="utf-8", newline="\n" if "w" in mode or "a" in mode else None)


def _json_lines(path: str | os.PathLike, stats: ReadStats | None, skip_bad: bool) -> Iterator[tuple[int, Any]]:
    with open_text(path) as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                yield lineno, json.loads(raw)
            except json.JSONDecodeError as exc:
                err = DataError(path, lineno, f"not valid JSON: {exc.msg} (column {exc.colno})")
                if not skip_bad:
                    raise err from None
                if stats is not None:
                    stats.skip(err)


def _records(path, parse, stats: ReadStats | None, skip_bad: bool) -> Iterator[Any]:
    """Run `parse(obj, file, line)` (returns a record or a list of records) per JSON line."""
    stats = stats if stats is not None else ReadStats()
    for lineno, obj in _json_lines(path, stats, skip_bad):
        try:
            out = parse(obj, str(path), lineno)
        except DataError as err:
            if not skip_bad:
                raise
            stats.skip(err)
            continue
        except (InvalidAttribute, KeyError, TypeError, ValueError, AttributeError) as exc:
            err = DataError(path, lineno, f"{type(exc).__name__}: {exc}")
            if not skip_bad:
                raise err from None
            stats.skip(err)
            continue
        for rec in out if isinstance(out, list) else [out]:
            stats.records += 1
            yield rec


def _need_str(obj: Mapping, key: str, file: str, line: int, where: str = "") -> str:
    value = obj.get(key) if isinstance(obj, Mapping) else None
    if not isinstance(value, str):
        raise DataError(file, line, f"{where}{key!r} must be a string, got {type(value).__name__}")
    return value


def labels_from_text(text: str, file: str = "", line: int = 0) -> dict[str, int]:
    try:
        return parse_pairs(text, "label")
    except InvalidAttribute as exc:
        raise DataError(file, line, str(exc)) from None


def labels_to_text(labels: Mapping[str, int]) -> str:
    return ",".join(f"{k}:{int(v)}" for k, v in labels.items())


# -- nemo -------------------------------------------------------------------------------------

def parse_nemo(obj: Any, file: str, line: int) -> Conversation:
    if not isinstance(obj, dict):
        raise DataError(file, line, "a NeMo SteerLM record must be a JSON object")
    system = obj.get("system", NEMO_SYSTEM)
    if not isinstance(system, str):
        raise DataError(file, line, "'system' must be a string")
    convs = obj.get("conversations")
    if not isinstance(convs, list) or not convs:
        raise DataError(file, line, "'conversations' must be a non-empty list of {from, value, label}")
    turns: list[Turn] = []
    for i, msg in enumerate(convs):
        where = f"conversations[{i}]."
        if not isinstance(msg, dict):
            raise DataError(file, line, f"conversations[{i}] must be an object")
        role = msg.get("from")
        value = _need_str(msg, "value", file, line, where)
        label = msg.get("label")
        if label is not None and not isinstance(label, str):
            raise DataError(file, line, f"{where}label must be a string like 'quality:4,toxicity:0' or null")
        if role == "User":
            if turns and turns[-1].reply is None:
                raise DataError(file, line, f"conversations[{i}]: two User turns in a row")
            turns.append(Turn(value, None, None, label))
        elif role == "Assistant":
            if not turns or turns[-1].reply is not None:
                raise DataError(file, line, f"conversations[{i}]: an Assistant turn must follow a User turn")
            turns[-1].reply = value
            turns[-1].labels = labels_from_text(label, file, line) if label else None
        else:
            raise DataError(file, line, f"{where}from = {role!r}; expected 'User' or 'Assistant'")
    weight = obj.get("weight")
    if weight is not None and not isinstance(weight, (int, float)):
        raise DataError(file, line, "'weight' must be a number")
    return Conversation(turns, system=system, weight=weight, source=(file, line))


def to_nemo(conv: Conversation) -> dict:
    messages = []
    for t in conv.turns:
        messages.append({"from": "User", "value": t.user, "label": t.user_label})
        if t.reply is not None:
            messages.append({"from": "Assistant", "value": t.reply, "label": labels_to_text(t.labels) if t.labels else None})
    out = {"system": conv.system if conv.system is not None else NEMO_SYSTEM, "mask": "User", "type": "VALUE_TO_TEXT", "conversations": messages}
    if conv.weight is not None:
        out["weight"] = conv.weight
    return out


# -- npc --------------------------------------------------------------------------------------

def parse_npc(obj: Any, file: str, line: int) -> Conversation:
    from steernpc_train.scenes import is_scene_record, parse_scene

    if is_scene_record(obj):  # several speakers: expanded per member with the personas (sft)
        record = parse_scene(obj, file, line)
        return Conversation([], character=None, id=record.id, source=(file, line), scene_record=record)
    if not isinstance(obj, dict):
        raise DataError(file, line, "an NPC dialogue record must be a JSON object with 'turns'")
    for key in ("id", "character", "system"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise DataError(file, line, f"{key!r} must be a string")
    raw = obj.get("turns")
    if not isinstance(raw, list) or not raw:
        raise DataError(file, line, "'turns' must be a non-empty list of {user, reply, labels?}")
    turns = []
    for i, t in enumerate(raw):
        where = f"turns[{i}]."
        if not isinstance(t, dict):
            raise DataError(file, line, f"turns[{i}] must be an object")
        user = _need_str(t, "user", file, line, where)
        reply = t.get("reply")
        if reply is not None and not isinstance(reply, str):
            raise DataError(file, line, f"{where}reply must be a string")
        if reply is None and i != len(raw) - 1:
            raise DataError(file, line, f"{where}reply is missing (only the last turn may be a bare prompt)")
        labels = t.get("labels")
        if isinstance(labels, str):
            labels = labels_from_text(labels, file, line)
        elif isinstance(labels, dict):
            for k, v in labels.items():
                if isinstance(v, bool) or not isinstance(v, int):
                    raise DataError(file, line, f"{where}labels.{k} = {v!r} must be an integer")
        elif labels is not None:
            raise DataError(file, line, f"{where}labels must be {{name: int}} or 'name:int,...'")
        emotion, action = t.get("emotion"), t.get("action")
        if emotion is not None and not isinstance(emotion, str):
            raise DataError(file, line, f"{where}emotion must be a string")
        if action is not None and not (isinstance(action, dict) and isinstance(action.get("name"), str)):
            raise DataError(file, line, f"{where}action must be {{\"name\": str, \"args\": {{...}}}}")
        turns.append(Turn(user, reply, dict(labels) if labels else None, emotion=emotion, action=action))
    category = obj.get("category")
    if category is not None and not isinstance(category, str):
        raise DataError(file, line, "'category' must be a string")
    return Conversation(turns, system=obj.get("system"), character=obj.get("character"), id=obj.get("id"),
                        weight=obj.get("weight"), source=(file, line), category=category)


def to_npc(conv: Conversation) -> dict:
    out: dict[str, Any] = {}
    if conv.id is not None:
        out["id"] = conv.id
    if conv.character is not None:
        out["character"] = conv.character
    if conv.category is not None:
        out["category"] = conv.category
    if conv.system is not None:
        out["system"] = conv.system
    turns = []
    for t in conv.turns:
        item: dict[str, Any] = {"user": t.user, "reply": t.reply}
        if t.labels:
            item["labels"] = dict(t.labels)
        if t.emotion is not None:
            item["emotion"] = t.emotion
        if t.action is not None:
            item["action"] = t.action
        turns.append(item)
    out["turns"] = turns
    if conv.weight is not None:
        out["weight"] = conv.weight
    return out


# -- helpsteer --------------------------------------------------------------------------------

def _helpsteer_prompt(prompt: str) -> tuple[list[Turn], str]:
    """HelpSteer2 packs earlier turns into the prompt, NeMo-template style:
    'u1\n<extra_id_1>Assistant\na1\n<extra_id_1>User\nu2' (the newline before each marker is
    optional here)."""
    parts = prompt.split(NEMO_TURN)
    strip = lambda text: text[:-1] if text.endswith("\n") else text  # noqa: E731
    turns = [Turn(strip(parts[0]) if len(parts) > 1 else parts[0])]
    for n, part in enumerate(parts[1:], 2):
        role, _, text = part.partition("\n")
        text = strip(text) if n < len(parts) else text
        if role == "Assistant":
            turns[-1].reply = text
        elif role == "User":
            turns.append(Turn(text))
        else:
            raise ValueError(f"HelpSteer2 prompt has an unknown turn {role!r}")
    last = turns.pop()
    if any(t.reply is None for t in turns):
        raise ValueError("HelpSteer2 prompt has two User turns in a row")
    return turns, last.user


def parse_helpsteer(obj: Any, file: str, line: int) -> Conversation:
    if not isinstance(obj, dict):
        raise DataError(file, line, "a HelpSteer row must be a JSON object")
    prompt = _need_str(obj, "prompt", file, line)
    response = _need_str(obj, "response", file, line)
    labels: dict[str, int] = {}
    for name in HELPSTEER_ATTRIBUTES:
        value = obj.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
            raise DataError(file, line, f"{name} = {value!r} must be an integer 0..4")
        labels[name] = int(value)
    history, user = _helpsteer_prompt(prompt)
    return Conversation(history + [Turn(user, response, labels or None)], system=None, source=(file, line))


def to_helpsteer(conv: Conversation) -> dict:
    *history, last = conv.turns
    prompt = conv.turns[0].user
    for turn, nxt in zip(history, conv.turns[1:]):
        prompt += f"\n{NEMO_TURN}Assistant\n{turn.reply}\n{NEMO_TURN}User\n{nxt.user}"
    out: dict[str, Any] = {"prompt": prompt, "response": last.reply or ""}
    for name in HELPSTEER_ATTRIBUTES:
        if last.labels and name in last.labels:
            out[name] = last.labels[name]
    return out


# -- oasst ------------------------------------------------------------------------------------

def oasst_labels(raw: Any) -> dict[str, int] | None:
    """OASST label values are 0..1; NeMo maps them to 0..4 with round(v * 4)."""
    if not raw:
        return None
    if isinstance(raw, dict) and isinstance(raw.get("name"), list):  # flat oasst1 export
        raw = {n: {"value": v} for n, v in zip(raw["name"], raw.get("value", []))}
    out = {}
    for name in OASST_ATTRIBUTES:
        item = raw.get(name)
        value = item.get("value") if isinstance(item, dict) else item
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = round(value * 4)
    return out or None


def _oasst_paths(msg: dict) -> list[list[dict]]:
    replies = [r for r in msg.get("replies") or [] if isinstance(r, dict) and not r.get("deleted")]
    if not replies:
        return [[msg]]
    return [[msg] + rest for r in replies for rest in _oasst_paths(r)]


def parse_oasst(obj: Any, file: str, line: int) -> list[Conversation]:
    if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), dict):
        raise DataError(file, line, "an OASST tree must be an object with a 'prompt' message")
    out = []
    tree_id = obj.get("message_tree_id")
    for n, path in enumerate(_oasst_paths(obj["prompt"])):
        turns: list[Turn] = []
        for msg in path:
            text, role = msg.get("text"), msg.get("role")
            if not isinstance(text, str):
                raise DataError(file, line, f"message {msg.get('message_id')!r} has no text")
            if role == "prompter":
                if turns and turns[-1].reply is None:
                    raise DataError(file, line, f"message {msg.get('message_id')!r}: two prompter messages in a row")
                turns.append(Turn(text))
            elif role == "assistant":
                if not turns or turns[-1].reply is not None:
                    raise DataError(file, line, f"message {msg.get('message_id')!r}: assistant message without a prompt")
                turns[-1].reply = text
                turns[-1].labels = oasst_labels(msg.get("labels"))
            else:
                raise DataError(file, line, f"message role {role!r}; expected prompter or assistant")
        if turns and turns[-1].reply is None:
            turns.pop()
        if turns:
            out.append(Conversation(turns, system=None, id=f"{tree_id}/{n}" if tree_id else None, source=(file, line)))
    return out


# -- chitchat ---------------------------------------------------------------------------------

# Reply length (words) -> verbosity 0..4: upper bounds of buckets 0..3; longer is 4.
VERBOSITY_WORD_BOUNDS = (3, 7, 15, 30)


def verbosity_bucket(text: str, bounds: Sequence[int] = VERBOSITY_WORD_BOUNDS) -> int:
    words = len(text.split())
    for level, bound in enumerate(bounds):
        if words <= bound:
            return level
    return len(bounds)


def scale_rating(value: float, low: float = 1, high: float = 10, top: int = 4) -> int:
    """A 1..10 rating onto 0..4 with NeMo's rounding (Python round, half to even)."""
    return round(min(top, max(0, (value - low) * top / (high - low))))


def chitchat_labels(ratings: Mapping[str, Any] | None, reply: str) -> dict[str, int]:
    """npc schema labels for a chitchat reply: humor <- witty, friendliness <- upbeat,
    creativity <- interesting (per-conversation 1..10 ratings scaled to 0..4), verbosity <-
    the reply's word count bucketed by VERBOSITY_WORD_BOUNDS. Toxicity is not rated."""
    out: dict[str, int] = {}
    for name, rating in (("humor", "witty"), ("friendliness", "upbeat"), ("creativity", "interesting")):
        value = (ratings or {}).get(rating)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = scale_rating(value)
    out["verbosity"] = verbosity_bucket(reply)
    return out


def chitchat_path(spec: str | os.PathLike = "chitchat") -> Path:
    if str(spec) != "chitchat":
        return Path(spec)
    import chitchat_dataset

    return Path(chitchat_dataset.__file__).resolve().parent / "dataset.json"


def read_chitchat(spec: str | os.PathLike = "chitchat", stats: ReadStats | None = None, skip_bad: bool = False) -> Iterator[Conversation]:
    """One Conversation per chitchat conversation: the starter is the user, the other speaker
    replies; consecutive messages of one speaker are joined with a space."""
    path = chitchat_path(spec)
    stats = stats if stats is not None else ReadStats()
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise DataError(path, 1, "chitchat dataset.json must be an object of id -> conversation")
    for n, (cid, conv) in enumerate(data.items(), 1):
        try:
            groups = conv["messages"]
            speakers: list[tuple[str, str]] = []
            for group in groups:
                text = " ".join(u["text"].strip() for u in group if u.get("text", "").strip())
                if not text:
                    continue
                sender = group[0]["sender"]
                if speakers and speakers[-1][0] == sender:
                    speakers[-1] = (sender, speakers[-1][1] + " " + text)
                else:
                    speakers.append((sender, text))
            turns = []
            for i in range(0, len(speakers) - 1, 2):
                reply = speakers[i + 1][1]
                turns.append(Turn(speakers[i][1], reply, chitchat_labels(conv.get("ratings"), reply)))
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            err = DataError(path, n, f"conversation {cid}: {type(exc).__name__}: {exc}")
            if not skip_bad:
                raise err from None
            stats.skip(err)
            continue
        if turns:
            stats.records += 1
            yield Conversation(turns, system=None, id=cid, source=(str(path), n))


# -- regression -------------------------------------------------------------------------------

def nemo_context(system: str | None, exchanges: Sequence[Exchange]) -> str:
    """NeMo's APM input: the conversation in NeMo's template up to and including the last
    reply, then "<extra_id_2>" (where the label line would start). No label lines inside.
    (NeMo's script always writes its default system prompt here; we write the record's
    own system text, which is that default for NeMo's data.)"""
    text = f"{NEMO_BOS}System\n{system if system is not None else NEMO_SYSTEM}\n"
    for ex in exchanges:
        text += f"{NEMO_TURN}User\n{ex.user}\n"
        if ex.reply is not None:
            text += f"{NEMO_TURN}Assistant\n{ex.reply}\n"
    return text + NEMO_LABEL


_NEMO_BLOCK = re.compile(re.escape(NEMO_TURN) + r"(User|Assistant)\n")


def parse_nemo_context(text: str) -> tuple[str, list[Turn]]:
    """Inverse of nemo_context: (system, turns)."""
    if not text.startswith(f"{NEMO_BOS}System\n") or not text.endswith(NEMO_LABEL):
        raise ValueError(f"regression text must start with '{NEMO_BOS}System\\n' and end with '{NEMO_LABEL}'")
    body = text[len(NEMO_BOS) + len("System\n"): -len(NEMO_LABEL)]
    pieces = _NEMO_BLOCK.split(body)
    system = pieces[0][:-1] if pieces[0].endswith("\n") else pieces[0]
    turns: list[Turn] = []
    for role, chunk in zip(pieces[1::2], pieces[2::2]):
        value = chunk[:-1] if chunk.endswith("\n") else chunk
        if role == "User":
            turns.append(Turn(value))
        else:
            if not turns or turns[-1].reply is not None:
                raise ValueError("an Assistant block must follow a User block")
            turns[-1].reply = value
    if not turns or turns[-1].reply is None:
        raise ValueError("regression text must end with an Assistant reply")
    return system, turns


def parse_regression(obj: Any, file: str, line: int) -> RegressionExample:
    if not isinstance(obj, dict):
        raise DataError(file, line, "a regression record must be {text, label}")
    text = _need_str(obj, "text", file, line)
    label = obj.get("label")
    if not isinstance(label, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in label):
        raise DataError(file, line, "'label' must be a list of numbers (-100 = missing)")
    return RegressionExample(text, [float(v) for v in label], source=(file, line))


def regression_examples(conv: Conversation, schema: AttributeSchema, all_turns: bool = True) -> list[RegressionExample]:
    """One example per labelled reply (NeMo does every turn)."""
    out = []
    idx = range(len(conv.turns)) if all_turns else [len(conv.turns) - 1]
    for i in idx:
        t = conv.turns[i]
        if t.reply is None or not t.labels:
            continue
        label = [float(t.labels[n]) if n in t.labels else float(MISSING) for n in schema.names]
        if all(v == MISSING for v in label):
            continue
        out.append(RegressionExample(nemo_context(conv.system, conv.exchanges(i)), label, conv.source))
    return out


def regression_to_conversation(ex: RegressionExample, schema: AttributeSchema) -> Conversation:
    system, turns = parse_nemo_context(ex.text)
    if len(ex.label) != len(schema):
        raise ValueError(f"label has {len(ex.label)} values; schema {schema.name!r} has {len(schema)}")
    labels = {n: int(round(v)) for n, v in zip(schema.names, ex.label) if v != MISSING}
    turns[-1].labels = labels or None
    return Conversation(turns, system=system, source=ex.source)


def to_regression(ex: RegressionExample) -> dict:
    """As NeMo's process_to_regression_format.py writes it: every label a float (-100.0 = missing)."""
    return {"text": ex.text, "label": [float(v) for v in ex.label]}


# -- generic ----------------------------------------------------------------------------------

_PARSERS = {"nemo": parse_nemo, "npc": parse_npc, "helpsteer": parse_helpsteer, "oasst": parse_oasst}


def sniff_format(path: str | os.PathLike) -> str:
    """Guess a file's format from its name or first record."""
    if str(path) == "chitchat" or Path(path).name == "dataset.json":
        return "chitchat"
    with open_text(path) as fh:
        for raw in fh:
            if raw.strip():
                break
        else:
            raise DataError(path, 1, "empty file: cannot tell its format")
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError:
        raise DataError(path, 1, "not JSON lines: cannot tell its format") from None
    if isinstance(obj, dict):
        if "conversations" in obj:
            return "nemo"
        if "turns" in obj or ("scene" in obj and "lines" in obj):
            return "npc"
        if "text" in obj and "label" in obj:
            return "regression"
        if "prompt" in obj and "response" in obj:
            return "helpsteer"
        if isinstance(obj.get("prompt"), dict):
            return "oasst"
    raise DataError(path, 1, f"cannot tell the format; give one of {', '.join(READ_FORMATS)}")


def read_conversations(
    path: str | os.PathLike,
    fmt: str = "auto",
    schema: AttributeSchema | None = None,
    skip_bad: bool = False,
    stats: ReadStats | None = None,
) -> Iterator[Conversation]:
    """Conversations from any readable format (regression needs `schema` for label names)."""
    fmt = sniff_format(path) if fmt == "auto" else fmt
    if fmt == "chitchat":
        yield from read_chitchat(path, stats, skip_bad)
    elif fmt == "regression":
        if schema is None:
            raise ValueError("reading the regression format as conversations needs --schema (label order)")

        def parse(obj, file, line):
            return regression_to_conversation(parse_regression(obj, file, line), schema)

        yield from _records(path, parse, stats, skip_bad)
    elif fmt in _PARSERS:
        yield from _records(path, _PARSERS[fmt], stats, skip_bad)
    else:
        raise ValueError(f"unknown data format {fmt!r}; readable: {', '.join(READ_FORMATS)}")


def read_regression(
    path: str | os.PathLike,
    schema: AttributeSchema,
    fmt: str = "auto",
    skip_bad: bool = False,
    stats: ReadStats | None = None,
) -> Iterator[RegressionExample]:
    """APM training examples from a regression file or any conversational format."""
    fmt = sniff_format(path) if fmt == "auto" else fmt
    if fmt == "regression":
        for ex in _records(path, parse_regression, stats, skip_bad):
            if len(ex.label) != len(schema):
                err = DataError(ex.source[0], ex.source[1], f"label has {len(ex.label)} values; schema {schema.name!r} has {len(schema)} ({', '.join(schema.names)})")
                if not skip_bad:
                    raise err
                if stats is not None:
                    stats.skip(err)
                continue
            yield ex
        return
    for conv in read_conversations(path, fmt, schema, skip_bad, stats):
        yield from regression_examples(conv, schema)


def write_jsonl(path: str | os.PathLike, objs: Iterable[dict]) -> int:
    n = 0
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open_text(path, "w") as fh:
        for obj in objs:
            fh.write(dumps(obj) + "\n")
            n += 1
    return n


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    from_fmt: str,
    to_fmt: str,
    schema: AttributeSchema | None = None,
    skip_bad: bool = False,
    limit: int = 0,
    cards: dict[str, str] | None = None,
) -> ReadStats:
    """Convert `src` (format `from_fmt`, or "auto") into `dst` (format `to_fmt`); `limit`
    keeps the first N output records. `cards` (character id -> system text) gives records
    that name a `character` and carry no system text their persona's card."""
    import itertools

    cap = (lambda it: itertools.islice(it, limit)) if limit else (lambda it: it)
    if to_fmt not in WRITE_FORMATS:
        raise ValueError(f"cannot write {to_fmt!r}; writable: {', '.join(WRITE_FORMATS)}")
    stats = ReadStats()
    from_fmt = sniff_format(src) if from_fmt == "auto" else from_fmt
    if to_fmt == "regression":
        schema = schema or AttributeSchema.builtin("nemo")
        examples = read_regression(src, schema, from_fmt, skip_bad, stats)
        write_jsonl(dst, cap(to_regression(e) for e in examples))
        return stats
    convs = read_conversations(src, from_fmt, schema or AttributeSchema.builtin("nemo"), skip_bad, stats)
    writer = {"nemo": to_nemo, "npc": to_npc, "helpsteer": to_helpsteer}[to_fmt]

    def with_card(conv: Conversation) -> Conversation:
        if cards and conv.system is None and conv.character in cards:
            conv.system = cards[conv.character]
        return conv

    write_jsonl(dst, cap(writer(with_card(c)) for c in convs))
    return stats
