"""The `steernpc` CLI takes other packages' subcommands from the `steernpc.commands` entry
point group (the training toolkit's data, train, annotate, eval) and says what to install
when they are missing."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from steernpc import cli


def test_installed_training_commands_come_from_the_entry_point():
    names = {ep.value for ep in cli.entry_points(group=cli.COMMANDS_GROUP)}
    assert "steernpc_train.cli:register" in names, "pip install -e . to register the entry point"
    sub = cli.build_parser()._subparsers._group_actions[0]
    assert set(cli.TRAINING_COMMANDS) <= set(sub.choices) and "compile" in sub.choices


def test_missing_training_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setattr(cli, "entry_points", lambda group: [])
    assert cli.main(["train", "sft", "--out", "x"]) == 2
    assert "needs the training toolkit" in capsys.readouterr().err
    assert cli.main(["eval", "--help"]) == 2
    assert "pip install 'steernpc[train]'" in capsys.readouterr().err


def test_unimportable_entry_point_counts_as_missing(monkeypatch, capsys):
    broken = EntryPoint(name="training", value="no_such_module_xyz:register", group=cli.COMMANDS_GROUP)
    monkeypatch.setattr(cli, "entry_points", lambda group: [broken])
    assert cli.main(["data", "stats", "f.jsonl"]) == 2
    assert "needs the training toolkit" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["no-such-command"])
