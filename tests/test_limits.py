"""The validation layer without a server: the documented limits, the checks that name
the field, echoed values cut short, and the README table kept equal to the code."""

from __future__ import annotations

import re

import pytest
from harness import REPO

from steernpc.attributes import InvalidAttribute
from steernpc.limits import LIMITS, MAX_ID, MAX_TEXT, LimitError, echo
from steernpc.persona import load_persona
from steernpc.prompt import Exchange
from steernpc.sessions import Session
from steernpc.validation import check_request, check_session
from steernpc.wire import pb


def test_the_readme_limits_table_is_the_code_s():
    text = (REPO / "README.md").read_text()
    table = text[text.index("| field | limit |"):].split("\n\n")[0]
    rows = dict(re.findall(r"^\| (.+?) \| ([\d,]+ \w+) \|$", table, re.M))
    assert rows == {field: f"{limit:,} {unit}" for field, (limit, unit) in LIMITS.items()}


def test_echo_cuts_long_values():
    assert echo("brom") == "'brom'"
    assert echo("A" * 1_000_000) == f"'{'A' * 40}'… (1000000 characters)"


@pytest.mark.parametrize(
    "message, expected",
    [
        (pb.SayRequest(session_id="s", text="x" * (MAX_TEXT + 1)), f"text is too long: {MAX_TEXT + 1} characters (at most {MAX_TEXT} characters)"),
        (pb.GetSessionRequest(session_id="s" * (MAX_ID + 1)), f"session_id is too long: {MAX_ID + 1} characters"),
        (pb.CreateSessionRequest(character_id="brom", context={"": "v"}), "context has an empty key"),
        (pb.SteerRequest(session_id="s", attributes={"x" * 100: 1}), "attributes names an attribute 'xxxx"),
        (pb.ConverseRequest(cancel=pb.CancelRequest(interaction_id="i" * 200)), "interaction_id is too long: 200 characters"),
    ],
)
def test_check_request_names_the_field(message, expected):
    with pytest.raises(LimitError) as refused:
        check_request(message)
    assert expected in str(refused.value)


def test_check_request_passes_what_is_within_the_limits():
    check_request(pb.CreateSessionRequest(character_id="brom", session_id="s" * MAX_ID, context={"k": "v"}, attributes={"humor": 9}))
    check_request(pb.ConverseRequest())


def test_check_session_wants_every_turn_labelled_in_the_schema():
    brom = load_persona(REPO / "samples" / "personas" / "brom.yaml")
    full = brom.resolve()
    session = Session.new("brom", "s", mood="angry")
    session.history = [Exchange("hi", "ho", full)]
    assert check_session(session, brom) == brom.resolve(mood="angry")
    session.history.append(Exchange("hi", "ho", {"humor": 1}))
    with pytest.raises(InvalidAttribute, match=r"history\[1\]\.labels is missing friendliness"):
        check_session(session, brom)
