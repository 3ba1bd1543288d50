"""SteerLM prompt formats: `nemo` byte-for-byte against literal strings, `chat` through the
tokenizer's own template, and label lines parsed back."""

import subprocess
import sys

import pytest

from steernpc.attributes import AttributeSchema, InvalidAttribute
from steernpc.prompt import (
    NEMO_SYSTEM,
    Exchange,
    build_prompt,
    chat_segments,
    nemo_segments,
    parse_labels,
    stop_strings,
)

NEMO = AttributeSchema.builtin("nemo")
NPC = AttributeSchema.builtin("npc")
LABELS = {"quality": 4, "toxicity": 0, "humor": 3, "creativity": 1, "helpfulness": 4,
          "correctness": 4, "coherence": 4, "complexity": 2, "verbosity": 1}  # fmt: skip
LINE = "quality:4,toxicity:0,humor:3,creativity:1,helpfulness:4,correctness:4,coherence:4,complexity:2,verbosity:1"


def test_nemo_single_turn_is_byte_exact():
    text = build_prompt("nemo", NEMO_SYSTEM, [], "What is the capital of France?", LABELS, NEMO)
    assert text == (
        "<extra_id_0>System\nA chat between a curious user and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the user's questions.\n"
        "<extra_id_1>User\nWhat is the capital of France?\n"
        "<extra_id_1>Assistant\n<extra_id_2>" + LINE + "\n"
    )


def test_nemo_multi_turn_is_byte_exact():
    earlier = dict(LABELS, humor=0)
    history = [Exchange("Hi", "Hello there.", earlier)]
    text = build_prompt("nemo", "SYS", history, "Tell me a joke", LABELS, NEMO)
    assert text == (
        "<extra_id_0>System\nSYS\n"
        "<extra_id_1>User\nHi\n<extra_id_1>Assistant\n<extra_id_2>"
        "quality:4,toxicity:0,humor:0,creativity:1,helpfulness:4,correctness:4,coherence:4,complexity:2,verbosity:1\n"
        "Hello there.\n"
        "<extra_id_1>User\nTell me a joke\n<extra_id_1>Assistant\n<extra_id_2>" + LINE + "\n"
    )


def test_nemo_training_segments_put_loss_on_replies_and_end_markers_only():
    pieces = nemo_segments("S", [Exchange("a", "b", LABELS), Exchange("c", "d", LABELS)], NEMO)
    trained = [text for text, trains in pieces if trains]
    assert trained == ["b\n<extra_id_1>", "d\n<extra_id_1>"]
    assert "".join(t for t, _ in pieces).endswith("d\n<extra_id_1>")


def test_verbal_is_the_nemo_template_with_level_words():
    vector = {"humor": 4, "friendliness": 0, "creativity": 2, "verbosity": 1}
    text = build_prompt("verbal", "SYS", [Exchange("Hi", "Hm.", dict(vector, humor=0))], "Joke?", vector, NPC)
    assert text == (
        "<extra_id_0>System\nSYS\n"
        "<extra_id_1>User\nHi\n<extra_id_1>Assistant\n<extra_id_2>"
        "humor:serious,friendliness:hostile,creativity:vivid,verbosity:short\nHm.\n"
        "<extra_id_1>User\nJoke?\n<extra_id_1>Assistant\n<extra_id_2>"
        "humor:hilarious,friendliness:hostile,creativity:vivid,verbosity:short\n"
    )
    assert text.replace("hilarious", "4").replace("serious", "0").replace("hostile", "0").replace("vivid", "2") \
        .replace("short", "1") == build_prompt("nemo", "SYS", [Exchange("Hi", "Hm.", dict(vector, humor=0))], "Joke?", vector, NPC)
    assert parse_labels("verbal", text, NPC) == vector
    assert stop_strings("verbal") == ["<extra_id_1>"]


def test_verbal_needs_a_schema_with_level_words():
    with pytest.raises(ValueError, match="the verbal format needs `levels:`"):
        build_prompt("verbal", "S", [], "hi", LABELS, NEMO)


def test_label_line_is_in_schema_order_whatever_the_dict_order():
    shuffled = dict(reversed(list(LABELS.items())))
    assert NEMO.encode(shuffled) == LINE


