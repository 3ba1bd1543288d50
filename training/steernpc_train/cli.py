"""The training toolkit's subcommands of `steernpc`: data, train (apm, sft, bootstrap),
annotate and eval. `register(subparsers)` is this package's `steernpc.commands` entry point
(pyproject.toml), which `steernpc.cli` calls; the runtime never imports this package.
Heavy imports happen inside each command, so `steernpc --help` stays fast."""

from __future__ import annotations

import argparse
import json
import sys

from steernpc.prompt import FORMATS


def _data_formats():
    from steernpc_train.data import READ_FORMATS, WRITE_FORMATS

    return READ_FORMATS, WRITE_FORMATS


# -- data -------------------------------------------------------------------------------------

def cmd_data_convert(args: argparse.Namespace) -> int:
    from steernpc.attributes import AttributeSchema

    from steernpc_train.data import convert

    schema = AttributeSchema.load(args.schema) if args.schema else None
    cards = None
    if args.personas:
        from steernpc_train.sft import load_personas_dict, persona_system

        cards = {pid: persona_system(p) for pid, p in load_personas_dict(args.personas).items()}
    stats = convert(args.input, args.output, args.from_fmt, args.to_fmt, schema, args.skip_bad, args.limit, cards)
    print(f"wrote {args.output}: {stats.records} record(s) read", file=sys.stderr)
    if stats.skipped:
        print(f"skipped {stats.skipped} bad record(s); first: {stats.first_errors[0]}", file=sys.stderr)
    return 0


def cmd_data_stats(args: argparse.Namespace) -> int:
    from steernpc_train.data import read_conversations
    from steernpc_train.data_stats import collect, render

    stats = collect(conv for path in args.input for conv in read_conversations(path, args.from_fmt, skip_bad=args.skip_bad))
    print(render(stats))
    return 0


# -- train ------------------------------------------------------------------------------------

def cmd_train_apm(args: argparse.Namespace) -> int:
    from steernpc_train.apm import APMConfig, train_apm

    cfg = APMConfig(schema=args.schema, backbone=args.backbone, pooling=args.pooling, input=args.input,
                    max_length=args.max_length, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                    head_lr=args.head_lr, holdout=args.holdout, eval_data=tuple(args.eval or ()), max_examples=args.max_examples,
                    freeze_backbone=args.freeze_backbone, seed=args.seed, data_format=args.data_format,
                    skip_bad=args.skip_bad)
    meta = train_apm(cfg, args.data, args.out)
    print(json.dumps({"out": args.out, "heldout_metrics": meta["heldout_metrics"]}, indent=2))
    return 0


def _sft_config(args: argparse.Namespace, **over):
    from steernpc_train.sft import SFTConfig

    values = dict(
        base=getattr(args, "base", "smollm2"), data=list(getattr(args, "data", []) or []), out=args.out,
        format=getattr(args, "format", None) or "chat", schema=args.schema,
        data_format=getattr(args, "data_format", "auto"), personas=args.personas or [], system=args.system,
        history=args.history, fill_missing=args.fill_missing, skip_bad=args.skip_bad, max_examples=args.max_examples,
        end_weight=args.end_weight, share_prefix=args.share_prefix, contrast_weight=args.contrast_weight,
        contrast_beta=args.contrast_beta,
        lora=args.lora or 16, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, full=args.full,
        init_adapter=getattr(args, "init_adapter", None), max_length=args.max_length, packing=not args.no_packing,
        micro_batch=args.micro_batch, grad_accum=args.grad_accum, epochs=args.epochs, max_steps=args.max_steps,
        lr=args.lr, warmup=args.warmup, precision=args.precision, grad_checkpointing=args.grad_checkpointing,
        save_every=args.save_every, save_minutes=args.save_minutes, keep_checkpoints=args.keep_checkpoints, resume=args.resume,
        log_every=args.log_every, seed=args.seed, halt_after_step=args.halt_after_step,
    )
    values.update(over)
    return SFTConfig(**values)


def cmd_train_sft(args: argparse.Namespace) -> int:
    from steernpc_train.sft import train_sft

    train_sft(_sft_config(args))
    return 0


def cmd_train_bootstrap(args: argparse.Namespace) -> int:
    from steernpc_train.bootstrap import BootstrapConfig, run_bootstrap

    cfg = BootstrapConfig(
        model=args.model, adapter=args.adapter, apm=args.apm, prompts=args.prompts, out=args.out,
        samples=args.samples, schema=args.schema, format=args.format, personas=args.personas or [],
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
        batch_size=args.batch_size, seed=args.seed, weighting=args.weighting, sigma=args.sigma,
        max_prompts=args.max_prompts, keep_cut=args.keep_cut, train=not args.no_train,
        sft=_sft_config(args, base=args.model, out=str(args.out) + "/round2", data=[], init_adapter=args.adapter,
                        format=args.format or "chat"),
    )
    run_bootstrap(cfg)
    return 0


