"""Step 3: attribute-conditioned SFT (LoRA or full fine-tuning).

Read top to bottom:

1. **Examples.** Each conversation becomes token ids and labels through
   `steernpc.prompt.segments()` - the very pieces the runtime serves - so loss lands exactly
   on the trained pieces: in `nemo` every assistant reply plus "\\n<extra_id_1>", in `chat`
   the last reply plus the template's end-of-turn marker. Each piece is tokenized on its
   own with add_special_tokens=False, as the runtime tokenizes a prompt and then generates.
2. **Plan.** Per epoch the examples are shuffled with (seed, epoch) and packed greedily into
   rows of at most --max-length tokens. The epochs' rows form one stream; optimizer step s
   takes the next world*micro*accum rows. The plan is a pure function of the data and the
   settings, so a resumed run (or every DDP rank) recomputes it instead of storing it.
3. **Packing without cross-talk.** position_ids restart at 0 for every packed example and
   no 2D attention mask is passed, so transformers builds a block-diagonal causal mask
   (no token attends to another example). Targets are shifted per example.
4. **Loss.** Token cross-entropy on trained tokens (times the example's weight, if any,
   and --end-weight on each reply's end-of-turn marker: the one decision that verbosity
   hangs on, outnumbered ~40:1 by the reply's own tokens),
   summed and divided by the number of trained tokens in the whole optimizer step across
   all micro-batches and ranks: gradient accumulation and DDP give the same update as one
   big batch.
5. **Checkpoints** every --save-every steps: trainable weights, optimizer, scheduler, every
   rank's RNG state and the step. Resuming recomputes the plan and continues with the
   next step, so killed-and-resumed equals uninterrupted.

Runs as one process or under `torchrun --nproc_per_node N` (DDP; gloo on CPU, NCCL on
GPU), with bf16 autocast on GPU.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from steernpc.attributes import AttributeSchema, InvalidAttribute
from steernpc.model_card import read_train_meta, write_schema, write_train_meta
from steernpc.prompt import FORMATS, NEMO_FORMATS, NEMO_SYSTEM, Exchange, segments

from steernpc_train.data import Conversation, DataError, ReadStats, read_conversations
from steernpc_train.example import IGNORE, Example

GENERIC_CARD = "You are a character in a video game. Stay in character and answer the player directly."


def log(message: str) -> None:
    if _rank() == 0:
        print(f"[steernpc-train] {message}", file=sys.stderr, flush=True)


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def persona_system(persona: Any) -> str:
    """The system text the runtime serves a persona with (steernpc.conversation.system_text)."""
    from steernpc.conversation import system_text

    return system_text(persona)


# -- 1. examples ------------------------------------------------------------------------------

def tokenize_segments(pieces: Sequence[tuple[str, bool]], tokenizer: Any) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for prompt.segments() pieces: trained pieces keep their ids as labels."""
    ids, labels, _ = assemble([(trains, tokenizer(text, add_special_tokens=False)["input_ids"]) for text, trains in pieces])
    return ids, labels


def assemble(pieces: Sequence[tuple[bool, list[int]]], end_tokens: int = 0, end_weight: float = 1.0
             ) -> tuple[list[int], list[int], list[float] | None]:
    """(input_ids, labels, token_weights) from tokenized (trains, ids) pieces. With
    end_weight != 1, the last `end_tokens` tokens of every trained piece (its end-of-turn
    marker) weigh end_weight."""
    ids: list[int] = []
    labels: list[int] = []
    weights: list[float] | None = [] if end_weight != 1.0 and end_tokens else None
    for trains, piece in pieces:
        ids.extend(piece)
        labels.extend(piece if trains else [IGNORE] * len(piece))
        if weights is not None:
            tail = min(end_tokens, len(piece)) if trains else 0
            weights.extend([1.0] * (len(piece) - tail) + [end_weight] * tail)
    return ids, labels, weights


