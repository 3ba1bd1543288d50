"""The steerability report: does a trained model follow its attribute targets?

For every persona and every attribute of its schema, the attribute's target is swept over
its whole range while the other attributes stay at the persona's profile (no mood, no
limits: the sweep measures the model, not the persona's caps). Each (persona, player
line, target) prompt is built exactly as the runtime builds it and generated (greedy by
default; seeded sampling with --temperature). Every reply is then measured:

* with the APM (its raw prediction for the swept attribute), and
* for verbosity, also by word count, which needs no model.

Per attribute the report gives Spearman's rho between target and measured value (ties
get average ranks; a constant measurement gives rho 0 and is flagged), and the mean
measured value per target. Outputs under --out: report.json, report.md, one PNG per
attribute (plots/), and generations.jsonl with every prompt, reply and measurement, so each
number can be traced to real generations.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from steernpc.attributes import resolve_attributes
from steernpc.prompt import Exchange, build_prompt

from steernpc_train import stats as st
from steernpc_train.progress import log



@dataclass
class SteerConfig:
    model: str
    apm: str
    personas: list[str]
    prompts: str
    out: str
    adapter: str | None = None
    format: str | None = None
    attributes: list[str] = field(default_factory=list)
    max_new_tokens: int = 64
    temperature: float = 0.0
    samples: int = 1
    batch_size: int = 8
    seed: int = 0
    max_prompts: int = 0
    max_personas: int = 0
    guidance: float = 1.0  # >1: classifier-free guidance against the persona's own vector
    backend: str = "hf"  # hf (transformers.generate) | torch | onnx (the runtime's own engine, what is served)


def words(text: str) -> int:
    return len(text.split())


def sentiment_scorer():
    """VADER's compound polarity (-1..1), a friendliness measure that shares nothing with the
    APM (a hand-built lexicon; rho 0.60 against the corpus' own held-out labels); None
    without the vaderSentiment package."""
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:
        return None
    analyzer = SentimentIntensityAnalyzer()
    return lambda text: analyzer.polarity_scores(text)["compound"]


def summarize(targets: list[int], measured: list[float], levels: list[int]) -> dict:
    rho = st.spearman(targets, measured)
    per = {}
    for t in levels:
        vals = [m for tt, m in zip(targets, measured) if tt == t]
        if vals:
            mean = sum(vals) / len(vals)
            sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
            per[str(t)] = {"n": len(vals), "mean": round(mean, 4), "std": round(sd, 4)}
    return {"spearman": 0.0 if math.isnan(rho) else round(rho, 4), "constant": math.isnan(rho), "n": len(targets), "per_target": per}


def generate_served(cfg: SteerConfig, fmt: str, prompts: list[str], guides: list[str] | None = None) -> list[dict]:
    """The replies as the runtime serves them: its torch or onnx backend (one scheduler,
    batched decode, the shared sampler), each prompt seeded by its position; with
    cfg.guidance != 1, guided against `guides` (the persona's own vector) as served."""
    from steernpc.generation import Finished, GenerationRequest, SamplingParams
    from steernpc.prompt import stop_strings

    from steernpc_train.progress import progress_bar

    if cfg.backend == "onnx":
        from steernpc.generation.onnx_backend import OnnxBackend

        backend = OnnxBackend(cfg.model, adapter=cfg.adapter, max_batch=cfg.batch_size, slots=cfg.batch_size * 2)
    elif cfg.backend == "torch":
        from steernpc.generation.torch_backend import TorchBackend

        backend = TorchBackend(cfg.model, adapter=cfg.adapter, max_batch=cfg.batch_size, slots=cfg.batch_size * 2)
    else:
        raise ValueError(f"unknown backend {cfg.backend!r}: hf, torch or onnx")
    stops = stop_strings(fmt, backend.tokenizer)
    bar = progress_bar(len(prompts), "steerability", "reply")
    out: list[dict] = []
    try:
        for b in range(0, len(prompts), cfg.batch_size * 2):  # keep the batch full, the queue short
            streams = [backend.submit(GenerationRequest(prompt, SamplingParams(
                max_new_tokens=cfg.max_new_tokens, temperature=max(cfg.temperature, 0.0), top_p=1.0,
                seed=cfg.seed * 1_000_003 + b + i, guidance=cfg.guidance), stop=stops,
                guide_prompt=guides[b + i] if guides else None)) for i, prompt in enumerate(prompts[b:b + cfg.batch_size * 2])]
            for stream in streams:
                final = stream.result(timeout=3600)
                assert isinstance(final, Finished)
                if final.reason == "error":
                    raise RuntimeError(f"generation failed: {final.error}")
                out.append({"text": final.text.strip(), "tokens": final.completion_tokens,
                            "finish": "length" if final.reason == "length" else "stop"})
                bar.update(1)
    finally:
        bar.close()
        backend.close()
    return out


def steerability_report(cfg: SteerConfig) -> dict:
    from steernpc.model_card import read_train_meta
    from steernpc.persona import PersonaError, load_personas

    from steernpc_train.apm import load_apm
    from steernpc_train.gen import generate, load_generator, read_prompt_lines
    from steernpc_train.sft import persona_system

    started = time.time()
    out = Path(cfg.out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    meta = read_train_meta(cfg.adapter) or read_train_meta(cfg.model)
    fmt = cfg.format or meta.get("format") or "chat"
    personas, problems = load_personas(cfg.personas)
    if problems:
        raise PersonaError(problems)
    if not personas:
        raise ValueError(f"no personas under {', '.join(cfg.personas)}")
    chosen = [personas[k] for k in sorted(personas)]
    if cfg.max_personas:
        chosen = chosen[: cfg.max_personas]
    lines = read_prompt_lines(cfg.prompts)
    if cfg.max_prompts:
        lines = lines[: cfg.max_prompts]
    if not lines:
        raise ValueError(f"no player lines in {cfg.prompts}")
    if cfg.backend == "hf":
        model, tok = load_generator(cfg.model, cfg.adapter)
    else:
        from steernpc import models

        tok = models.load_tokenizer(cfg.model)
    apm = load_apm(cfg.apm)

    jobs = []
    for persona in chosen:
        schema = persona.schema
        system = persona_system(persona)
        names = [n for n in schema.names if not cfg.attributes or n in cfg.attributes]
        for name in names:
            spec = schema[name]
            for target in range(spec.min, spec.max + 1):
                vector = resolve_attributes(schema, persona.attributes, override={name: target})
                own = resolve_attributes(schema, persona.attributes)
                for li, line in enumerate(lines):
                    prompt = build_prompt(fmt, system, [], line, vector, schema, tok)
                    negative = build_prompt(fmt, system, [], line, own, schema, tok)
                    for s in range(cfg.samples if cfg.temperature > 0 else 1):
                        jobs.append({"persona": persona.id, "attribute": name, "target": target, "line": li, "sample": s,
                                     "user": line, "attributes": vector, "system": system, "prompt": prompt,
                                     "negative": negative})
    if not jobs:
        raise ValueError("nothing to sweep (check --attribute)")
    log(f"steerability: {len(jobs)} generations ({len(chosen)} personas, {len(lines)} lines), format {fmt}")
    if cfg.backend == "hf":
        replies = generate(model, tok, [j["prompt"] for j in jobs], fmt, cfg.max_new_tokens, cfg.temperature, 1.0,
                           cfg.seed, cfg.batch_size, progress="steerability",
                           negatives=[j["negative"] for j in jobs], guidance=cfg.guidance)
    else:
        replies = generate_served(cfg, fmt, [j["prompt"] for j in jobs], [j["negative"] for j in jobs])
    preds = apm.predict_exchanges([(j["system"], [Exchange(j["user"], r["text"])]) for j, r in zip(jobs, replies)])
    sentiment = sentiment_scorer()
    with open(out / "generations.jsonl", "w", encoding="utf-8") as fh:
        for j, r, p in zip(jobs, replies, preds):
            j.update(reply=r["text"], tokens=r["tokens"], finish=r["finish"], words=words(r["text"]),
                     apm={k: round(v, 4) for k, v in p.items()})
            if sentiment is not None:
                j["sentiment"] = round(sentiment(r["text"]), 4)
            row = {k: v for k, v in j.items() if k not in ("system", "prompt", "negative")}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    attributes: dict[str, Any] = {}
    for name in dict.fromkeys(j["attribute"] for j in jobs):
        rows = [j for j in jobs if j["attribute"] == name]
        spec = next(p.schema[name] for p in chosen if name in p.schema)
        levels = list(range(spec.min, spec.max + 1))
        targets = [j["target"] for j in rows]
        entry: dict[str, Any] = {"levels": levels}
        if name in apm.schema and name in apm.trained:
            entry["apm"] = summarize(targets, [j["apm"][name] for j in rows], levels)
        if name == "verbosity":
            entry["words"] = summarize(targets, [float(j["words"]) for j in rows], levels)
        if name == "friendliness" and sentiment is not None:
            entry["sentiment"] = summarize(targets, [j["sentiment"] for j in rows], levels)
        entry["hit_token_limit"] = round(sum(j["finish"] == "length" for j in rows) / len(rows), 4)
        attributes[name] = entry
        _plot(out / "plots" / f"{name}.png", name, levels, rows, entry)

    report = {
        "model": cfg.model, "adapter": cfg.adapter, "format": fmt, "apm": cfg.apm,
        "personas": [p.id for p in chosen], "prompts": len(lines), "generations": len(jobs),
        "decoding": ("greedy" if cfg.temperature <= 0 else f"sampling T={cfg.temperature} seed={cfg.seed}")
        + (f", guidance {cfg.guidance:g} against the persona's own vector" if cfg.guidance != 1.0 else ""),
        "tokens_generated": sum(j["tokens"] for j in jobs), "seconds": round(time.time() - started, 1),
        "attributes": attributes, "config": asdict(cfg),
    }
    report["markdown"] = markdown(report)
    (out / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    (out / "report.md").write_text(report["markdown"], encoding="utf-8")
    log(f"report: {out / 'report.md'}")
    return report


def _rho_text(summary: dict | None) -> str:
    if not summary:
        return "-"
    return f"{summary['spearman']:+.2f}" + (" (constant)" if summary["constant"] else "")


def markdown(report: dict) -> str:
    lines = [
        "# Steerability report",
        "",
        f"Model `{report['model']}`" + (f" + adapter `{report['adapter']}`" if report["adapter"] else "")
        + f", format `{report['format']}`, APM `{report['apm']}`.",
        f"{report['generations']} generations ({report['decoding']}), {len(report['personas'])} persona(s), "
        f"{report['prompts']} player line(s); {report['tokens_generated']} tokens in {report['seconds']} s.",
        "",
        "Spearman's rho between the target and the measured value (1 = the model follows the target).",
        "",
        "Independent of the APM: words for verbosity, VADER sentiment for friendliness.",
        "",
        "| attribute | n | rho (APM) | rho (independent) | mean measured per target | hit token limit |",
        "|---|---|---|---|---|---|",
    ]
    for name, e in report["attributes"].items():
        main = e.get("apm") or e.get("words")
        means = ", ".join(f"{t}: {v['mean']:.2f}" for t, v in (main["per_target"].items() if main else []))
        if name == "verbosity" and e.get("words"):
            means += "; words " + ", ".join(f"{t}: {v['mean']:.1f}" for t, v in e["words"]["per_target"].items())
        n = (main or {}).get("n", 0)
        independent = e.get("words") or e.get("sentiment")
        kind = " (words)" if e.get("words") else " (VADER)" if e.get("sentiment") else ""
        lines.append(f"| {name} | {n} | {_rho_text(e.get('apm'))} | {_rho_text(independent)}{kind} | {means} | {e['hit_token_limit']:.0%} |")
    lines += ["", "Plots: `plots/<attribute>.png`. Every generation: `generations.jsonl`.", ""]
    return "\n".join(lines)


def _plot(path: Path, name: str, levels: list[int], rows: list[dict], entry: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(k, entry[k]) for k in ("apm", "words", "sentiment") if k in entry]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (kind, summary) in zip(axes[0], panels):
        xs = [j["target"] for j in rows]
        ys = [j["apm"][name] if kind == "apm" else j[kind] for j in rows]
        jitter = [((i * 7919) % 13 - 6) / 60 for i in range(len(xs))]
        ax.scatter([x + d for x, d in zip(xs, jitter)], ys, s=10, alpha=0.4, label="replies")
        means = [summary["per_target"].get(str(t), {}).get("mean") for t in levels]
        ax.plot([t for t, m in zip(levels, means) if m is not None], [m for m in means if m is not None], "o-", color="C3", label="mean")
        if kind == "apm":
            ax.plot(levels, levels, ":", color="gray", label="ideal")
        ax.set_xticks(levels)
        ax.set_xlabel(f"target {name}")
        ax.set_ylabel({"apm": "APM prediction", "words": "words", "sentiment": "VADER compound"}[kind])
        ax.set_title(f"{name}: rho = {summary['spearman']:+.2f}" + (" (constant)" if summary["constant"] else ""))
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