def cmd_annotate(args: argparse.Namespace) -> int:
    from steernpc_train.annotate import annotate

    summary = annotate(args.input, args.output, args.apm, data_format=args.from_fmt, out_format=args.to_fmt,
                       batch_size=args.batch_size, keep_labels=args.keep_labels, skip_bad=args.skip_bad,
                       restart=args.restart, limit=args.limit, calibrate=args.calibrate)
    print(json.dumps(summary), file=sys.stderr)
    return 0


def cmd_eval_steerability(args: argparse.Namespace) -> int:
    from steernpc_train.evaluate import SteerConfig, steerability_report

    cfg = SteerConfig(model=args.model, adapter=args.adapter, apm=args.apm, personas=args.personas, prompts=args.prompts,
                      out=args.out, format=args.format, attributes=args.attribute or [], max_new_tokens=args.max_new_tokens,
                      temperature=args.temperature, samples=args.samples, batch_size=args.batch_size, seed=args.seed,
                      max_prompts=args.max_prompts, max_personas=args.max_personas, guidance=args.guidance,
                      backend=args.backend)
    report = steerability_report(cfg)
    print(report["markdown"])
    return 0


# -- parsers ----------------------------------------------------------------------------------

def _add_sft_arguments(p: argparse.ArgumentParser, bootstrap: bool = False) -> None:
    g = p.add_argument_group("prompt and data")
    if not bootstrap:
        g.add_argument("--base", default="smollm2", help="base model: HF folder, .gguf file or 'smollm2' (default)")
        g.add_argument("--data", nargs="+", required=True, help="training data (any readable format, see `steernpc data convert`)")
        g.add_argument("--data-format", default="auto", help="data format (default: guess from the file)")
        g.add_argument("--format", choices=FORMATS, required=True, help="prompt format (nemo: NeMo template; chat: the model's chat template)")
    g.add_argument("--schema", default=None, help="attribute schema (default: the personas' schema, else npc for chat / nemo for nemo)")
    g.add_argument("--personas", nargs="*", help="persona files/folders: a record's `character` gets its persona card as system text")
    g.add_argument("--system", default=None, help="system text for every example (overrides records)")
    g.add_argument("--history", type=int, default=3, help="chat format: previous exchanges kept before each trained reply")
    g.add_argument("--fill-missing", action="store_true", help="fill labels a reply lacks with the schema defaults")
    g.add_argument("--skip-bad", action="store_true", help="skip malformed records (count them) instead of failing")
    g.add_argument("--max-examples", type=int, default=0, help="use a random subset of this many examples (0 = all)")
    g.add_argument("--end-weight", type=float, default=1.0,
                   help="loss weight of each reply's end-of-turn marker (default 1: plain SFT); >1 teaches "
                        "*when* to stop, which is what verbosity labels steer")
    g.add_argument("--share-prefix", action="store_true",
                   help="nemo: the replies of a contrast set (one persona, one player line) share one prefix "
                        "in one example: the card is computed once per set instead of once per reply")
    g.add_argument("--contrast-weight", type=float, default=0.0,
                   help="weight of the label-contrast term (implies --share-prefix; 0 = off): each reply must be "
                        "likelier under its own labels than with one attribute moved two or more levels")
    g.add_argument("--contrast-beta", type=float, default=0.5, help="sharpness of the label-contrast term")
    g = p.add_argument_group("model")
    kind = g.add_mutually_exclusive_group()
    kind.add_argument("--lora", type=int, default=None, metavar="R", help="LoRA rank on all linear projections (default 16)")
    kind.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    g.add_argument("--lora-alpha", type=int, default=0, help="LoRA alpha (default 2 x rank)")
    g.add_argument("--lora-dropout", type=float, default=0.05)
    if not bootstrap:
        g.add_argument("--init-adapter", default=None, help="continue training this LoRA adapter")
    g = p.add_argument_group("optimization")
    g.add_argument("--max-length", type=int, default=1024, help="tokens per packed row")
    g.add_argument("--no-packing", action="store_true", help="one example per row")
    g.add_argument("--micro-batch", type=int, default=4, help="rows per forward pass (per process)")
    g.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    g.add_argument("--epochs", type=float, default=1.0)
    g.add_argument("--max-steps", type=int, default=0, help="stop after this many optimizer steps (overrides --epochs)")
    g.add_argument("--lr", type=float, default=0.0, help="peak learning rate (default 2e-4 LoRA, 2e-5 full)")
    g.add_argument("--warmup", type=float, default=0.03, help="warm-up fraction of the steps")
    g.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto", help="auto: bf16 autocast on GPU, fp32 on CPU")
    g.add_argument("--grad-checkpointing", action="store_true")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("checkpoints and logs")
    g.add_argument("--save-every", type=int, default=100, help="checkpoint every N steps (0 = only the final model)")
    g.add_argument("--save-minutes", type=float, default=30.0, help="also checkpoint after this many minutes (0 = off); SIGTERM/Ctrl-C checkpoint too")
    g.add_argument("--keep-checkpoints", type=int, default=2)
    g.add_argument("--resume", default="auto", help="auto (latest checkpoint in --out), never, or a checkpoint folder")
    g.add_argument("--log-every", type=int, default=10)
    g.add_argument("--halt-after-step", type=int, default=0, help=argparse.SUPPRESS)


