"""Build the sample NPC dialogue corpus: replies of the untuned base model to this
project's player lines, for every sample persona.

The base model ignores SteerLM label lines, so to get replies that *vary* in humor,
friendliness, creativity and verbosity we add a random style instruction per reply
("Answer in at most six words.", "Be funny: ...") to the system message while sampling.
The instruction is NOT kept: the record stores the plain persona card, and step 2
(annotate) labels each reply with the attribute prediction model, so the SFT learns
label -> style from what the replies actually are.

    python samples/pipeline/npc_corpus.py --out runs/sample/npc_corpus.jsonl [--per-line 2]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from steernpc.conversation import system_text
from steernpc.generation import GenerationRequest, SamplingParams
from steernpc.generation.torch_backend import TorchBackend
from steernpc.persona import load_personas
from steernpc.prompt import stop_strings

REPO = Path(__file__).resolve().parents[2]

STYLES = {
    "verbosity": ["Answer in at most six words.", "Answer in one short sentence.", "",
                  "Answer in three or four sentences.", "Answer at length, in five or more detailed sentences."],
    "humor": ["Be completely serious; no jokes at all.", "", "Be funny: make a joke, a pun or a witty remark."],
    "friendliness": ["Be cold, curt and unfriendly to the player.", "", "Be very warm, kind and welcoming to the player."],
    "creativity": ["Speak plainly and literally, no imagery.", "", "Use vivid, colourful, imaginative language."],
}  # fmt: skip


def read_lines(path: Path) -> list[str]:
    return [l.strip() for l in path.read_text().splitlines() if l.strip() and not l.startswith("#")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--personas", default=str(REPO / "samples" / "personas"))
    parser.add_argument("--lines", default=str(REPO / "samples" / "data" / "player_lines.txt"))
    parser.add_argument("--per-line", type=int, default=2, help="replies per persona and player line")
    parser.add_argument("--max-new-tokens", type=int, default=90)
    parser.add_argument("--limit", type=int, default=0, help="only the first N (persona, line) pairs (tests)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    personas, problems = load_personas([args.personas])
    if problems:
        raise SystemExit("\n".join(map(str, problems)))
    lines = read_lines(Path(args.lines))
    backend = TorchBackend(args.model, max_batch=16, slots=20, max_queue=100000)
    tokenizer = backend.tokenizer
    jobs = []
    for persona in personas.values():
        card = system_text(persona)
        for line in lines:
            for k in range(args.per_line):
                style = " ".join(s for s in (rng.choice(options) for options in STYLES.values()) if s)
                system = f"{card}\n{style}" if style else card
                messages = [{"role": "system", "content": system}, {"role": "user", "content": line}]
                prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
                jobs.append((persona.id, card, line, style, prompt))
    rng.shuffle(jobs)  # any prefix of the run covers every persona (it can be stopped early)
    if args.limit:
        jobs = jobs[: args.limit]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {json.loads(l)["id"] for l in out.read_text().splitlines()} if out.exists() else set()
    started, tokens = time.time(), 0
    with out.open("a") as f:
        pending = [(i, j) for i, j in enumerate(jobs) if f"npc-{i}" not in done]
        print(f"{len(jobs)} replies to sample, {len(jobs) - len(pending)} already done", file=sys.stderr)
        for start in range(0, len(pending), 64):
            batch = pending[start : start + 64]
            requests = [
                GenerationRequest(job[4], SamplingParams(args.max_new_tokens, 0.8, 0.95, 50, 1.1, seed=args.seed * 100000 + i),
                                  stop_strings("chat", tokenizer))  # fmt: skip
                for i, job in batch
            ]
            for (i, (pid, card, line, style, _)), result in zip(batch, backend.generate(requests)):
                tokens += result.completion_tokens
                if not result.text.strip():
                    continue
                record = {"id": f"npc-{i}", "character": pid, "system": card, "style": style,
                          "turns": [{"user": line, "reply": result.text}]}  # fmt: skip
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            rate = tokens / (time.time() - started)
            print(f"  {min(start + 64, len(pending))}/{len(pending)} replies, {rate:.0f} tok/s", file=sys.stderr, flush=True)
    backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
