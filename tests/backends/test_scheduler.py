"""The scheduler (steernpc.generation.scheduler) over a fake model runner: admission, the
batch, cancel, the queue bound, end of reply, failures. No model: each test takes
milliseconds. (Slot choice and prefix reuse: test_kv_slots.py; the same guarantees over
the real torch and onnx runners: test_slot_engines.py.)"""

from __future__ import annotations

import pytest
from fake_runner import END, END_ID, greedy, letter_after, make_scheduler, reference

from steernpc.generation import Delta, GenerationRequest, QueueFull, SamplingParams

OPEN = 10**6  # release every step


@pytest.fixture
def make():
    """make(**options) -> (scheduler, runner); every scheduler is closed after the test."""
    made = []

    def build(**options):
        scheduler, runner = make_scheduler(**options)
        made.append(scheduler)
        return scheduler, runner

    yield build
    for scheduler in made:
        scheduler.close()


PROMPTS = ["Hello there.", "Can you fix my sword? It broke on a troll.", "Once upon a time", "Hi"]


def test_a_batch_decodes_together_and_matches_the_reference(make):
    scheduler, runner = make(slots=6, max_batch=4, gated=True)
    streams = [scheduler.submit(greedy(p, 10)) for p in PROMPTS]  # the engine holds the first prefill
    runner.release(OPEN)
    for prompt, stream in zip(PROMPTS, streams):
        result = stream.result(timeout=10)
        assert result.reason == "length"
        assert result.token_ids == reference(prompt, 10)
        assert result.prompt_tokens == len(prompt) and result.completion_tokens == 10
    assert max(runner.decode_batches()) == 4


def test_the_batch_never_exceeds_max_batch(make):
    scheduler, runner = make(slots=4, max_batch=2, gated=True)
    prompts = [f"Visitor number {i} walks in." for i in range(5)]
    streams = [scheduler.submit(greedy(p, 8)) for p in prompts]
    runner.release(OPEN)
    assert [s.result(timeout=10).token_ids for s in streams] == [reference(p, 8) for p in prompts]
    assert max(runner.decode_batches()) == 2


def test_one_slot_stays_free_for_the_prefill(make):
    scheduler, _ = make(slots=3, max_batch=8)
    assert scheduler.max_batch == 2


def test_prefill_runs_in_chunks(make):
    scheduler, runner = make(prefill_chunk=8)
    prompt = "A long prompt of more than three chunks."
    assert scheduler.submit(greedy(prompt, 4)).result(timeout=10).token_ids == reference(prompt, 4)
    prefills = [c for c in runner.calls if c[0] == "prefill"]
    assert [(start, n) for _, _, start, n in prefills] == [(i, min(8, len(prompt) - i)) for i in range(0, len(prompt), 8)]


def test_a_full_queue_answers_queue_full(make):
    scheduler, runner = make(slots=3, max_batch=1, max_queue=2, gated=True)
    streams = []
    with pytest.raises(QueueFull, match="queue is full"):
        for _ in range(10):
            streams.append(scheduler.submit(greedy("Wait in line", 300)))
    assert 2 <= len(streams) <= 3  # the engine may already hold the first one
    runner.wait_entered(1)  # it does now (its prefill waits)
    assert scheduler.stats()["queue_depth"] == len(streams)
    for stream in streams:
        stream.cancel()
    runner.release(OPEN)
    assert [s.result(timeout=10).reason for s in streams] == ["cancelled"] * len(streams)


def test_prompts_the_cache_cannot_hold_are_refused(make):
    scheduler, _ = make(max_len=64)
    with pytest.raises(ValueError, match="at most 63"):
        scheduler.submit(greedy("x" * 63, 4))
    with pytest.raises(ValueError, match="empty prompt"):
        scheduler.submit(greedy("", 4))
    with pytest.raises(ValueError, match="temperature"):
        scheduler.submit(GenerationRequest("Hi", SamplingParams(temperature=9.0)))
    assert scheduler.submit(greedy("x" * 62, 1)).result(timeout=10).reason == "length"


def test_cancel_mid_stream_leaves_the_rest_of_the_batch_intact(make):
    scheduler, runner = make(slots=4, max_batch=3, gated=True)
    long = scheduler.submit(greedy("Count to a thousand.", 200))
    short = scheduler.submit(greedy("Say something short.", 30))
    runner.release(5)
    runner.wait_entered(6)  # five steps done; the sixth waits
    long.cancel()
    runner.release(OPEN)
    cancelled = long.result(timeout=10)
    assert cancelled.reason == "cancelled"
    assert 1 <= cancelled.completion_tokens <= 6
    assert cancelled.token_ids == reference("Count to a thousand.", cancelled.completion_tokens)
    # the cancelled request held row 0: the short one moved there and went on unharmed
    assert short.result(timeout=10).token_ids == reference("Say something short.", 30)
    assert any(c[0] == "swap" for c in runner.calls)


def test_cancel_while_queued(make):
    scheduler, runner = make(slots=3, max_batch=1, gated=True)
    first = scheduler.submit(greedy("First in line", 6))
    runner.wait_entered(1)
    waiting = scheduler.submit(greedy("Second in line", 6))
    waiting.cancel()
    runner.release(OPEN)
    result = waiting.result(timeout=10)
    assert (result.reason, result.completion_tokens, result.prompt_tokens) == ("cancelled", 0, len("Second in line"))
    assert first.result(timeout=10).token_ids == reference("First in line", 6)
    assert not any(c[0] == "prefill" and c[3] == len("Second in line") for c in runner.calls)