def register(sub: argparse._SubParsersAction) -> None:
    read_formats, write_formats = _data_formats()

    data = sub.add_parser("data", help="dataset conversion and statistics").add_subparsers(dest="data_command", metavar="ACTION")
    data.required = True
    p = data.add_parser("convert", help="convert between NeMo SteerLM, regression, npc, HelpSteer, OASST, chitchat")
    p.add_argument("--from", dest="from_fmt", default="auto", choices=("auto",) + tuple(read_formats))
    p.add_argument("--to", dest="to_fmt", required=True, choices=write_formats)
    p.add_argument("--schema", default=None, help="label order for the regression format (default nemo)")
    p.add_argument("--skip-bad", action="store_true", help="skip malformed lines and report a count")
    p.add_argument("--limit", type=int, default=0, help="write only the first N records")
    p.add_argument("--personas", nargs="+", default=None, metavar="PATH",
                   help="persona files/folders: a record's `character` gets its persona card as system text")
    p.add_argument("input", help="input file ('chitchat' = the installed chitchat-dataset)")
    p.add_argument("output")
    p.set_defaults(func=cmd_data_convert)
    p = data.add_parser("stats", help="counts per attribute level, persona, category, emotion and action; length per verbosity; duplicates")
    p.add_argument("--from", dest="from_fmt", default="auto", choices=("auto",) + tuple(read_formats))
    p.add_argument("--skip-bad", action="store_true", help="skip malformed lines instead of failing")
    p.add_argument("input", nargs="+", help="one or more dialogue files (e.g. samples/corpus/dialogue/*.jsonl)")
    p.set_defaults(func=cmd_data_stats)

    train = sub.add_parser("train", help="SteerLM training: apm (step 1), sft (step 3), bootstrap (step 4)").add_subparsers(dest="train_command", metavar="STEP")
    train.required = True
    p = train.add_parser("apm", help="step 1: train the attribute prediction model")
    p.add_argument("--schema", default="nemo", help="attribute schema: nemo, npc or a YAML file")
    p.add_argument("--data", nargs="+", required=True, help="regression JSONL or any conversational format with labels")
    p.add_argument("--data-format", default="auto")
    p.add_argument("--backbone", default="minilm", help="HF encoder/decoder folder, .gguf, 'smollm2', or 'minilm' (default)")
    p.add_argument("--out", required=True)
    p.add_argument("--pooling", choices=("auto", "mean", "last"), default="auto", help="auto: mean for encoders, last token for decoders")
    p.add_argument("--input", choices=("conversation", "reply"), default="conversation", help="NeMo's context text, or the reply alone")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-5, help="backbone learning rate")
    p.add_argument("--head-lr", type=float, default=1e-3)
    p.add_argument("--holdout", type=float, default=0.1, help="held-out fraction (split by record)")
    p.add_argument("--eval", nargs="+", default=None, metavar="FILE", help="held-out files to evaluate on (e.g. other personas), instead of --holdout")
    p.add_argument("--max-examples", type=int, default=0)
    p.add_argument("--freeze-backbone", action="store_true", help="train the head only (features computed once)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-bad", action="store_true")
    p.set_defaults(func=cmd_train_apm)

    p = train.add_parser("sft", help="step 3: attribute-conditioned SFT (LoRA or full); run under torchrun for DDP")
    p.add_argument("--out", required=True)
    _add_sft_arguments(p)
    p.set_defaults(func=cmd_train_sft)

    p = train.add_parser("bootstrap", help="step 4: sample k replies per prompt, annotate with the APM, train round 2 (OUT/round2)")
    p.add_argument("--model", "--base", dest="model", required=True, help="the round-1 base (with --adapter) or full model")
    p.add_argument("--adapter", default=None, help="the round-1 LoRA adapter (round 2 continues training it)")
    p.add_argument("--apm", required=True)
    p.add_argument("--prompts", nargs="+", required=True, help="prompt records (any format; replies are ignored) or a .txt of lines")
    p.add_argument("--out", required=True)
    p.add_argument("--format", choices=FORMATS, default=None, help="prompt format (default: the adapter's)")
    p.add_argument("--samples", "-k", type=int, default=4, help="replies sampled per prompt")
    p.add_argument("--max-prompts", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--batch-size", type=int, default=8, help="generation batch size")
    p.add_argument("--weighting", choices=("none", "steerlm2"), default="none",
                   help="steerlm2: train on the target labels with weights softmax(log P(a|x,y) + log P(y|x) - log Q'(y|a,x))")
    p.add_argument("--sigma", type=float, default=1.0, help="steerlm2: std of the Gaussian P(a|x,y) around the APM prediction")
    p.add_argument("--no-train", action="store_true", help="only build the round-2 dataset")
    p.add_argument("--keep-cut", action="store_true", help="keep replies cut by --max-new-tokens in round 2 (default: drop them)")
    _add_sft_arguments(p, bootstrap=True)
    p.set_defaults(func=cmd_train_bootstrap)

    p = sub.add_parser("annotate", help="step 2: label every reply with the APM (resumable); writes NeMo SteerLM JSONL")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--apm", required=True, help="APM folder from `steernpc train apm`")
    p.add_argument("--from", dest="from_fmt", default="auto", choices=("auto",) + tuple(read_formats))
    p.add_argument("--to", dest="to_fmt", default="nemo", choices=("nemo", "npc"))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--keep-labels", action="store_true", help="keep labels the data already has; predict only the missing ones")
    p.add_argument("--skip-bad", action="store_true")
    p.add_argument("--restart", action="store_true", help="start over instead of resuming")
    p.add_argument("--limit", type=int, default=0, help="annotate only the first N records")
    p.add_argument("--calibrate", action="store_true",
                   help="first fit the APM's quantile calibration on this corpus (every level equally common; "
                        "saved as APM/calibration.json and used by later annotate and bootstrap runs)")
    p.set_defaults(func=cmd_annotate)

    ev = sub.add_parser("eval", help="evaluation reports").add_subparsers(dest="eval_command", metavar="REPORT")
    ev.required = True
    p = ev.add_parser("steerability", help="sweep each attribute, generate, measure with the APM; report Spearman per attribute")
    p.add_argument("--model", "--base", dest="model", required=True, help="base model (HF folder, .gguf, 'smollm2') or a full fine-tuned folder")
    p.add_argument("--adapter", default=None, help="LoRA adapter folder")
    p.add_argument("--apm", required=True)
    p.add_argument("--personas", required=True, nargs="+", help="persona files or folders")
    p.add_argument("--prompts", required=True, help="player lines: .txt (one per line) or JSONL (any format: the first user line)")
    p.add_argument("--out", required=True)
    p.add_argument("--format", choices=FORMATS, default=None, help="prompt format (default: the adapter's or model's, else chat)")
    p.add_argument("--attribute", action="append", help="sweep only this attribute (repeatable)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); >0 = seeded sampling")
    p.add_argument("--samples", type=int, default=1, help="generations per (persona, prompt, target) when sampling")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-prompts", type=int, default=0)
    p.add_argument("--max-personas", type=int, default=0)
    p.add_argument("--backend", choices=("hf", "torch", "onnx"), default="hf",
                   help="hf: transformers.generate; torch/onnx: the runtime's own engine, as served (onnx: Q4_1, fastest on CPU)")
    p.add_argument("--guidance", type=float, default=1.0,
                   help="classifier-free guidance strength against the persona's own vector (1 = off; 2-3 amplify what the model learned)")
    p.set_defaults(func=cmd_eval_steerability)


def main(argv: list[str] | None = None) -> int:
    """`python -m steernpc_train.cli ...` == `steernpc ...` (used under torchrun)."""
    from steernpc.cli import main as steernpc_main

    return steernpc_main(argv)


if __name__ == "__main__":
    sys.exit(main())