@dataclass
class ExampleBuilder:
    """Conversations -> Examples for one prompt format."""

    fmt: str
    schema: AttributeSchema
    tokenizer: Any = None
    max_length: int = 1024
    history: int = 3
    system: str | None = None  # overrides every record's system text
    personas: dict = field(default_factory=dict)  # character id -> Persona (its card is the system)
    fill_missing: bool = False
    end_weight: float = 1.0  # loss weight of each reply's end-of-turn marker
    dropped: int = 0
    filled: int = 0
    _end_tokens: int | None = None

    def end_tokens(self) -> int:
        """Tokens of this format's end-of-turn marker (what follows a reply in its trained
        piece), plus the reply's last token, which merges with the marker in some tokenizers."""
        if self._end_tokens is None:
            pieces = segments(self.fmt, "s", [Exchange("u", "x", self.schema.defaults())], self.schema, self.tokenizer)
            trained = next(text for text, trains in pieces if trains)
            self._end_tokens = len(self.tokenizer(trained[1:], add_special_tokens=False)["input_ids"]) + 1
        return self._end_tokens

    def expand(self, conv: Conversation) -> list[Conversation]:
        """A scene record -> one conversation per speaking member (steernpc_train.scenes), with
        the runtime's scene system text; any other conversation as it is."""
        if conv.scene_record is None:
            return [conv]
        from steernpc_train.scenes import member_conversations

        return member_conversations(conv.scene_record, self.personas)

    def system_for(self, conv: Conversation) -> str:
        if conv.scene is not None and conv.system is not None:
            return conv.system  # a scene member: its card, the table, the others' names (scene_turns)
        if self.system is not None:
            return self.system
        if conv.character and conv.character in self.personas:
            return persona_system(self.personas[conv.character])
        if conv.character and self.personas:
            raise DataError(conv.source[0], conv.source[1], f"character {conv.character!r} is not among the --personas")
        if conv.system is not None:
            return conv.system
        return NEMO_SYSTEM if self.fmt in NEMO_FORMATS else GENERIC_CARD

    def labels_for(self, conv: Conversation, index: int) -> dict[str, int]:
        labels = conv.turns[index].labels or {}
        try:
            vector = self.schema.check_vector(labels, f"turn {index} labels")
        except InvalidAttribute as exc:
            raise DataError(conv.source[0], conv.source[1], str(exc)) from None
        missing = [n for n in self.schema.names if n not in vector]
        if missing:
            if not self.fill_missing:
                raise DataError(conv.source[0], conv.source[1],
                                f"turn {index} has no label for {', '.join(missing)}; annotate the data with the APM "
                                "(`steernpc annotate`) or pass --fill-missing to use the schema defaults")
            self.filled += 1
            vector = {**self.schema.defaults(), **vector}
        return {n: vector[n] for n in self.schema.names}

    def _example(self, system: str, exchanges: list[Exchange], weight: float) -> Example:
        pieces = segments(self.fmt, system, exchanges, self.schema, self.tokenizer)
        ids, labels, token_weights = self._assemble(
            [(trains, self.tokenizer(text, add_special_tokens=False)["input_ids"]) for text, trains in pieces])
        return Example(ids, labels, weight, token_weights)

    def _assemble(self, pieces: list[tuple[bool, list[int]]]) -> tuple[list[int], list[int], list[float] | None]:
        if self.end_weight == 1.0:
            return assemble(pieces)
        return assemble(pieces, self.end_tokens(), self.end_weight)

    def _exchanges(self, conv: Conversation) -> list[Exchange]:
        replies = [i for i, t in enumerate(conv.turns) if t.reply is not None]
        if replies != list(range(len(replies))) or len(conv.turns) - len(replies) > 1:
            raise DataError(conv.source[0], conv.source[1], "only the last turn may lack a reply")
        return [Exchange(conv.turns[i].user, conv.turns[i].reply, self.labels_for(conv, i)) for i in replies]

    def _fit(self, system: str, exchanges: list[Exchange], weight: float, keep_first: bool) -> tuple[Example | None, int]:
        """The longest slice of `exchanges` that fits max_length: trims from the end (nemo,
        keep_first) or drops the oldest history (chat). Returns (example or None, turns used)."""
        n = len(exchanges)
        for used in range(n, 0, -1):
            part = exchanges[:used] if keep_first else exchanges[n - used:]
            ex = self._example(system, part, weight)
            if len(ex.input_ids) <= self.max_length:
                return ex, used
        return None, 1

    def build(self, conv: Conversation) -> list[Example]:
        return self.build_many([conv])

    def build_many(self, convs: Iterable[Conversation]) -> list[Example]:
        """Examples for many conversations. The common case (everything fits) is tokenized in
        large batches; an example too long for --max-length falls back to `_fit`.

        nemo: every reply trains in one sequence (split into consecutive chunks that fit).
        chat: the last reply trains, so one example per reply with up to --history earlier
        exchanges before it."""
        jobs: list[tuple[str, list[Exchange], float, str]] = []
        for conv in (c for each in convs for c in self.expand(each)):
            exchanges = self._exchanges(conv)
            if not exchanges:
                continue
            system = self.system_for(conv)
            weight = 1.0 if conv.weight is None else float(conv.weight)
            if self.fmt in NEMO_FORMATS:
                jobs.append((system, exchanges, weight, self.fmt))
            else:
                for i in range(len(exchanges)):
                    jobs.append((system, exchanges[max(0, i - self.history):i + 1], weight, "chat"))
        pieces = [segments(self.fmt, s, ex, self.schema, self.tokenizer) for s, ex, _, _ in jobs]
        texts = [t for p in pieces for t, _ in p]
        encoded: list[list[int]] = []
        for k in range(0, len(texts), 4096):
            encoded.extend(self.tokenizer(texts[k:k + 4096], add_special_tokens=False)["input_ids"])
        out: list[Example] = []
        at = 0
        for (system, exchanges, weight, kind), p in zip(jobs, pieces):
            ids, labels, token_weights = self._assemble([(trains, piece) for (_, trains), piece in zip(p, encoded[at:at + len(p)])])
            at += len(p)
            if len(ids) <= self.max_length:
                out.append(Example(ids, labels, weight, token_weights))
                continue
            if kind == "chat":
                ex, _ = self._fit(system, exchanges, weight, keep_first=False)
                if ex is None:
                    self.dropped += 1
                else:
                    out.append(ex)
                continue
            start = 0
            while start < len(exchanges):
                ex, used = self._fit(system, exchanges[start:], weight, keep_first=True)
                if ex is None:
                    self.dropped += 1
                else:
                    out.append(ex)
                start += used
        return out