def test_cancel_during_the_prefill_keeps_what_was_prefilled(make):
    """A cancelled prompt's computed chunks stay in its slot for the session's next turn."""
    scheduler, runner = make(prefill_chunk=4, gated=True)
    prompt = "0123456789abcdefghij"
    stream = scheduler.submit(greedy(prompt, 5, key="s"))
    runner.release(2)
    runner.wait_entered(3)  # two chunks done, the third waits
    stream.cancel()
    runner.release(OPEN)
    result = stream.result(timeout=10)
    assert (result.reason, result.completion_tokens) == ("cancelled", 0)
    again = scheduler.submit(greedy(prompt + "!", 5, key="s")).result(timeout=10)
    assert again.cached_tokens == 12
    assert again.token_ids == reference(prompt + "!", 5)


def test_cancel_stops_the_stream_at_the_next_step(make):
    scheduler, runner = make(gated=True)
    stream = scheduler.submit(greedy("Go on forever.", 400, ignore_eos=True))
    runner.release(3)
    events = iter(stream)
    assert isinstance(next(events), Delta)
    stream.cancel()
    runner.release(OPEN)
    assert stream.result(timeout=10).reason == "cancelled"
    assert len([e for e in events if isinstance(e, Delta)]) <= 3


def test_a_sessions_next_turn_waits_for_its_previous_turn(make):
    scheduler, runner = make(slots=4, max_batch=3, gated=True)
    first = scheduler.submit(greedy("Good morning", 6, key="s"))
    second = scheduler.submit(greedy("Good morning, smith", 6, key="s"))
    runner.release(OPEN)
    assert first.result(timeout=10).token_ids == reference("Good morning", 6)
    result = second.result(timeout=10)
    assert result.token_ids == reference("Good morning, smith", 6)
    assert result.cached_tokens >= len("Good morning")
    assert max(runner.decode_batches()) == 1


def test_end_of_sequence_ends_the_reply_unless_ignored(make):
    prompt = "Stop soon."
    eos = 200

    def three_then_eos(seq):
        return eos if len(seq) >= len(prompt) + 3 else letter_after(seq)

    scheduler, _ = make(next_token=three_then_eos, eos_ids={eos})
    stopped = scheduler.submit(greedy(prompt, 10)).result(timeout=10)
    assert (stopped.reason, stopped.completion_tokens) == ("stop", 4)  # the end token counts, is not returned
    assert stopped.token_ids == reference(prompt, 3, three_then_eos)
    ignored = scheduler.submit(greedy(prompt, 10, ignore_eos=True)).result(timeout=10)
    assert (ignored.reason, ignored.completion_tokens) == ("length", 10)
    assert ignored.token_ids == reference(prompt, 10, three_then_eos)


def test_callers_may_replace_the_end_ids(make):
    prompt = "Stop soon."
    first = reference(prompt, 1)[0]
    scheduler, _ = make(eos_ids={first})
    assert scheduler.submit(greedy(prompt, 5)).result(timeout=10).reason == "stop"
    scheduler.eos_ids = set()
    assert scheduler.submit(greedy(prompt, 5)).result(timeout=10).reason == "length"


def test_a_stop_string_that_is_a_special_token_stops_on_its_id(make):
    def end_after_two(seq):
        return END_ID if seq[-2:] == [ord("!"), ord("!")] else ord("!")

    scheduler, _ = make(next_token=end_after_two)
    request = GenerationRequest("Yell", SamplingParams(max_new_tokens=20, temperature=0.0), stop=[END])
    final = scheduler.submit(request).result(timeout=10)
    assert (final.reason, final.text, final.token_ids) == ("stop", "!!", [ord("!")] * 2)


def test_the_text_streams_as_deltas(make):
    scheduler, _ = make()
    events = list(scheduler.submit(greedy("Tell me.", 12)))
    final = events[-1]
    assert "".join(e.text for e in events[:-1]) == final.text == "".join(map(chr, reference("Tell me.", 12))).strip()
    assert 0 <= final.ttft_ms <= final.total_ms


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_runner_failure_fails_every_waiter(make):
    scheduler, runner = make(gated=True)
    streams = [scheduler.submit(greedy(p, 20)) for p in PROMPTS[:3]]
    runner.fail = RuntimeError("out of memory")
    runner.release(OPEN)
    for stream in streams:
        final = stream.result(timeout=10)
        assert final.reason == "error" and "out of memory" in final.error
    with pytest.raises(RuntimeError, match="generation engine failed: out of memory"):
        scheduler.submit(greedy("Anyone there?", 4))


def test_close_cancels_what_waits_and_refuses_more(make):
    scheduler, runner = make(gated=True)
    streams = [scheduler.submit(greedy(p, 20)) for p in PROMPTS[:2]]
    runner.wait_entered(1)
    runner.release(OPEN)
    scheduler.close()
    assert all(s.result(timeout=10).reason in ("cancelled", "length") for s in streams)
    with pytest.raises(RuntimeError, match="closed"):
        scheduler.submit(greedy("Late", 4))


def test_stats_count_the_queue_the_batch_and_the_sessions(make):
    scheduler, runner = make(slots=4, max_batch=2, gated=True)
    streams = [scheduler.submit(greedy(f"Visitor {i}", 50, key=f"s{i}")) for i in range(4)]
    runner.release(3)  # two prefills and a decode of both
    runner.wait_entered(4)
    assert scheduler.stats() == {"queue_depth": 2, "running": 2, "parked_sessions": 2}
    runner.release(OPEN)
    for stream in streams:
        stream.result(timeout=10)
    assert scheduler.stats() == {"queue_depth": 0, "running": 0, "parked_sessions": 4}
