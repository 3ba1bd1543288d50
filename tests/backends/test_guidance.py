"""Classifier-free guidance in the scheduler (SamplingParams.guidance): a guided request
runs with a guide row; every token comes from log p(.|guide) + g * (log p(.|own) -
log p(.|guide)) and feeds both rows. Over the fake runner (one-hot logits): at g = 0 the
reply is the guide prompt's own reply, at g >= 1 the request's, so a guide row that
reads a wrong token, a wrong slot or a wrong prefix shows as a different reply."""

from __future__ import annotations

import numpy as np
import pytest
from fake_runner import greedy, make_scheduler, reference

from steernpc.generation import GenerationRequest, SamplingParams
from steernpc.generation.scheduler import guided_logits

OPEN = 10**6


@pytest.fixture
def make():
    made = []

    def build(**options):
        scheduler, runner = make_scheduler(**options)
        made.append(scheduler)
        return scheduler, runner

    yield build
    for scheduler in made:
        scheduler.close()


def guided(prompt: str, guide: str, n: int, guidance: float, key: str | None = None) -> GenerationRequest:
    params = SamplingParams(max_new_tokens=n, temperature=0.0, guidance=guidance)
    return GenerationRequest(prompt, params, cache_key=key, guide_prompt=guide)


OWN, GUIDE = "humor:hilarious. Tell me a joke.", "humor:serious. Tell me a joke."


def test_guided_logits_follow_the_formula():
    rng = np.random.default_rng(0)
    own, guide = rng.normal(size=50).astype(np.float32), rng.normal(size=50).astype(np.float32)

    def lsm(x):
        x = x.astype(np.float64)
        return x - np.log(np.exp(x).sum())

    for g in (0.0, 1.0, 2.5):
        np.testing.assert_allclose(guided_logits(own, guide, g), lsm(guide) + g * (lsm(own) - lsm(guide)), rtol=1e-5, atol=1e-5)
    assert np.argmax(guided_logits(own, guide, 1.0)) == np.argmax(own)


@pytest.mark.parametrize("guidance,follows", [(0.0, GUIDE), (1.5, OWN), (3.0, OWN)])
def test_the_guide_row_reads_the_same_reply(make, guidance, follows):
    scheduler, runner = make(slots=6, max_batch=4)
    result = scheduler.submit(guided(OWN, GUIDE, 12, guidance)).result(timeout=10)
    assert result.token_ids == reference(follows, 12)
    assert reference(OWN, 12) != reference(GUIDE, 12)  # (the test would prove nothing otherwise)
    assert set(runner.decode_batches()) == {2}  # the request and its guide row, in one forward pass
    assert result.prompt_tokens == len(OWN)


def test_guided_and_plain_requests_share_the_batch(make):
    scheduler, runner = make(slots=8, max_batch=6, gated=True)
    plain = ["Hello there.", "Once upon a time"]
    streams = [scheduler.submit(greedy(plain[0], 10)), scheduler.submit(guided(OWN, GUIDE, 10, 0.0)),
               scheduler.submit(greedy(plain[1], 10)), scheduler.submit(guided("Sing!", "Hum.", 10, 0.0))]  # fmt: skip
    runner.release(OPEN)
    got = [s.result(timeout=10).token_ids for s in streams]
    assert got == [reference(plain[0], 10), reference(GUIDE, 10), reference(plain[1], 10), reference("Hum.", 10)]
    assert max(runner.decode_batches()) == 6


def test_a_guided_request_waits_for_two_free_rows(make):
    scheduler, runner = make(slots=5, max_batch=3, gated=True)
    first = [scheduler.submit(greedy(f"Guest {i} enters.", 6)) for i in range(2)]
    late = scheduler.submit(guided(OWN, GUIDE, 6, 0.0))
    runner.release(OPEN)
    assert [s.result(timeout=10).token_ids for s in first] == [reference(f"Guest {i} enters.", 6) for i in range(2)]
    assert late.result(timeout=10).token_ids == reference(GUIDE, 6)
    assert max(runner.decode_batches()) <= 3


def test_cancel_takes_both_rows_out(make):
    scheduler, runner = make(slots=6, max_batch=4, gated=True)
    stream = scheduler.submit(guided(OWN, GUIDE, 200, 2.0))
    runner.release(OPEN)
    next(iter(stream))  # the first delta: the pair is decoding
    stream.cancel()
    assert stream.result(timeout=10).reason == "cancelled"
    after = scheduler.submit(greedy("Next!", 5)).result(timeout=10)
    assert after.token_ids == reference("Next!", 5)
    assert runner.decode_batches()[-1] == 1  # the guide row left with its request


def test_a_sessions_next_guided_turn_reuses_both_rows_kv(make):
    scheduler, runner = make(slots=6, max_batch=4)
    first = scheduler.submit(guided(OWN, GUIDE, 6, 0.0, key="s1")).result(timeout=10)
    reply = "".join(chr(t) for t in first.token_ids)
    runner.calls.clear()
    own2, guide2 = OWN + reply + " Again.", GUIDE + reply + " Again."
    second = scheduler.submit(guided(own2, guide2, 6, 0.0, key="s1")).result(timeout=10)
    assert second.token_ids == reference(guide2, 6)
    starts = sorted(start for kind, _, start, _ in (c for c in runner.calls if c[0] == "prefill"))
    # each row computes only what follows its cached turn (the last reply token was never fed back)
    assert starts == [len(GUIDE) + len(reply) - 1, len(OWN) + len(reply) - 1]
    assert second.cached_tokens == len(OWN) + len(reply) - 1


def test_guidance_one_or_no_guide_prompt_is_a_plain_request(make):
    scheduler, runner = make(slots=6, max_batch=4)
    for request in (guided(OWN, GUIDE, 8, 1.0), guided(OWN, None, 8, 3.0)):
        assert scheduler.submit(request).result(timeout=10).token_ids == reference(OWN, 8)
    assert set(runner.decode_batches()) == {1}


def test_guidance_needs_room_for_two_rows_and_a_sane_strength():
    scheduler, _ = make_scheduler(slots=2, max_batch=1)
    try:
        with pytest.raises(ValueError, match="guidance needs a batch of at least 2"):
            scheduler.submit(guided(OWN, GUIDE, 4, 2.0))
        with pytest.raises(ValueError, match=r"guidance = 9.0 is outside 0..8"):
            scheduler.submit(guided(OWN, GUIDE, 4, 9.0))
    finally:
        scheduler.close()


def test_a_guide_row_claimed_in_the_next_decode_row_follows_its_move(make):
    # Park session s1 in slot 1 and leave slot 0 empty; s1's guided turn then finds its own
    # slot (1) and its guide row the empty slot 0, which the request's move into row 0 displaces.
    scheduler, runner = make(slots=6, max_batch=4, gated=True)
    long, short = scheduler.submit(greedy("Hello there.", 12)), scheduler.submit(greedy(OWN, 4, key="s1"))
    runner.release(OPEN)
    assert short.result(timeout=10).token_ids == reference(OWN, 4) and long.result(timeout=10).token_ids == reference("Hello there.", 12)
    reply = "".join(chr(t) for t in reference(OWN, 4))
    own2, guide2 = OWN + reply + " More?", GUIDE + reply + " More?"
    for guidance, follows in ((0.0, guide2), (2.0, own2)):
        assert scheduler.submit(guided(own2, guide2, 8, guidance, key="s1")).result(timeout=10).token_ids == reference(follows, 8)