def test_nemo_stops_at_turn_marker():
    assert stop_strings("nemo") == ["<extra_id_1>"]


def test_parse_labels_round_trips_both_formats(smollm2_tokenizer):
    nemo = build_prompt("nemo", "S", [], "hi", LABELS, NEMO)
    assert parse_labels("nemo", nemo, NEMO) == LABELS
    vector = {"humor": 4, "friendliness": 0, "creativity": 2, "verbosity": 1}
    chat = build_prompt("chat", "You are Brom.", [], "hi", vector, NPC, smollm2_tokenizer)
    assert parse_labels("chat", chat, NPC) == vector


def test_chat_format_uses_the_tokenizer_template(smollm2_tokenizer):
    vector = {"humor": 4, "friendliness": 0, "creativity": 2, "verbosity": 1}
    history = [Exchange("Hello", "Hm.", vector)]
    text = build_prompt("chat", "You are Brom.", history, "Fix my sword?", vector, NPC, smollm2_tokenizer)
    assert text == (
        "<|im_start|>system\nYou are Brom.\nAttributes: humor:4,friendliness:0,creativity:2,verbosity:1<|im_end|>\n"
        "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHm.<|im_end|>\n"
        "<|im_start|>user\nFix my sword?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert stop_strings("chat", smollm2_tokenizer) == ["<|im_end|>"]


def test_chat_training_segments_train_the_last_reply_and_its_end_marker(smollm2_tokenizer):
    vector = {"humor": 1, "friendliness": 1, "creativity": 1, "verbosity": 1}
    pieces = chat_segments("S", [Exchange("a", "b", vector), Exchange("c", "d", vector)], NPC, smollm2_tokenizer)
    assert [t for t, trains in pieces if trains] == ["d<|im_end|>\n"]


def test_bad_label_line_names_the_attribute():
    with pytest.raises(InvalidAttribute, match="humor = 9 is outside 0..4"):
        NPC.decode("humor:9")
    with pytest.raises(InvalidAttribute, match="unknown attribute 'wit'"):
        NPC.decode("wit:2")


def test_render_cli_prints_the_nemo_template_byte_for_byte(tmp_path):
    from steernpc.conversation import system_text
    from steernpc.persona import load_persona

    persona_file = "samples/personas/brom.yaml"
    out = subprocess.run(
        [sys.executable, "-m", "steernpc.cli", "render", "--persona", persona_file, "--format", "nemo",
         "--say", "Can you fix my sword?", "--attr", "humor=4"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    persona = load_persona(persona_file)
    vector = persona.resolve(override={"humor": 4})
    expected = (
        f"<extra_id_0>System\n{system_text(persona)}\n<extra_id_1>User\nCan you fix my sword?\n"
        f"<extra_id_1>Assistant\n<extra_id_2>{NPC.encode(vector)}\n"
    )
    assert out.stdout == expected
    assert "humor:4," in out.stdout


def test_render_cli_defaults_to_the_served_format():
    """Without --format, render shows what `steernpc serve` would feed the default model:
    the sample adapter's format, or chat for the bare base."""
    import os

    from steernpc.runtime_defaults import default_adapter, model_format

    def render(**env):
        cmd = [sys.executable, "-m", "steernpc.cli", "render", "--persona", "samples/personas/brom.yaml", "--say", "Hi"]
        return subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, **env}).stdout

    opener = {"nemo": "<extra_id_0>System\n", "verbal": "<extra_id_0>System\n", "chat": "<|im_start|>system\n"}
    served = model_format(None, default_adapter(None))
    assert render().startswith(opener[served])
    if served == "verbal":  # the label line in level words, as the sample adapter was trained
        assert "<extra_id_2>humor:" in render() and "humor:0," not in render()
    assert render(STEERNPC_ADAPTER="none").startswith(opener["chat"])


def test_render_cli_rejects_a_bad_attribute_with_its_range():
    out = subprocess.run(
        [sys.executable, "-m", "steernpc.cli", "render", "--persona", "samples/personas/brom.yaml",
         "--format", "nemo", "--say", "hi", "--attr", "humor=7"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 2
    assert "humor = 7 is outside 0..4" in out.stderr
