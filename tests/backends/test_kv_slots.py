"""The KV slot pool (steernpc.generation.kv_slots): which slot a request takes, which slot
lends it a prefix, which session is evicted; then the same through the scheduler over a
fake model runner, where a wrong slot or prefix would change the reply. No model."""

from __future__ import annotations

import pytest
from fake_runner import FakeRunner, greedy, make_scheduler, reference

from steernpc.generation.kv_slots import KvSlots, common_prefix


def pool(*contents: tuple[str | None, str]) -> KvSlots:
    """A pool whose slot i is parked by owner contents[i][0] with tokens contents[i][1]."""
    kv = KvSlots(len(contents), FakeRunner(len(contents)))
    for i, (owner, text) in enumerate(contents):
        kv[i].owner, kv[i].tokens, kv[i].last_used = owner, [ord(c) for c in text], float(i)
        kv.runner.kv[i] = list(kv[i].tokens)
    return kv


def ids(text: str) -> list[int]:
    return [ord(c) for c in text]


def test_common_prefix():
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([1, 2], [1, 2]) == 2


def test_a_session_returns_to_its_own_slot():
    kv = pool(("a", "card hello"), (None, ""), ("b", "card bye"))
    assert kv.choose("b", first=0) == 2
    assert kv.choose("b", first=1) == 2


def test_a_new_request_prefers_an_empty_slot_then_the_least_useful_free_one():
    kv = pool(("a", "x"), (None, "a long free prefix"), (None, ""), (None, "short"))
    assert kv.choose("new", first=0) == 2
    assert kv.choose(None, first=0) == 2
    kv[2].tokens = ids("somewhat longer")
    assert kv.choose("new", first=0) == 3


def test_with_no_free_slot_the_least_recently_used_session_is_evicted():
    kv = pool(("a", "x"), ("b", "y"), ("c", "z"))
    kv[1].last_used = -1.0
    assert kv.choose("new", first=0) == 1


def test_running_slots_are_never_chosen():
    kv = pool((None, ""), ("b", "y"), ("c", "z"))
    assert kv.choose("new", first=1) == 1  # slot 0 is empty, but a running request holds it
    kv = pool(("a", "x"), ("b", "y"))
    assert kv.choose("a", first=1) == 1  # "a" is running in slot 0: a second turn cannot share it


def test_the_best_donor_shares_the_longest_prefix():
    kv = pool(("a", "card: hi"), ("b", "card: hello there"), (None, "cart"))
    assert kv.best_donor(ids("card: hello you"), exclude=-1) == (1, 12)
    assert kv.best_donor(ids("card: hello you"), exclude=1) == (0, 7)
    assert kv.best_donor(ids("xyz"), exclude=-1) == (-1, 0)


def test_claim_copies_a_longer_prefix_from_a_donor():
    kv = pool(("a", "card: hello"), ("b", "ca"))
    slot, cached = kv.claim("b", ids("card: hi"), first=0)
    assert (slot, cached) == (1, 7)
    assert kv.runner.calls == [("copy", 1, 0, 7)]
    assert kv[1].tokens == ids("card: h") and kv.runner.kv[1] == ids("card: h")
    assert kv[1].owner == "b"


def test_claim_keeps_its_own_prefix_when_no_donor_is_longer():
    kv = pool(("a", "card: hello"), ("b", "card: hello, smith"))
    slot, cached = kv.claim("b", ids("card: hello, smith! more"), first=0)
    assert (slot, cached) == (1, len("card: hello, smith"))
    assert not any(c[0] == "copy" for c in kv.runner.calls)


def test_claim_always_leaves_the_last_prompt_token_to_compute():
    kv = pool(("a", "same prompt"), (None, ""))
    assert kv.claim("a", ids("same prompt"), first=0) == (0, len("same prompt") - 1)


