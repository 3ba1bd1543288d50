"""Step 4: bootstrap. For each prompt, sample k replies under attribute targets drawn from
the schema, annotate them with the APM, build the round-2 dataset and train round 2.

Two ways to build round 2:

* ``--weighting none`` (SteerLM): each sample is labelled with what the APM *measures* on
  it (`APM.level`: its calibrated level, or clip + round), whatever target it was sampled under; all samples weigh 1.
* ``--weighting steerlm2`` (SteerLM 2.0, HelpSteer2 paper): each sample keeps its *target*
  vector a and gets the importance weight

      w' = softmax over the k samples of one prompt of
           log P(a|x,y) + log P(y|x) - log Q'(y|a,x)

  scaled by k (so the mean weight is 1); the SFT multiplies each sample's token losses by
  it. The terms, as approximated here:

  - log P(a|x,y): the APM gives a mean mu(x,y) per attribute; P(a|x,y) is taken as an
    independent Gaussian around it, log P = -sum_i (a_i - mu_i)^2 / (2 sigma^2) (+ a
    constant that cancels in the softmax); sigma is --sigma (default 1 scale step).
  - log P(y|x): the reply's log-likelihood under the *reference* model without
    attribute conditioning: the base model with the LoRA adapter disabled (or, for a
    fully fine-tuned round 1 without an adapter, the same model), on the prompt with the
    label line removed (chat: the system message without its "Attributes:" line; nemo:
    without "<extra_id_2>labels\\n").
  - log Q'(y|a,x): the reply's log-likelihood under the sampling policy, the round-1
    model on the prompt with the target label line (exactly the distribution sampled).

  All log-likelihoods cover the reply and its end-of-turn marker, as trained.

Samples cut by --max-new-tokens are left out of round 2 (they end mid-sentence, and round 2
would append an end-of-turn marker to them) unless --keep-cut.

Output (under --out): samples.jsonl (every sample with target, APM prediction, labels and
the weight terms), round2.jsonl (NeMo SteerLM JSONL, with "weight" when weighted) and
round2/ (the trained model, unless --no-train).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from steernpc.attributes import AttributeSchema
from steernpc.model_card import read_train_meta
from steernpc.prompt import CHAT_LABEL_PREFIX, NEMO_LABEL, Exchange, build_prompt, segments

from steernpc_train.data import Conversation, Turn, dumps, read_conversations, to_nemo
from steernpc_train.sft import GENERIC_CARD, SFTConfig, load_personas_dict, persona_system, train_sft
from steernpc_train.progress import log



@dataclass
class BootstrapConfig:
    model: str
    apm: str
    prompts: list[str]
    out: str
    adapter: str | None = None
    samples: int = 4
    schema: str | None = None
    format: str | None = None
    personas: list[str] = field(default_factory=list)
    max_new_tokens: int = 64
    temperature: float = 0.8
    top_p: float = 0.95
    batch_size: int = 8
    seed: int = 0
    weighting: str = "none"  # none | steerlm2
    sigma: float = 1.0
    max_prompts: int = 0
    keep_cut: bool = False  # keep replies cut by max_new_tokens (they would teach ending mid-sentence)
    train: bool = True
    sft: SFTConfig | None = None


@dataclass
class PromptItem:
    system: str
    history: list[Exchange]
    user: str


def load_prompts(cfg: BootstrapConfig, schema: AttributeSchema, fmt: str) -> list[PromptItem]:
    personas = load_personas_dict(cfg.personas)
    default = GENERIC_CARD if fmt == "chat" else None
    items: list[PromptItem] = []
    cast = [personas[k] for k in sorted(personas)]
    for path in cfg.prompts:
        if str(path).endswith(".txt"):  # player lines; with --personas each goes to the next persona in turn
            from steernpc_train.gen import read_prompt_lines

            for n, line in enumerate(read_prompt_lines(path)):
                system = persona_system(cast[n % len(cast)]) if cast else (default or "")
                items.append(PromptItem(system, [], line))
            continue
        for conv in read_conversations(path, "auto", schema):
            if conv.character and conv.character in personas:
                system = persona_system(personas[conv.character])
            else:
                system = conv.system if conv.system is not None else default
            history = [Exchange(t.user, t.reply, {**schema.defaults(), **{k: v for k, v in (t.labels or {}).items() if k in schema}})
                       for t in conv.turns[:-1]]
            items.append(PromptItem(system, history, conv.turns[-1].user))
    if default is None:
        from steernpc.prompt import NEMO_SYSTEM

        for it in items:
            it.system = it.system or NEMO_SYSTEM
    if cfg.max_prompts:
        items = items[: cfg.max_prompts]
    return items


def draw_targets(schema: AttributeSchema, k: int, rng: random.Random) -> list[dict[str, int]]:
    """k attribute vectors, each attribute uniform over its range."""
    return [{s.name: rng.randint(s.min, s.max) for s in schema.specs} for _ in range(k)]


def unconditioned_prompt(prompt: str, fmt: str, schema: AttributeSchema, labels: dict[str, int]) -> str:
    line = schema.encode(labels, words=fmt == "verbal")
    if fmt == "chat":
        return prompt.replace(f"\n{CHAT_LABEL_PREFIX}{line}", "", 1)
    at = prompt.rfind(f"{NEMO_LABEL}{line}\n")
    return prompt[:at] + prompt[at + len(f"{NEMO_LABEL}{line}\n"):] if at >= 0 else prompt


def run_bootstrap(cfg: BootstrapConfig) -> dict:
    import contextlib

    from steernpc_train.apm import load_apm
    from steernpc_train.gen import generate, load_generator, log_softmax, sequence_logprobs

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = read_train_meta(cfg.adapter) or read_train_meta(cfg.model)
    fmt = cfg.format or meta.get("format") or "chat"
    apm = load_apm(cfg.apm)
    schema = AttributeSchema.load(cfg.schema) if cfg.schema else apm.schema
    if apm.schema.names != schema.names:
        raise ValueError(f"the APM predicts {apm.schema.names} but the schema is {schema.names}")
    if meta.get("schema") and meta["schema"] != schema.name:
        log(f"warning: round 1 was trained on schema {meta['schema']!r}, bootstrapping with {schema.name!r}")
    weighted = cfg.weighting == "steerlm2"
    model, tok = load_generator(cfg.model, cfg.adapter, merge=not weighted)
    items = load_prompts(cfg, schema, fmt)
    if not items:
        raise ValueError("no prompts")
    rng = random.Random(cfg.seed)
    jobs = []  # (item index, target, prompt text)
    for i, it in enumerate(items):
        for target in draw_targets(schema, cfg.samples, rng):
            jobs.append((i, target, build_prompt(fmt, it.system, it.history, it.user, target, schema, tok)))
    log(f"sampling {len(jobs)} replies ({len(items)} prompts x {cfg.samples}) in format {fmt}")
    replies = generate(model, tok, [p for _, _, p in jobs], fmt, cfg.max_new_tokens, cfg.temperature, cfg.top_p,
                       cfg.seed, cfg.batch_size, progress="bootstrap")
    preds = apm.predict_exchanges([(items[i].system, items[i].history + [Exchange(items[i].user, r["text"])])
                                   for (i, _, _), r in zip(jobs, replies)])

    rows = []
    for (i, target, prompt), reply, pred in zip(jobs, replies, preds):
        labels = {s.name: (apm.level(s.name, pred[s.name]) if s.name in apm.trained else s.default) for s in schema.specs}
        rows.append({"prompt_index": i, "target": target, "reply": reply["text"], "finish": reply["finish"],
                     "apm": {k: round(v, 4) for k, v in pred.items()}, "labels": labels, "prompt": prompt})

    if weighted:
        it_ex = lambda row: items[row["prompt_index"]]  # noqa: E731
        trained_piece = []
        for row in rows:
            it = it_ex(row)
            pieces = segments(fmt, it.system, it.history + [Exchange(it.user, row["reply"], row["target"])], schema, tok)
            trained_piece.append(pieces[-1][0])
        q = sequence_logprobs(model, tok, [(row["prompt"], piece) for row, piece in zip(rows, trained_piece)], cfg.batch_size)
        ref = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
        with ref:
            p = sequence_logprobs(model, tok, [(unconditioned_prompt(row["prompt"], fmt, schema, row["target"]), piece)
                                               for row, piece in zip(rows, trained_piece)], cfg.batch_size)
        for row, lq, lp in zip(rows, q, p):
            names = [n for n in schema.names if n in apm.trained]
            la = -sum((row["target"][n] - row["apm"][n]) ** 2 for n in names) / (2 * cfg.sigma ** 2)
            row.update(log_p_a=la, log_p_y=lp, log_q=lq, score=la + lp - lq)
        by_prompt: dict[int, list[dict]] = {}
        for row in rows:
            by_prompt.setdefault(row["prompt_index"], []).append(row)
        for group in by_prompt.values():
            live = [r for r in group if r["reply"]]
            if not live:
                continue
            for r, lw in zip(live, log_softmax([r["score"] for r in live])):
                r["weight"] = len(live) * float(__import__("math").exp(lw))

    kept = 0
    with open(out / "samples.jsonl", "w", encoding="utf-8") as fs, open(out / "round2.jsonl", "w", encoding="utf-8") as fr:
        for row in rows:
            fs.write(dumps(row) + "\n")
            if not row["reply"] or (row["finish"] == "length" and not cfg.keep_cut):
                continue
            it = items[row["prompt_index"]]
            turns = [Turn(e.user, e.reply, dict(e.labels)) for e in it.history]
            turns.append(Turn(it.user, row["reply"], dict(row["target"] if weighted else row["labels"])))
            conv = Conversation(turns, system=it.system, weight=round(row["weight"], 6) if weighted else None)
            fr.write(dumps(to_nemo(conv)) + "\n")
            kept += 1
    cut = 0 if cfg.keep_cut else sum(1 for r in rows if r["reply"] and r["finish"] == "length")
    summary = {"prompts": len(items), "samples": len(rows), "round2_records": kept, "cut_replies_dropped": cut,
               "empty_replies": len(rows) - kept - cut, "format": fmt, "weighting": cfg.weighting}
    (out / "bootstrap.json").write_text(json.dumps(summary, indent=2))
    log(f"round-2 dataset: {kept} records -> {out / 'round2.jsonl'}" + (f" ({cut} cut by the token limit left out)" if cut else ""))
    del model
    if cfg.train and not kept:
        raise ValueError(f"round 2 has no complete replies to train on ({cut} of {len(rows)} samples were cut by "
                         f"--max-new-tokens {cfg.max_new_tokens}): raise it, or pass --keep-cut to train on cut replies")
    if cfg.train:
        sft = cfg.sft or SFTConfig()
        sft.data = [str(out / "round2.jsonl")]
        sft.data_format = "nemo"
        sft.format = fmt
        sft.schema = cfg.schema or str(Path(cfg.apm) / "schema.yaml")
        sft.base = cfg.model
        sft.personas = []  # system texts are already resolved in round2.jsonl
        sft.init_adapter = cfg.adapter if not sft.full else None
        sft.out = str(out / "round2")
        summary["round2"] = train_sft(sft)
    return summary
