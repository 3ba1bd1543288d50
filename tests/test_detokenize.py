"""Streaming text assembly: deltas always concatenate to the final text, multi-byte
characters never split, and a stop string that arrives in pieces is never shown."""

import pytest

from steernpc import models
from steernpc.generation.detokenize import TextAssembler


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return models.load_tokenizer(tiny_model_dir)


def feed(tokenizer, text, stop=()):
    assembler = TextAssembler(tokenizer, stop)
    deltas = []
    for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
        deltas.append(assembler.add(token))
        if assembler.stopped:
            break
    deltas.append(assembler.finish())
    return assembler, deltas


def test_deltas_rebuild_the_text_with_multibyte_characters(tokenizer):
    text = "  Well met! The forge is hot 🔥 today — naïve travellers beware.\n"
    assembler, deltas = feed(tokenizer, text)
    assert "".join(deltas) == assembler.text == text.strip()
    assert not any("\ufffd" in d for d in deltas)


def test_stop_string_in_pieces_is_cut_and_never_shown(tokenizer):
    text = "Aye, I can fix it.\n<extra_id_1>User\nthanks"
    assembler, deltas = feed(tokenizer, text, stop=["<extra_id_1>"])
    assert assembler.stopped
    assert assembler.text == "Aye, I can fix it."
    assert "".join(deltas) == assembler.text
    assert all("<" not in d for d in deltas)


def test_partial_stop_prefix_is_released_when_it_is_not_a_stop(tokenizer):
    text = "I paid <extra coins> for it."
    assembler, deltas = feed(tokenizer, text, stop=["<extra_id_1>"])
    assert not assembler.stopped
    assert "".join(deltas) == assembler.text == text


@pytest.mark.parametrize("cut", ["<", "<extra", "<extra_", "<extra_id_"])
def test_reply_cut_inside_a_stop_marker_ends_before_it(tokenizer, cut):
    """The token limit can fall in the middle of the end-of-turn marker: the fragment never
    reaches the player, and the deltas still add up to the final text."""
    assembler, deltas = feed(tokenizer, f"Aye, the forge is hot.\n{cut}", stop=["<extra_id_1>"])
    assert not assembler.stopped
    assert assembler.text == "Aye, the forge is hot."
    assert "".join(deltas) == assembler.text