# -- 2. plan ----------------------------------------------------------------------------------

def pack(lengths: Sequence[int], order: Sequence[int], capacity: int, packing: bool = True) -> list[list[int]]:
    """Greedy next-fit packing of examples (in `order`) into rows of <= capacity tokens."""
    rows: list[list[int]] = []
    used = 0
    for i in order:
        if packing and rows and used + lengths[i] <= capacity:
            rows[-1].append(i)
            used += lengths[i]
        else:
            rows.append([i])
            used = lengths[i]
    return rows


class Plan:
    """The stream of rows over epochs; step s takes rows [s*R, (s+1)*R)."""

    def __init__(self, lengths: Sequence[int], capacity: int, rows_per_step: int, seed: int, packing: bool = True):
        self.lengths = list(lengths)
        self.capacity = capacity
        self.rows_per_step = rows_per_step
        self.seed = seed
        self.packing = packing
        self._rows: list[list[int]] = []
        self._epoch_starts: list[int] = []

    def epoch_rows(self, epoch: int) -> list[list[int]]:
        order = list(range(len(self.lengths)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return pack(self.lengths, order, self.capacity, self.packing)

    def _extend(self, n_rows: int) -> None:
        while len(self._rows) < n_rows:
            self._epoch_starts.append(len(self._rows))
            self._rows.extend(self.epoch_rows(len(self._epoch_starts) - 1))

    def step_rows(self, step: int) -> list[list[int]]:
        self._extend((step + 1) * self.rows_per_step)
        return self._rows[step * self.rows_per_step:(step + 1) * self.rows_per_step]

    def steps_for_epochs(self, epochs: float) -> int:
        whole = int(epochs)
        rows = sum(len(self.epoch_rows(e)) for e in range(whole))
        if epochs > whole:
            rows += (epochs - whole) * len(self.epoch_rows(whole))
        return max(1, math.ceil(rows / self.rows_per_step))

    def epoch_of_step(self, step: int) -> float:
        self._extend((step + 1) * self.rows_per_step)
        row = step * self.rows_per_step
        e = max(i for i, s in enumerate(self._epoch_starts) if s <= row)
        size = (self._epoch_starts[e + 1] if e + 1 < len(self._epoch_starts) else len(self._rows)) - self._epoch_starts[e]
        return e + (row - self._epoch_starts[e]) / max(1, size)

    def fingerprint(self) -> str:
        h = hashlib.sha256(json.dumps([self.lengths, self.capacity, self.rows_per_step, self.seed, self.packing]).encode())
        return h.hexdigest()[:16]


# -- 3. collation -----------------------------------------------------------------------------

def collate(rows: Sequence[Sequence[Example]], pad_id: int) -> dict:
    """Rows of packed examples -> tensors: input_ids, position_ids (restart per example),
    targets (labels shifted per example; -100 elsewhere), weights (per target token).

    With shared-prefix examples in the batch it also returns `attention_mask`, a 4D boolean
    mask (causal, within one example, a segment sees only the prefix and itself), and
    `pair` / `side` per target token for the label-contrast term."""
    import torch

    width = max(sum(len(e.input_ids) for e in row) for row in rows)
    shape = (len(rows), width)
    ids = torch.full(shape, pad_id, dtype=torch.long)
    pos = torch.zeros(shape, dtype=torch.long)
    tgt = torch.full(shape, IGNORE, dtype=torch.long)
    wts = torch.zeros(shape, dtype=torch.float32)
    structured = any(ex.segments is not None for row in rows for ex in row)
    owner = torch.zeros(shape, dtype=torch.long)  # which example of the row a token belongs to
    seg = torch.zeros(shape, dtype=torch.long)
    pair = torch.full(shape, -1, dtype=torch.long)
    side = torch.zeros(shape, dtype=torch.long)
    pairs_so_far = 0
    for r, row in enumerate(rows):
        at = 0
        for k, ex in enumerate(row):
            n = len(ex.input_ids)
            ids[r, at:at + n] = torch.tensor(ex.input_ids)
            pos[r, at:at + n] = torch.tensor(ex.positions) if ex.positions is not None else torch.arange(n)
            shifted = ex.labels[1:] + [IGNORE]
            tgt[r, at:at + n] = torch.tensor(shifted)
            if ex.token_weights is None:
                wts[r, at:at + n] = ex.weight
            else:  # position i predicts token i + 1
                wts[r, at:at + n] = ex.weight * torch.tensor(ex.token_weights[1:] + [0.0])
            owner[r, at:at + n] = k + 1
            if ex.segments is not None:
                seg[r, at:at + n] = torch.tensor(ex.segments)
            if ex.side is not None:  # shifted like the labels: target i is token i + 1
                side[r, at:at + n] = torch.tensor(ex.side[1:] + [0])
                shifted_pair = torch.tensor(ex.pair[1:] + [-1])
                pair[r, at:at + n] = torch.where(shifted_pair >= 0, shifted_pair + pairs_so_far, shifted_pair)
                pairs_so_far += max(ex.pair) + 1
                wts[r, at:at + n] *= (side[r, at:at + n] >= 0).float()  # contrast tokens get no SFT loss
            at += n
        if at < width:  # padding is one more "example" that nothing attends into
            pos[r, at:] = torch.arange(width - at)
            owner[r, at:] = len(row) + 1
    batch = {"input_ids": ids, "position_ids": pos, "targets": tgt, "weights": wts}
    if structured:
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        same = owner.unsqueeze(-1) == owner.unsqueeze(-2)
        visible = (seg.unsqueeze(-2) == 0) | (seg.unsqueeze(-1) == seg.unsqueeze(-2))
        batch["attention_mask"] = (same & causal & visible).unsqueeze(1)
    if pairs_so_far:
        batch["pair"], batch["side"] = pair, side
    return batch


def packed_attention_supported() -> bool:
    try:
        from transformers.masking_utils import find_packed_sequence_indices  # noqa: F401
    except ImportError:
        return False
    return True


def block_causal_mask(position_ids: Any, dtype: Any) -> Any:
    """A 4D additive mask (B, 1, L, L): causal within each packed example, -inf across.
    Used only where transformers cannot derive it from position_ids itself."""
    import torch

    seg = (position_ids == 0).cumsum(-1)
    same = seg.unsqueeze(-1) == seg.unsqueeze(-2)
    causal = torch.ones(position_ids.shape[-1], position_ids.shape[-1], dtype=torch.bool, device=position_ids.device).tril()
    allowed = same & causal
    mask = torch.zeros(allowed.shape, dtype=dtype, device=position_ids.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask.unsqueeze(1)


def forward_kwargs(batch: dict, dtype: Any = None) -> dict:
    """Model kwargs for a collated batch (isolating packed examples)."""
    import torch

    # no KV cache: transformers only derives the packed mask from position_ids without one
    kwargs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}
    if "attention_mask" in batch:  # shared-prefix examples: the mask collate() built
        kwargs["attention_mask"] = batch["attention_mask"]
    elif not packed_attention_supported():
        kwargs["attention_mask"] = block_causal_mask(batch["position_ids"], dtype or torch.float32)
    return kwargs


def _torch_loss_module():
    import torch
    from torch import nn

    class CausalLMLoss(nn.Module):
        """Wraps a causal LM: forward returns the summed weighted token CE and the number of
        trained tokens. Computes the vocabulary projection only where a target exists.

        With `pair`/`side` (shared-prefix label-contrast examples) it adds, per pair, the
        DPO-style term softplus(-beta * (log p(y|a) - log p(y|a'))) weighted by the reply's
        length and `contrast_weight`: a reply must be likelier under its own labels a than
        under contrast labels a', which the plain SFT loss never asks for."""

        def __init__(self, model: Any, contrast_weight: float = 0.0, contrast_beta: float = 0.5):
            super().__init__()
            self.model = model
            self.contrast_weight = contrast_weight
            self.contrast_beta = contrast_beta

        def _parts(self):
            lm = self.model
            if hasattr(lm, "get_base_model"):  # peft
                lm = lm.get_base_model()
            return lm.get_decoder(), lm.get_output_embeddings()

        def forward(self, input_ids, position_ids, targets, weights, attention_mask=None, pair=None, side=None):
            decoder, head = self._parts()
            hidden = decoder(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
            keep = targets != IGNORE
            logits = head(hidden[keep]).float()
            ce = nn.functional.cross_entropy(logits, targets[keep], reduction="none")
            total = (ce * weights[keep]).sum()
            if pair is not None and self.contrast_weight:
                total = total + self.contrast_weight * contrast_term(ce, pair[keep], side[keep], self.contrast_beta)
            return total, keep.sum()

    return CausalLMLoss


def contrast_term(ce: Any, pair: Any, side: Any, beta: float) -> Any:
    """Sum over pairs of len(y) * softplus(-beta * (log p(y|a) - log p(y|a'))), from the
    per-token CE of each pair's own-label (+1) and contrast-label (-1) reply tokens."""
    import torch

    counted = pair >= 0
    if not bool(counted.any()):
        return ce.sum() * 0.0
    n = int(pair[counted].max()) + 1
    own, other = counted & (side > 0), counted & (side < 0)
    nll_own = torch.zeros(n, dtype=ce.dtype, device=ce.device).index_add(0, pair[own], ce[own])
    nll_other = torch.zeros(n, dtype=ce.dtype, device=ce.device).index_add(0, pair[other], ce[other])
    length = torch.zeros(n, dtype=ce.dtype, device=ce.device).index_add(0, pair[own], torch.ones_like(ce[own]))
    margin = nll_other - nll_own  # = log p(y|a) - log p(y|a')
    return (torch.nn.functional.softplus(-beta * margin) * length).sum()


# -- 4. training ------------------------------------------------------------------------------

@dataclass
class SFTConfig:
    base: str = "smollm2"
    data: list[str] = field(default_factory=list)
    out: str = "runs/sft"
    format: str = "chat"
    schema: str | None = None  # default: npc for chat, nemo for nemo (or the personas' schema)
    data_format: str = "auto"
    personas: list[str] = field(default_factory=list)
    system: str | None = None
    history: int = 3
    fill_missing: bool = False
    skip_bad: bool = False
    max_examples: int = 0
    end_weight: float = 1.0  # loss weight of each reply's end-of-turn marker (1 = plain SFT)
    share_prefix: bool = False  # nemo: a contrast set's replies share one prefix (contrast_sets.py)
    contrast_weight: float = 0.0  # label-contrast term (implies share_prefix); 0 = off
    contrast_beta: float = 0.5
    lora: int = 16  # LoRA rank; ignored with full=True
    lora_alpha: int = 0  # 0 = 2 * rank
    lora_dropout: float = 0.05
    full: bool = False
    init_adapter: str | None = None  # continue training this LoRA adapter (bootstrap round 2)
    max_length: int = 1024
    packing: bool = True
    micro_batch: int = 4
    grad_accum: int = 1
    epochs: float = 1.0
    max_steps: int = 0
    lr: float = 0.0  # 0 = 2e-4 for LoRA, 2e-5 for full
    weight_decay: float = 0.0
    warmup: float = 0.03
    min_lr: float = 0.1  # cosine decays to this fraction of lr
    max_grad_norm: float = 1.0
    precision: str = "auto"  # auto (bf16 autocast on GPU) | fp32 | bf16
    grad_checkpointing: bool = False
    save_every: int = 100
    save_minutes: float = 30.0  # also checkpoint when this long has passed since the last one (0 = off)
    keep_checkpoints: int = 2
    resume: str = "auto"  # auto | never | a checkpoint folder
    log_every: int = 10
    seed: int = 0
    halt_after_step: int = 0  # testing: exit abruptly after this step, as if killed


def load_personas_dict(paths: Sequence[str]) -> dict:
    if not paths:
        return {}
    from steernpc.persona import PersonaError, load_personas

    personas, problems = load_personas(paths)
    if problems:
        raise PersonaError(problems)
    return personas


def build_examples(cfg: SFTConfig, tokenizer: Any, schema: AttributeSchema) -> tuple[list[Example], ExampleBuilder]:
    builder = ExampleBuilder(cfg.format, schema, tokenizer, cfg.max_length, cfg.history, cfg.system,
                             load_personas_dict(cfg.personas), cfg.fill_missing, cfg.end_weight)
    stats = ReadStats()
    good: list[Conversation] = []
    for path in cfg.data:
        for record in read_conversations(path, cfg.data_format, schema, cfg.skip_bad, stats):
            try:  # validate here, so that --skip-bad can skip a record
                convs = builder.expand(record)
                for conv in convs:
                    builder._exchanges(conv)
                    builder.system_for(conv)
            except DataError as err:
                if not cfg.skip_bad:
                    raise
                stats.skip(err)
                continue
            good.extend(convs)
    builder.filled = 0
    examples = []
    if cfg.share_prefix or cfg.contrast_weight:
        from steernpc_train.contrast_sets import build_set_examples

        examples, good = build_set_examples(builder, good, contrast=cfg.contrast_weight > 0, seed=cfg.seed)
        log(f"{len(examples)} shared-prefix example(s) from contrast sets"
            + (" with label-contrast segments" if cfg.contrast_weight else ""))
    examples += builder.build_many(good)
    if stats.skipped:
        log(f"skipped {stats.skipped} bad record(s); first: {stats.first_errors[0]}")
    if builder.dropped:
        log(f"dropped {builder.dropped} example(s) longer than --max-length {cfg.max_length}")
    if builder.filled:
        log(f"filled missing labels with schema defaults in {builder.filled} turn(s)")
    if cfg.max_examples and len(examples) > cfg.max_examples:
        keep = sorted(random.Random(cfg.seed).sample(range(len(examples)), cfg.max_examples))
        examples = [examples[i] for i in keep]
    examples = [e for e in examples if e.n_trained]
    if not examples:
        raise ValueError("no trainable examples in --data")
    return examples, builder


def resolve_schema(cfg: SFTConfig) -> AttributeSchema:
    if cfg.schema:
        return AttributeSchema.load(cfg.schema)
    personas = load_personas_dict(cfg.personas)
    if personas:
        names = {p.schema.name for p in personas.values()}
        if len(names) > 1:
            raise ValueError(f"the personas use several schemas ({', '.join(sorted(names))}); pass --schema")
        return next(iter(personas.values())).schema
    return AttributeSchema.builtin("nemo" if cfg.format == "nemo" else "npc")  # verbal needs level words: npc has them


class Dist:
    """torchrun's environment, or a single process."""

    def __init__(self):
        import torch

        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = torch.cuda.is_available()
        self.device = f"cuda:{self.local_rank}" if cuda else "cpu"
        if cuda:
            torch.cuda.set_device(self.local_rank)
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group(backend="nccl" if cuda else "gloo")

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def any(self, flag: bool) -> bool:
        """True on every rank if `flag` is true on any rank."""
        import torch
        import torch.distributed as dist

        t = torch.tensor([int(flag)], device=self.device if self.device.startswith("cuda") else "cpu")
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


class _StopOnSignal:
    """SIGTERM / SIGINT ask the loop to checkpoint after the current step and exit."""

    def __init__(self):
        import signal

        self.requested = False
        self._old = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass

    def _handle(self, signum, frame) -> None:
        if self.requested:  # a second signal: stop now
            raise KeyboardInterrupt
        self.requested = True
        log("signal received: finishing this step, then checkpointing (send again to abort)")

    def restore(self) -> None:
        import signal

        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


def _lr_lambda(total: int, warmup: int, min_ratio: float):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def _rng_state() -> dict:
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model: Any) -> dict:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def checkpoints(out: Path) -> list[Path]:
    root = out / "checkpoints"
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and (p / "complete").exists()), key=lambda p: int(p.name.split("-")[1]))


