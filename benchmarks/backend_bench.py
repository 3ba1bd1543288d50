"""CPU backend benchmark: decode tokens/s and time to first token at batch 1 and 8.

    python benchmarks/backend_bench.py [--runs 3] [--tokens 64] [--engines torch-fp32,onnx-int8,...]

Engines (same model, SmolLM2-135M-Instruct, same prompts, same run):
  torch-fp32, torch-bf16   steernpc's TorchBackend
  onnx-fp32, onnx-int8, onnx-int4, onnx-q4_1
                           steernpc's OnnxBackend on `steernpc compile --target onnx` exports
  llama.cpp                the peer: llama-cpp-python on the bundled Q4_1 GGUF, driven through
                           its low-level batch API (one llama_decode per step for all
                           sequences, as llama-server's parallel slots do), greedy argmax.

Every engine decodes exactly --tokens tokens per request (end-of-sequence ignored) from a
chat prompt (persona card + a player line, ~60 tokens). Batch 8 = 8 different player lines
submitted at once. Engines are measured in turn within each run (interleaved), and the
medians over --runs are reported, so background load hits all of them alike; the machine
is shared and noisy, so treat differences under ~10% as noise.
Writes benchmarks/results/backends_cpu.md and prints the table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "backends_cpu.md"
CARD = ("You are Brom, the gruff blacksmith of Emberfall. You speak in short sentences, you are proud of "
        "your work, and you distrust strangers from the capital.\nAttributes: humor:1,friendliness:2,verbosity:2")  # fmt: skip
LINES = [
    "Can you fix my sword? It broke on a troll.",
    "What news from the capital?",
    "Tell me about the old mine.",
    "How much for a new shield?",
    "Who are you, old man?",
    "I need a blade that can cut through dragon scales.",
    "Have you seen a thief run past your forge?",
    "What is the weather like up in the mountains?",
]
QUALITY_TEXTS = [
    "The blacksmith wiped his hands on his apron and looked at the broken sword. 'This blade has seen better days,' he said. "
    "'I can mend it, but it will take until sundown, and it will cost you three silver coins.'",
    "Welcome to the Prancing Pony! We have warm beds, cold ale and the best stew this side of the river. A room for the night "
    "is five copper, and breakfast is included if you wake before the rooster.",
    "The old mine was closed twenty years ago after the collapse. Some say the miners still wander the tunnels at night, and "
    "that you can hear their picks if you put your ear to the rocks near the entrance.",
    "Photosynthesis is the process by which green plants use sunlight to synthesize food from carbon dioxide and water. "
    "It generally involves the green pigment chlorophyll and generates oxygen as a by-product.",
    "I haven't seen any thief, stranger, but the guards were running toward the market square a moment ago. If someone stole "
    "from you, you should talk to the captain at the barracks before the trail goes cold.",
    "The weather in the mountains changes quickly. In the morning the sky may be clear and blue, but by noon heavy clouds "
    "roll in from the west, and travelers who are not prepared can be caught in a snowstorm.",
]
ALL_ENGINES = ("torch-fp32", "torch-bf16", "onnx-q4_1", "onnx-int8", "onnx-int4", "llama.cpp")


def prompts(tokenizer, n: int) -> list[str]:
    return [
        tokenizer.apply_chat_template([{"role": "system", "content": CARD}, {"role": "user", "content": line}], tokenize=False,
                                      add_generation_prompt=True)  # fmt: skip
        for line in LINES[:n]
    ]


# -- steernpc backends ---------------------------------------------------------------------------

class SteerNpcEngine:
    def __init__(self, name: str, backend):
        self.name, self.backend = name, backend
        backend.eos_ids = set()  # decode exactly --tokens tokens

    def run(self, texts: list[str], tokens: int) -> dict:
        from steernpc.generation import GenerationRequest, SamplingParams

        requests = [GenerationRequest(t, SamplingParams(max_new_tokens=tokens, temperature=0.0)) for t in texts]
        started = time.perf_counter()
        results = self.backend.generate(requests)
        wall = time.perf_counter() - started
        assert all(r.completion_tokens == tokens for r in results), [r.completion_tokens for r in results]
        decode = [(r.completion_tokens - 1) / max(1e-9, (r.total_ms - r.ttft_ms) / 1000) for r in results]
        return {"ttft_ms": statistics.median(r.ttft_ms for r in results), "decode_tps": statistics.median(decode),
                "aggregate_tps": sum(r.completion_tokens for r in results) / wall}  # fmt: skip

    def perplexity(self, seqs: list[list[int]]) -> float:
        """Teacher-forced perplexity of `seqs` (token ids) under this engine's weights."""
        backend = self.backend
        nll, count = 0.0, 0
        if hasattr(backend, "model"):  # torch
            import torch

            with torch.inference_mode():
                for ids in seqs:
                    logits = backend.model(torch.tensor([ids])).logits[0].double()
                    nll += torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="sum").item()
                    count += len(ids) - 1
        else:  # onnx: one token per step through the engine's KV pool (slot 0)
            for ids in seqs:
                for i in range(len(ids) - 1):
                    logits = backend._run(0, 1, np.array([[ids[i]]]), np.ones((1, i + 1), np.int64))[0].astype(np.float64)
                    nll += _nll(logits, ids[i + 1])
                    count += 1
        return float(np.exp(nll / count))

    def close(self):
        self.backend.close()


