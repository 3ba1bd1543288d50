"""SteerLM prompt formats: build prompts and training segments, parse label lines back.

`nemo` is byte-for-byte NeMo SteerLM's template, so NVIDIA's released SteerLM checkpoints
serve unchanged. `verbal` is the project's own variant of it: the same template, with each
label written as its level's word (`humor:dry,friendliness:warm,...`, from the schema's
`levels`), so that a small model starts from what the words already mean. `chat` puts the persona card and the label line into the system message
of the base model's own chat template (SmolLM2 and most HF chat models).

Training (`steernpc train sft`) and serving use the same `segments()`, so a model is trained
on exactly the strings it is served with.

The structured tail (steernpc.actions; opt-in: only a model trained with tails writes one).
After the spoken reply the model writes the format's TAIL marker and one tail line:

    nemo, verbal:  ...<extra_id_2>{labels}\n{reply}\n<extra_id_3>{tail}\n<extra_id_1>
    chat:          the assistant message is  {reply}\n<tail>{tail}\n

e.g. `{reply}\n<extra_id_3>angry call_guards()\n<extra_id_1>`. Only the last exchange of a
training example carries a tail (the runtime keeps no tails in a session's history), and
the reply, the marker, the tail line and the end of turn are tokenized as separate pieces,
as the runtime generates them: the reply phase stops at the marker (it is never streamed),
the runtime writes the marker itself, and the tail line is decoded under the persona's
grammar. Without tails every prompt and training string is byte-identical to the formats
above.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from steernpc.attributes import AttributeSchema, InvalidAttribute

FORMATS = ("nemo", "verbal", "chat")
# Formats built on NeMo's template: label line right before each reply, stop at <extra_id_1>.
NEMO_FORMATS = ("nemo", "verbal")

NEMO_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
NEMO_BOS = "<extra_id_0>"
NEMO_TURN = "<extra_id_1>"
NEMO_LABEL = "<extra_id_2>"
NEMO_STOP = NEMO_TURN

# The chat format's label line, the last line of the system message.
CHAT_LABEL_PREFIX = "Attributes: "

# The structured tail's marker: it follows the reply (the reply phase stops at the marker
# text without its newline, which the reply's trailing whitespace absorbs).
NEMO_TAIL = "<extra_id_3>"
CHAT_TAIL = "<tail>"


def tail_marker(fmt: str) -> str:
    """The text the runtime writes between a reply and its tail line."""
    if fmt in NEMO_FORMATS:
        return "\n" + NEMO_TAIL
    if fmt == "chat":
        return "\n" + CHAT_TAIL
    raise ValueError(f"unknown prompt format {fmt!r}; formats: {', '.join(FORMATS)}")


@dataclass
class Exchange:
    """One player line and the NPC's reply, with the attribute vector the reply was made under."""

    user: str
    reply: str | None = None
    labels: dict[str, int] = field(default_factory=dict)
    tail: str | None = None  # the structured tail line (training only; steernpc.actions)


def _label_line(schema: AttributeSchema, labels: Mapping[str, int] | str, words: bool = False) -> str:
    return labels if isinstance(labels, str) else schema.encode(labels, words=words)


# -- nemo and verbal -------------------------------------------------------------------------

def nemo_segments(
    system: str, exchanges: Sequence[Exchange], schema: AttributeSchema, words: bool = False
) -> list[tuple[str, bool]]:
    """(text, trains) pieces; a final exchange without reply ends at the generation point.
    `words`: the label line in level words (the `verbal` format).

    Loss goes on every assistant reply and its end-of-turn marker ("\\n<extra_id_1>"),
    never on system, user or label text (NeMo's mask "User").
    """
    out: list[tuple[str, bool]] = [(f"{NEMO_BOS}System\n{system}\n", False)]
    apart: set[int] = set()
    marker = NEMO_TURN  # a reply's end-of-turn marker is also the next turn's opener
    for i, ex in enumerate(exchanges):
        labels = _label_line(schema, ex.labels, words)
        out.append((f"{marker}User\n{ex.user}\n{NEMO_TURN}Assistant\n{NEMO_LABEL}{labels}\n", False))
        if ex.reply is not None:
            if ex.tail is not None and i == len(exchanges) - 1:
                apart.update(range(len(out), len(out) + 4))
                out += [(ex.reply, True), ("\n" + NEMO_TAIL, True), (ex.tail + "\n", True), (NEMO_TURN, True)]
            else:
                out.append((f"{ex.reply}\n{NEMO_TURN}", True))
            marker = ""
    return _merge(out, apart)


def _merge(pieces: list[tuple[str, bool]], apart: set[int] = frozenset()) -> list[tuple[str, bool]]:
    """Join neighbouring pieces that train alike, except those at the indexes in `apart`
    (a tail's pieces, tokenized one by one as the runtime generates them)."""
    merged: list[tuple[str, bool]] = []
    last_apart = False
    for i, (text, trains) in enumerate(pieces):
        if merged and merged[-1][1] == trains and not (i in apart or last_apart):
            merged[-1] = (merged[-1][0] + text, trains)
        elif text:
            merged.append((text, trains))
        last_apart = i in apart
    return merged