def _save_checkpoint(out: Path, step: int, model: Any, optim: Any, sched: Any, state: dict, dist_: Dist, keep: int) -> None:
    import torch
    from safetensors.torch import save_file

    final = out / "checkpoints" / f"step-{step:07d}"
    tmp = final.with_name(final.name + ".partial")
    if dist_.rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist_.barrier()
    torch.save(_rng_state(), tmp / f"rng-rank{dist_.rank}.pt")
    if dist_.rank == 0:
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        torch.save(optim.state_dict(), tmp / "optimizer.pt")
        torch.save(sched.state_dict(), tmp / "scheduler.pt")
        (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=2))
    dist_.barrier()
    if dist_.rank == 0:
        (tmp / "complete").write_text("ok")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in checkpoints(out)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    dist_.barrier()


def _load_checkpoint(folder: Path, model: Any, optim: Any, sched: Any, dist_: Dist) -> dict:
    import torch
    from safetensors.torch import load_file

    weights = load_file(str(folder / "trainable.safetensors"))
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in weights]
    if missing:
        raise ValueError(f"checkpoint {folder} lacks {len(missing)} trainable tensors (e.g. {missing[0]}); "
                         "was it made with other --lora/--full settings?")
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)
    optim.load_state_dict(torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=False))
    sched.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=False))
    rng = folder / f"rng-rank{dist_.rank}.pt"
    _set_rng_state(torch.load(rng, weights_only=False))
    return json.loads((folder / "state.json").read_text())