def _nll(logits, target: int) -> float:
    top = logits.max()
    return float(top + np.log(np.exp(logits - top).sum()) - logits[target])


def make_torch(dtype: str, model_dir: Path):
    from steernpc.generation.torch_backend import TorchBackend

    return SteerNpcEngine(f"torch-{'fp32' if dtype == 'float32' else 'bf16'}",
                          TorchBackend(model_dir, device="cpu", dtype=dtype, slots=10, max_batch=8, max_len=512))  # fmt: skip


def make_onnx(precision: str, model_dir: Path, cache: Path, threads: int):
    from steernpc.export import ONNX_FILE, export_onnx
    from steernpc.generation.onnx_backend import OnnxBackend

    folder = cache / f"smollm2-{precision}"
    if not (folder / ONNX_FILE).exists():
        print(f"exporting {precision} ...", file=sys.stderr, flush=True)
        export_onnx(model_dir, folder, precision=precision)
    return SteerNpcEngine(f"onnx-{precision}", OnnxBackend(folder, slots=10, max_batch=8, max_len=512, threads=threads))


# -- llama.cpp --------------------------------------------------------------------------------------

class LlamaCppEngine:
    """llama.cpp through llama-cpp-python's low-level API: prompts prefilled in one batch,
    then one llama_decode per step for all sequences; greedy argmax in numpy."""

    name = "llama.cpp"

    def __init__(self, gguf: Path, threads: int):
        import llama_cpp

        self.lc = llama_cpp
        self.llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=512, n_threads=threads, n_threads_batch=threads, verbose=False)
        model = self.llm._model.model
        params = llama_cpp.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch, params.n_seq_max = 8 * 512, 1024, 512, 8
        params.n_threads, params.n_threads_batch = threads, threads
        self.ctx = llama_cpp.llama_init_from_model(model, params)
        self.batch = llama_cpp.llama_batch_init(1024, 0, 8)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
        self.version = getattr(llama_cpp, "__version__", "?")

    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> None:
        b = self.batch
        b.n_tokens = len(entries)
        for i, (token, pos, seq, logits) in enumerate(entries):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, logits
            b.seq_id[i][0] = seq
        if self.lc.llama_decode(self.ctx, b) != 0:
            raise RuntimeError("llama_decode failed")

    def _argmax(self, i: int) -> int:
        return int(np.argmax(np.ctypeslib.as_array(self.lc.llama_get_logits_ith(self.ctx, i), shape=(self.n_vocab,))))

    def run(self, texts: list[str], tokens: int) -> dict:
        lc = self.lc
        lc.llama_memory_clear(lc.llama_get_memory(self.ctx), True)
        ids = [self.llm.tokenize(t.encode(), add_bos=False, special=True) for t in texts]
        started = time.perf_counter()
        entries = [(tok, pos, s, pos == len(seq) - 1) for s, seq in enumerate(ids) for pos, tok in enumerate(seq)]
        self._decode(entries)
        out_index = [i for i, e in enumerate(entries) if e[3]]
        nxt = [self._argmax(i) for i in out_index]
        first = time.perf_counter()
        pos = [len(seq) for seq in ids]
        for _ in range(tokens - 1):
            self._decode([(nxt[s], pos[s], s, True) for s in range(len(ids))])
            nxt = [self._argmax(i) for i in range(len(ids))]
            pos = [p + 1 for p in pos]
        done = time.perf_counter()
        return {"ttft_ms": (first - started) * 1000, "decode_tps": (tokens - 1) / (done - first),
                "aggregate_tps": tokens * len(ids) / (done - started)}  # fmt: skip

    def perplexity(self, seqs: list[list[int]]) -> float:
        lc = self.lc
        nll, count = 0.0, 0
        for ids in seqs:
            lc.llama_memory_clear(lc.llama_get_memory(self.ctx), True)
            self._decode([(tok, pos, 0, True) for pos, tok in enumerate(ids)])
            for i in range(len(ids) - 1):
                logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(self.ctx, i), shape=(self.n_vocab,)).astype(np.float64)
                nll += _nll(logits, ids[i + 1])
                count += 1
        return float(np.exp(nll / count))

    def close(self):
        self.lc.llama_batch_free(self.batch)
        self.lc.llama_free(self.ctx)


