"""The structured tail in the shared scheduler (torch here; onnx shares the scheduler and
the sampler): the reply streams, the tail does not, the tail is decoded under the
persona's grammar, and a model pushed hard towards an undeclared action or emotion still
writes only declared ones."""

from __future__ import annotations

import numpy as np
import pytest

from steernpc.actions import parse_tail
from steernpc.conversation import Conversation
from steernpc.generation.base import Delta, Finished, GenerationRequest, SamplingParams, TailRequest
from steernpc.actions import tail_grammar
from steernpc.persona import load_persona
from steernpc.prompt import NEMO_TAIL, CHAT_TAIL, tail_marker
from steernpc.sessions import Session

pytest.importorskip("llguidance")

GUARD = """\
id: gate_guard
name: Bram
role: a guard at the north gate
attributes: {humor: 1, friendliness: 1, creativity: 1, verbosity: 1}
moods:
  hostile: {friendliness: 0}
emotions: [neutral, angry, afraid]
actions:
  - name: call_guards
  - name: give_item
    args:
      item: [sword, potion, map]
  - name: pay
    args:
      amount: {min: 1, max: 50}
  - name: give_quest
    args:
      quest: {max_length: 12}
"""


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    from steernpc.generation.torch_backend import TorchBackend

    be = TorchBackend(tiny_model_dir, device="cpu", slots=6, max_batch=4, max_len=512)
    yield be
    be.close()


@pytest.fixture(scope="module")
def guard(tmp_path_factory):
    path = tmp_path_factory.mktemp("p") / "guard.yaml"
    path.write_text(GUARD)
    return load_persona(path)


def run(stream) -> tuple[list[str], Finished]:
    deltas, final = [], None
    for event in stream:
        if isinstance(event, Delta):
            deltas.append(event.text)
        else:
            final = event
    return deltas, final


def say(backend, persona, fmt="nemo", tails=True, tail=True, **options):
    conv = Conversation(backend, fmt, tails=tails)
    turn = conv.begin(persona, Session("s-" + fmt, persona.id), "Halt! Who goes there?",
                      options={"max_new_tokens": 6, "temperature": 0.8, "seed": 3, **options}, tail=tail)
    return turn, run(conv.submit(turn))


@pytest.mark.parametrize("fmt", ["nemo", "verbal", "chat"])
def test_reply_then_tail_under_the_grammar(backend, guard, fmt):
    turn, (deltas, final) = say(backend, guard, fmt)
    assert turn.request.tail is not None and turn.request.tail.marker == tail_marker(fmt)
    assert final.reason in ("stop", "length") and final.tail_error is None, final.tail_error
    assert final.tail is not None and final.tail.emotion in guard.emotions
    assert final.tail == parse_tail(final.tail_text, guard.tail_spec)
    if final.tail.action is not None:
        assert guard.tail_spec.action(final.tail.action.name) is not None
    # the tail is never reply text: the deltas make the reply, and neither holds the marker
    assert "".join(deltas) == final.text
    for marker in (NEMO_TAIL, CHAT_TAIL, final.tail_text):
        assert marker not in final.text
    assert final.tail_tokens >= 2  # an emotion and the newline at least


def test_tail_off_per_request_and_without_a_tail_model(backend, guard):
    turn, (_, final) = say(backend, guard, tail=False)
    assert turn.request.tail is None and final.tail is None and final.tail_text == ""
    plain, (_, final) = say(backend, guard, tails=False)
    assert plain.request.tail is None and final.tail is None
    # a model without tails gets today's prompt and stop strings
    assert "Emotions:" not in plain.request.prompt and plain.request.stop == ["<extra_id_1>"]
    assert "Emotions: neutral, angry, afraid." in turn.request.prompt


class Biased:
    """Wraps a runner so every forward pass's logits push hard towards `token_ids`."""

    def __init__(self, runner, token_ids, bias=80.0):
        self.runner, self.ids, self.bias = runner, sorted(set(token_ids)), bias

    def _push(self, logits):
        logits = np.array(logits, dtype=np.float32)
        logits[..., self.ids] += self.bias
        return logits

    def prefill(self, *a):
        return self._push(self.runner.prefill(*a))

    def prefill_many(self, parts):
        return [self._push(x) for x in self.runner.prefill_many(parts)]

    def decode(self, *a):
        return self._push(self.runner.decode(*a))

    def __getattr__(self, name):
        return getattr(self.runner, name)


def test_grammar_prevents_an_undeclared_action_the_model_is_pushed_towards(backend, guard):
    tok = backend.tokenizer
    pushed = set()
    for text in ("attack", " attack", "attack(", " attack(", "happy", " happy", "Attack"):
        pushed.update(tok(text, add_special_tokens=False)["input_ids"][:1])
    scheduler = backend.scheduler
    real = scheduler.runner
    scheduler.runner = Biased(real, pushed)
    try:
        # without the grammar the pushed model writes the undeclared words ...
        free = backend.submit(GenerationRequest("Halt!", SamplingParams(max_new_tokens=6, temperature=0.0)))
        assert any(w in free.result(60).text for w in ("attack", "happy", "Attack")), free.result().text
        # ... with it, every tail names only declared emotions and actions
        for seed in range(6):
            _, (_, final) = say(backend, guard, temperature=1.0, seed=seed)
            assert final.tail_error is None, final.tail_error
            assert final.tail.emotion in ("neutral", "angry", "afraid")
            # (a free-string argument may quote the word; no action or emotion is it)
            assert " attack(" not in final.tail_text and not final.tail_text.startswith(("happy", "attack"))
            if final.tail.action is not None:
                assert final.tail.action.name in ("call_guards", "give_item", "pay", "give_quest")
    finally:
        scheduler.runner = real


def test_guided_request_with_a_tail(backend, guard):
    """Guidance runs a request as two rows; the marker goes into both and each tail token
    comes from the combined logits under the grammar."""
    session = Session("s-guided", guard.id, mood="hostile")
    conv = Conversation(backend, "nemo", tails=True)
    turn = conv.begin(guard, session, "Halt!", options={"max_new_tokens": 5, "guidance": 2.0, "seed": 1, "temperature": 0.5})
    assert turn.request.guided and turn.request.tail is not None
    _, final = run(conv.submit(turn))
    assert final.tail_error is None and final.tail.emotion in guard.emotions


def test_batch_of_tailed_and_plain_requests(backend, guard):
    spec = guard.tail_spec
    tailed = [GenerationRequest(f"Line {i}", SamplingParams(max_new_tokens=3 + i, temperature=0.7, seed=i), ["<extra_id_3>"],
                                tail=TailRequest(tail_marker("nemo"), tail_grammar(spec), spec)) for i in range(3)]
    plain = [GenerationRequest(f"Plain {i}", SamplingParams(max_new_tokens=4, temperature=0.0)) for i in range(2)]
    results = backend.generate(tailed + plain)
    for r in results[:3]:
        assert r.tail is not None and r.tail_error is None
    for r in results[3:]:
        assert r.tail is None and r.completion_tokens == 4