def _kind(cfg: SFTConfig) -> str:
    if cfg.full:
        return "full"
    return f"LoRA from {cfg.init_adapter}" if cfg.init_adapter else f"LoRA r={cfg.lora}"


def load_base(cfg: SFTConfig, device: str) -> tuple[Any, Any]:
    from steernpc import models

    model, tokenizer = models.load_model(cfg.base, device=device, dtype="float32")
    model.config.use_cache = False
    if cfg.full:
        model.requires_grad_(True)
    else:
        from peft import LoraConfig, PeftModel, get_peft_model

        if cfg.init_adapter:
            model = PeftModel.from_pretrained(model, cfg.init_adapter, is_trainable=True)
        else:
            lora = LoraConfig(r=cfg.lora, lora_alpha=cfg.lora_alpha or 2 * cfg.lora, lora_dropout=cfg.lora_dropout,
                              target_modules="all-linear", task_type="CAUSAL_LM")
            model = get_peft_model(model, lora)
    if cfg.grad_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if not cfg.full and hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    return model.to(device).train(), tokenizer


def train_sft(cfg: SFTConfig) -> dict:
    """Train; returns the final metadata. Safe to call again after a crash (resumes)."""
    import torch

    if cfg.format not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}")
    if not cfg.data:
        raise ValueError("--data is required")
    dist_ = Dist()
    stopper = _StopOnSignal()
    try:
        return _train(cfg, dist_, stopper)
    finally:
        stopper.restore()
        dist_.close()