# -- main -------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--engines", default=",".join(ALL_ENGINES))
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="threads for every engine (torch, ORT, llama.cpp)")
    parser.add_argument("--no-quality", action="store_true", help="skip the perplexity column")
    parser.add_argument("--cache", default=None, help="where ONNX exports go (default STEERNPC_HOME/bench-onnx)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)

    import onnxruntime
    import torch

    from steernpc import models

    torch.set_num_threads(args.threads)
    model_dir = models.prepare(quiet=True)
    cache = Path(args.cache) if args.cache else models.home() / "bench-onnx"
    names = [e.strip() for e in args.engines.split(",") if e.strip()]
    batches = [int(b) for b in args.batches.split(",")]
    tokenizer = models.load_tokenizer(model_dir)
    texts = prompts(tokenizer, max(batches))
    prompt_tokens = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]

    engines = []
    for name in names:
        if name.startswith("torch-"):
            engines.append(make_torch("float32" if name == "torch-fp32" else "bfloat16", model_dir))
        elif name.startswith("onnx-"):
            engines.append(make_onnx(name.split("-", 1)[1], model_dir, cache, args.threads))
        elif name == "llama.cpp":
            engines.append(LlamaCppEngine(models.bundled_gguf(), args.threads))
        else:
            raise SystemExit(f"unknown engine {name}; engines: {', '.join(ALL_ENGINES)}")
    quality = {}
    if not args.no_quality:
        seqs = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in QUALITY_TEXTS]
        for engine in engines:
            quality[engine.name] = engine.perplexity(seqs)
            print(f"{engine.name}: perplexity {quality[engine.name]:.2f}", file=sys.stderr, flush=True)
    load_before = os.getloadavg()
    samples: dict[tuple[str, int], list[dict]] = {(e.name, b): [] for e in engines for b in batches}
    for engine in engines:  # warm-up: first calls allocate and pack weights
        for b in batches:
            engine.run(texts[:b], 8)
    for run in range(args.runs):
        for b in batches:
            for engine in engines:
                samples[(engine.name, b)].append(engine.run(texts[:b], args.tokens))
        print(f"run {run + 1}/{args.runs} done", file=sys.stderr, flush=True)
    load_after = os.getloadavg()
    for engine in engines:
        engine.close()

    def med(name, b, key):
        return statistics.median(s[key] for s in samples[(name, b)])

    rows = []
    for engine in engines:
        row = [engine.name] + ([f"{quality[engine.name]:.2f}"] if quality else [])
        for b in batches:
            row += [f"{med(engine.name, b, 'decode_tps'):.1f}", f"{med(engine.name, b, 'aggregate_tps'):.1f}", f"{med(engine.name, b, 'ttft_ms'):.0f}"]
        rows.append(row)
    header = ["engine"] + (["perplexity"] if quality else []) + [h for b in batches for h in (f"B={b} decode tok/s per seq", f"B={b} aggregate tok/s", f"B={b} TTFT ms")]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
    llama_version = next((e.version for e in engines if isinstance(e, LlamaCppEngine)), "-")
    info = [
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_version()}; load average "
        f"{load_before[0]:.1f} at start, {load_after[0]:.1f} at end (other jobs ran on this shared machine)",
        f"- torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, llama-cpp-python {llama_version}",
        f"- SmolLM2-135M-Instruct; prompts {min(prompt_tokens)}-{max(prompt_tokens)} tokens; {args.tokens} greedy tokens "
        f"per request (EOS ignored); medians of {args.runs} interleaved runs after a warm-up; {args.threads} thread(s) per engine",
    ]
    if quality:
        info.append("- perplexity: teacher-forced, 6 short English passages (~255 tokens); lower is better; fp32 is the "
                    "reference (its weights are the Q4_1 GGUF de-quantized, so llama.cpp's Q4_1 is lossless against it)")
    text = "\n".join(table) + "\n\n" + "\n".join(info) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    previous = Path(args.out).read_text() if Path(args.out).exists() else ""
    marker = "<!-- bench-table -->"
    if marker in previous:  # keep the hand-written analysis around the table
        head, _, rest = previous.partition(marker)
        _, _, tail = rest.partition(marker)
        Path(args.out).write_text(f"{head}{marker}\n{text}{marker}{tail}")
    else:
        Path(args.out).write_text(f"# CPU backends: torch vs onnx vs llama.cpp\n\n{marker}\n{text}{marker}\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