# -- chat ------------------------------------------------------------------------------------

def chat_system(system: str, schema: AttributeSchema, labels: Mapping[str, int] | str) -> str:
    return f"{system}\n{CHAT_LABEL_PREFIX}{_label_line(schema, labels)}"


def _render(tokenizer: Any, messages: list[dict], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def chat_segments(
    system: str, exchanges: Sequence[Exchange], schema: AttributeSchema, tokenizer: Any
) -> list[tuple[str, bool]]:
    """The chat template's text cut into pieces. The system message carries the label line
    of the *last* exchange, so loss goes on the last reply only (earlier replies may have
    been made under other attributes) plus its end-of-turn marker."""
    if not exchanges:
        raise ValueError("chat prompt needs at least one exchange")
    messages = [{"role": "system", "content": chat_system(system, schema, exchanges[-1].labels)}]
    for ex in exchanges[:-1]:
        messages += [{"role": "user", "content": ex.user}, {"role": "assistant", "content": ex.reply or ""}]
    messages.append({"role": "user", "content": exchanges[-1].user})
    prompt = _render(tokenizer, messages, True)
    last = exchanges[-1]
    if last.reply is None:
        return [(prompt, False)]
    content = last.reply if last.tail is None else f"{last.reply}\n{CHAT_TAIL}{last.tail}\n"
    full = _render(tokenizer, messages + [{"role": "assistant", "content": content}], False)
    if not full.startswith(prompt):
        raise ValueError("this chat template does not render the conversation as a prefix of itself")
    answer = full[len(prompt):]
    if last.tail is None:
        return _merge([(prompt, False), (answer, True)])
    at = answer.find(content)
    if at < 0:
        raise ValueError("this chat template changes the assistant message; a tail cannot be placed in it")
    reply_end = at + len(last.reply)
    tail_end = reply_end + 1 + len(CHAT_TAIL) + len(last.tail) + 1
    pieces = [(prompt, False), (answer[:reply_end], True), ("\n" + CHAT_TAIL, True),
              (last.tail + "\n", True), (answer[tail_end:], True)]  # fmt: skip
    return _merge(pieces, {1, 2, 3, 4})


# -- both ------------------------------------------------------------------------------------

def segments(
    fmt: str,
    system: str,
    exchanges: Sequence[Exchange],
    schema: AttributeSchema,
    tokenizer: Any = None,
) -> list[tuple[str, bool]]:
    if fmt in NEMO_FORMATS:
        return nemo_segments(system, exchanges, schema, words=fmt == "verbal")
    if fmt == "chat":
        if tokenizer is None:
            raise ValueError("the chat format needs the model's tokenizer (its chat template)")
        return chat_segments(system, exchanges, schema, tokenizer)
    raise ValueError(f"unknown prompt format {fmt!r}; formats: {', '.join(FORMATS)}")


def build_prompt(
    fmt: str,
    system: str,
    history: Sequence[Exchange],
    user: str,
    labels: Mapping[str, int] | str,
    schema: AttributeSchema,
    tokenizer: Any = None,
) -> str:
    """The exact text the model sees before it writes the next reply."""
    pieces = segments(fmt, system, [*history, Exchange(user, None, labels)], schema, tokenizer)
    return "".join(text for text, _ in pieces)


def stop_strings(fmt: str, tokenizer: Any = None, tail: bool = False) -> list[str]:
    """Text that ends a reply. (Backends also stop on the tokenizer's EOS id.) With `tail`,
    the reply also ends at the tail marker (the tail is never reply text)."""
    if tail:
        return [NEMO_TAIL if fmt in NEMO_FORMATS else CHAT_TAIL, *stop_strings(fmt, tokenizer)]
    if fmt in NEMO_FORMATS:
        return [NEMO_STOP]
    stops = []
    if tokenizer is not None and getattr(tokenizer, "eos_token", None):
        stops.append(tokenizer.eos_token)
    return stops


def parse_labels(fmt: str, prompt: str, schema: AttributeSchema) -> dict[str, int]:
    """The attribute vector of the last label line in `prompt`."""
    if fmt in NEMO_FORMATS:
        at = prompt.rfind(NEMO_LABEL)
        if at < 0:
            raise InvalidAttribute("labels", f"no {NEMO_LABEL} label line in the prompt")
        line = prompt[at + len(NEMO_LABEL):].split("\n", 1)[0]
    elif fmt == "chat":
        at = prompt.rfind(CHAT_LABEL_PREFIX)
        if at < 0:
            raise InvalidAttribute("labels", f"no '{CHAT_LABEL_PREFIX.strip()}' label line in the prompt")
        line = prompt[at + len(CHAT_LABEL_PREFIX):].split("\n", 1)[0].split("<", 1)[0]
    else:
        raise ValueError(f"unknown prompt format {fmt!r}; formats: {', '.join(FORMATS)}")
    return schema.decode(line.strip())