def test_release_parks_a_session_and_frees_an_anonymous_request():
    kv = pool((None, "abc"), (None, "def"))
    kv.release(0, "s")
    kv.release(1, None)
    assert (kv[0].owner, kv[0].tokens) == ("s", ids("abc"))
    assert (kv[1].owner, kv[1].tokens) == (None, [])
    assert kv.parked() == 1


def test_forget_skips_slots_in_use():
    kv = pool(("s", "abc"), ("s", "abd"), ("t", "x"))
    kv.forget("s", busy={0})
    assert [(s.owner, len(s.tokens)) for s in kv.slots] == [("s", 3), (None, 0), ("t", 1)]


def test_move_swaps_the_kv_and_the_bookkeeping():
    kv = pool(("a", "abc"), ("b", "de"), (None, ""), (None, ""))
    kv.move(0, 1)
    assert (kv[0].owner, kv[1].owner) == ("b", "a")
    assert kv.runner.kv[0] == ids("de") and kv.runner.kv[1] == ids("abc")
    assert kv.runner.calls == [("swap", 0, 1, 3)]
    kv.move(2, 3)  # two empty slots: nothing to copy
    kv.move(1, 1)
    assert kv.runner.calls == [("swap", 0, 1, 3)]


# -- through the scheduler ------------------------------------------------------------------

CARD = "You are Brom, the blacksmith. "


@pytest.fixture
def engine():
    scheduler, runner = make_scheduler(slots=4, max_batch=2)
    yield scheduler, runner
    scheduler.close()


def run(scheduler, prompt: str, n: int, key: str | None = None):
    return scheduler.submit(greedy(prompt, n, key=key)).result(timeout=10)


def test_the_next_turn_reuses_the_sessions_slot(engine):
    scheduler, runner = engine
    first = run(scheduler, CARD + "Good morning.", 6, key="s")
    reply = "".join(map(chr, first.token_ids))
    second_prompt = CARD + "Good morning." + reply + " Any swords?"
    second = run(scheduler, second_prompt, 6, key="s")
    assert second.cached_tokens == first.prompt_tokens + 5  # the last reply token was never fed
    assert second.token_ids == reference(second_prompt, 6)
    assert not any(c[0] == "copy" for c in runner.calls)


def test_a_new_session_copies_the_shared_card(engine):
    scheduler, runner = engine
    run(scheduler, CARD + "First visitor.", 4, key="donor")
    fresh = run(scheduler, CARD + "Someone else.", 6, key="fresh")
    assert fresh.cached_tokens == len(CARD)
    assert fresh.token_ids == reference(CARD + "Someone else.", 6)
    assert [c for c in runner.calls if c[0] == "copy"] == [("copy", 1, 0, len(CARD))]


def test_more_sessions_than_slots_stay_correct(engine):
    """10 sessions through 4 slots, three turns each: evicted sessions are recomputed,
    parked ones resume, never mixed up."""
    scheduler, runner = engine
    history = {f"s{i}": CARD + f"Player {i} says hello." for i in range(10)}
    for _turn in range(3):
        streams = {key: scheduler.submit(greedy(prompt, 5, key=key)) for key, prompt in history.items()}
        for key, stream in streams.items():
            result = stream.result(timeout=10)
            assert result.token_ids == reference(history[key], 5), key
            history[key] += "".join(map(chr, result.token_ids)) + f" And again, {key}."
    assert scheduler.stats()["parked_sessions"] == 4


def test_a_dropped_session_starts_cold(engine):
    scheduler, _ = engine
    run(scheduler, CARD + "Hello.", 4, key="other")
    run(scheduler, CARD + "Remember me.", 4, key="s")
    scheduler.drop_cache("s")
    prompt = CARD + "Remember me. Hm. Well?"
    again = run(scheduler, prompt, 4, key="s")
    assert again.cached_tokens == len(CARD)  # only the card, from the other session's slot
    assert again.token_ids == reference(prompt, 4)
