"""The corpus design: which persona answers which player line under which attribute vectors.

Writers (people or helpers) get one task file per persona group and write every reply by
hand to its vector; this script only decides the vectors, so that the attributes are
decorrelated and every level of every attribute is equally covered:

- contrast sets: 5 replies to one (persona, line); in most sets each attribute takes each
  level 0..4 exactly once (a random Latin-square column per attribute); in every fifth set
  exactly one attribute sweeps 0..4 while the others stay at the persona's profile;
- conversations: 3-6 turns where a mood or a steer changes the vector partway.

Run: python samples/corpus/design.py   (deterministic; rewrites samples/corpus/tasks/)
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
ATTRS = ("humor", "friendliness", "creativity", "verbosity")
LINES_PER_PERSONA = 16
CONVERSATIONS_PER_PERSONA = 10
HELDOUT_LINES_PER_PERSONA = 10

# group -> (setting, five training roles, one held-out role)
GROUPS = {
    "port": ("Saltmere, a busy port city on the Sapphire Coast",
             ["harbourmaster", "old sailor", "fishmonger", "smuggler", "dockside tavern keeper"],
             "lighthouse keeper"),
    "fort": ("Fort Greyhold, a frontier fort on the northern marches",
             ["gate guard", "veteran soldier", "quartermaster", "ranger scout", "camp cook"],
             "captain of the gate watch"),
    "village": ("Millbrook, a farming village in the river valley",
                ["farmer", "miller", "village child (about nine years old)", "shepherd", "village priest"],
                "herbalist who lives at the forest edge"),
    "capital": ("Varenhall, the royal capital",
                ["noblewoman", "court scholar", "palace guard", "tailor", "beggar"],
                "royal herald"),
    "marsh": ("the Gloamwood marshes and the hamlet of Reedholm",
              ["marsh witch", "eel trapper", "hermit", "pilgrim", "boatwright"],
              "gravedigger"),
    "desert": ("Qasrah, a desert caravan town",
               ["caravan master", "spice merchant", "water seller", "fortune teller", "stable hand"],
               "desert nomad guide"),
    "mountain": ("Highcairn, a mining town below a mountain monastery",
                 ["monk", "miner", "mountain guide", "alchemist", "innkeeper"],
                 "mine foreman"),
    "road": ("the King's Road and its waystations",
             ["travelling merchant", "thief", "bounty hunter", "wandering minstrel", "toll keeper"],
             "retired knight"),
}

# A conversation's later turns follow one of these changes (a mood, or a designer's steer).
CHANGES = {
    "angry": {"friendliness": 0, "humor": 0},
    "friendly": {"friendliness": 4},
    "drunk": {"humor": 4, "verbosity": 3, "creativity": 3, "friendliness": 3},
    "frightened": {"humor": 0, "verbosity": 1, "friendliness": 2},
    "playful": {"humor": 4, "creativity": 3},
    "curt": {"verbosity": 0, "creativity": 0},
    "chatty": {"verbosity": 4},
    "poetic": {"creativity": 4, "verbosity": 3},
    "cold": {"friendliness": 1, "humor": 0, "verbosity": 1},
    "grateful": {"friendliness": 4, "humor": 2},
}


def read_lines(path: Path) -> list[tuple[str, str]]:
    """(category, line) pairs of a player-lines file ('# category' headers)."""
    out, category = [], "misc"
    for raw in path.read_text().splitlines():
        raw = raw.strip()
        if not raw:
            continue
        if raw.startswith("#"):
            category = raw.lstrip("# ").removeprefix("more ").strip() or category
            continue
        out.append((category, raw))
    return out


def persona_id(group: str, role: str) -> str:
    """'village', 'herbalist who lives at the forest edge' -> 'village_herbalist'."""
    words = [w for w in re.split(r"[^a-z]+", role.split(" (")[0].split(" who ")[0].lower()) if w]
    words = [w for w in words if w not in (group, "the", "of", "a")][:2]
    return "_".join([group, *words])


def latin_set(rng: random.Random) -> list[dict[str, int]]:
    columns = {a: rng.sample(range(5), 5) for a in ATTRS}
    return [{a: columns[a][i] for a in ATTRS} for i in range(5)]


def one_moves_set(rng: random.Random, profile: dict[str, int]) -> tuple[str, list[dict[str, int]]]:
    moving = rng.choice(ATTRS)
    levels = rng.sample(range(5), 5)
    return moving, [{**profile, moving: level} for level in levels]


def profile_for(rng: random.Random) -> dict[str, int]:
    return {a: rng.randint(0, 4) for a in ATTRS}


def main() -> None:
    rng = random.Random(20261201)
    train_lines = read_lines(HERE / "lines" / "train.txt")
    heldout_lines = read_lines(HERE / "lines" / "heldout.txt")
    out_dir = HERE / "tasks"
    out_dir.mkdir(exist_ok=True)
    order = list(range(len(train_lines)))
    rng.shuffle(order)
    cursor = 0
    for group, (setting, roles, heldout_role) in GROUPS.items():
        personas = []
        for role in roles:
            pid = persona_id(group, role)
            profile = profile_for(rng)
            sets = []
            for k in range(LINES_PER_PERSONA):
                category, line = train_lines[order[cursor % len(order)]]
                cursor += 1
                if k % 5 == 4:
                    moving, vectors = one_moves_set(rng, profile)
                    sets.append({"line": line, "category": category, "design": f"only {moving} moves", "vectors": vectors})
                else:
                    sets.append({"line": line, "category": category, "design": "latin", "vectors": latin_set(rng)})
            conversations = []
            for _ in range(CONVERSATIONS_PER_PERSONA):
                turns = rng.randint(3, 6)
                change_at = rng.randint(1, turns - 1)
                before = {a: min(4, max(0, profile[a] + rng.choice((-1, 0, 0, 1)))) for a in ATTRS}
                # a change that changes nothing teaches nothing: pick among those that move the vector
                change = rng.choice([c for c in sorted(CHANGES) if {**before, **CHANGES[c]} != before])
                after = {**before, **CHANGES[change]}
                conversations.append({"turns": turns, "change_at_turn": change_at, "change": change,
                                      "vector_before": before, "vector_after": after})
            personas.append({"id": pid, "role": role, "profile": profile, "contrast_sets": sets,
                             "conversations": conversations})
        pid = persona_id(group, heldout_role)
        profile = profile_for(rng)
        picks = rng.sample(heldout_lines, HELDOUT_LINES_PER_PERSONA)
        heldout = {"id": pid, "role": heldout_role, "profile": profile,
                   "contrast_sets": [{"line": line, "category": cat, "design": "latin", "vectors": latin_set(rng)}
                                     for cat, line in picks]}
        task = {"group": group, "setting": setting, "personas": personas, "heldout_persona": heldout}
        (out_dir / f"{group}.json").write_text(json.dumps(task, indent=1) + "\n")
        print(f"{group}: {[p['id'] for p in personas]} + held-out {pid}")


if __name__ == "__main__":
    main()