def _train(cfg: SFTConfig, dist_: Dist, stopper: "_StopOnSignal") -> dict:
    import torch

    out = Path(cfg.out)
    started = time.time()
    done = read_train_meta(out)
    if cfg.resume == "auto" and done.get("complete") and done.get("config", {}).get("data") == list(cfg.data):
        log(f"{out} is already trained ({done['steps']} steps); pass --resume never to train again")
        return done
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    import numpy as np

    np.random.seed(cfg.seed)
    model, tokenizer = load_base(cfg, dist_.device)
    schema = resolve_schema(cfg)
    examples, builder = build_examples(cfg, tokenizer, schema)
    rows_per_step = dist_.world * cfg.micro_batch * cfg.grad_accum
    plan = Plan([len(e.input_ids) for e in examples], cfg.max_length, rows_per_step, cfg.seed, cfg.packing)
    total = cfg.max_steps or plan.steps_for_epochs(cfg.epochs)
    n_tokens = sum(len(e.input_ids) for e in examples)
    n_trained = sum(e.n_trained for e in examples)
    trainable = [p for p in model.parameters() if p.requires_grad]
    log(f"{len(examples)} examples ({n_tokens} tokens, {n_trained} trained), format {cfg.format}, schema {schema.name}; "
        f"{total} steps of {rows_per_step} rows x {cfg.max_length} tokens; "
        f"{sum(p.numel() for p in trainable):,} trainable parameters ({_kind(cfg)}); "
        f"world {dist_.world} on {dist_.device}")

    lr = cfg.lr or (2e-5 if cfg.full else 2e-4)
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, _lr_lambda(total, int(total * cfg.warmup), cfg.min_lr))

    loss_module = _torch_loss_module()(model, cfg.contrast_weight, cfg.contrast_beta)
    wrapped = loss_module
    if dist_.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        wrapped = DDP(loss_module, device_ids=[dist_.local_rank] if dist_.device.startswith("cuda") else None)

    state_base = {"plan": plan.fingerprint(), "world": dist_.world, "micro_batch": cfg.micro_batch, "grad_accum": cfg.grad_accum, "total_steps": total}
    step = 0
    tokens_seen = 0
    resume_from = None
    resumed_loss = None
    if cfg.resume not in ("never", "auto"):
        resume_from = Path(cfg.resume)
    elif cfg.resume == "auto" and checkpoints(out):
        resume_from = checkpoints(out)[-1]
    if resume_from is not None:
        state = _load_checkpoint(resume_from, model, optim, sched, dist_)
        for key in ("plan", "world", "micro_batch", "grad_accum"):
            if state.get(key) != state_base[key]:
                raise ValueError(f"cannot resume from {resume_from}: {key} was {state.get(key)}, now {state_base[key]} "
                                 "(same data, seed, --max-length, world size, --micro-batch and --grad-accum are needed); "
                                 "pass --resume never to start over")
        step = state["step"]
        tokens_seen = state.get("tokens_seen", 0)
        resumed_loss = state.get("loss")
        started -= state.get("elapsed_s", 0.0)  # the metadata's seconds count every run of this training
        log(f"resumed from {resume_from} at step {step}")

    cuda = dist_.device.startswith("cuda")
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and cuda)
    autocast = (lambda: torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    log_path = out / "train_log.jsonl"
    if dist_.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    window_tokens, window_time, window_loss, window_n = 0, time.time(), 0.0, 0
    last_save = time.time()
    from .progress import progress_bar

    bar = progress_bar(total, "sft", "step", initial=step, enabled=not dist_.rank)
    last_loss = resumed_loss if resumed_loss is not None else float("nan")
    while step < total:
        rows = plan.step_rows(step)
        step_targets = sum(examples[i].n_trained for row in rows for i in row) or 1
        step_tokens = sum(len(examples[i].input_ids) for row in rows for i in row)
        optim.zero_grad(set_to_none=True)
        step_loss = torch.zeros((), dtype=torch.float64)
        for m in range(cfg.grad_accum):
            first = (m * dist_.world + dist_.rank) * cfg.micro_batch
            mine = rows[first:first + cfg.micro_batch]
            batch = collate([[examples[i] for i in row] for row in mine], pad_id)
            batch = {k: v.to(dist_.device) for k, v in batch.items()}
            sync = m == cfg.grad_accum - 1 or dist_.world == 1
            ctx = wrapped.no_sync() if (dist_.world > 1 and not sync) else contextlib.nullcontext()
            with ctx:
                with autocast():
                    kwargs = forward_kwargs(batch)
                    loss_sum, _ = wrapped(kwargs["input_ids"], kwargs["position_ids"], batch["targets"], batch["weights"],
                                          kwargs.get("attention_mask"), batch.get("pair"), batch.get("side"))
                loss = loss_sum / step_targets * dist_.world
                loss.backward()
            step_loss += loss_sum.detach().double().cpu() / step_targets
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
        optim.step()
        sched.step()
        if dist_.world > 1:
            import torch.distributed as dist

            reduced = step_loss.to(dist_.device)
            dist.all_reduce(reduced)
            step_loss = reduced.cpu()
        step += 1
        tokens_seen += step_tokens
        last_loss = float(step_loss)
        window_tokens += step_tokens
        window_loss += last_loss
        window_n += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == total:
            elapsed = time.time() - window_time
            record = {"step": step, "epoch": round(plan.epoch_of_step(step - 1), 3), "loss": round(window_loss / window_n, 4),
                      "lr": sched.get_last_lr()[0], "tokens_per_s": round(window_tokens / max(elapsed, 1e-9), 1),
                      "tokens_seen": tokens_seen, "elapsed_s": round(time.time() - started, 1)}
            if dist_.rank == 0:
                bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
                log(json.dumps(record))
                with open(log_path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record) + "\n")
            window_tokens, window_time, window_loss, window_n = 0, time.time(), 0.0, 0
        due = bool(cfg.save_every) and step % cfg.save_every == 0
        timed = bool(cfg.save_minutes) and time.time() - last_save >= cfg.save_minutes * 60
        stop = stopper.requested
        if dist_.world > 1:  # every rank must agree to checkpoint (and to stop)
            timed, stop = dist_.any(timed), dist_.any(stop)
        if (due or timed or stop) and step < total:
            _save_checkpoint(out, step, model, optim, sched, {**state_base, "tokens_seen": tokens_seen, "loss": last_loss,
                                                                        "elapsed_s": round(time.time() - started, 1)}, dist_, cfg.keep_checkpoints)
            last_save = time.time()
        if stop and step < total:
            log(f"stopped by signal after step {step}; checkpoint saved, run the same command to resume")
            raise SystemExit(143)
        if cfg.halt_after_step and step == cfg.halt_after_step:
            sys.stderr.flush()
            os._exit(3)
    bar.close()

    meta = {
        "format": cfg.format,
        "schema": schema.name,
        "base": cfg.base,
        "kind": "full" if cfg.full else "lora",
        "steps": total,
        "tokens_seen": tokens_seen,
        "final_loss": None if math.isnan(last_loss) else last_loss,  # NaN is not JSON
        "examples": len(examples),
        "seconds": round(time.time() - started, 1),
        "config": asdict(cfg),
        "complete": True,
    }
    if dist_.rank == 0:
        save_model(model, tokenizer, out, schema, meta)
        log(f"saved {'model' if cfg.full else 'LoRA adapter'} to {out}")
    dist_.barrier()
    return meta


def save_model(model: Any, tokenizer: Any, out: Path, schema: AttributeSchema, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    write_schema(out, schema)
    write_train_meta(out, meta)
