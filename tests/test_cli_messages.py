"""What a new user of the portcullis command saw go wrong, and what it says now.

Each test is one report: ``--limit 0`` showed one row; ``quarantine list``
stopped at 50 items without a word; ``bayes dump -`` wrote a file named
"-"; ``bayes dump FILE`` overwrote FILE; ``bayes token '#zz'`` said "not in
the store" instead of that #zz is no hash; and several arguments had no
help at all. The CLI runs as a real subprocess, as in tests/test_cli.py.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os

import pytest

from core import cli
from core.models import QuarantineItem
from core.spool import Spool
from tests.test_cli import REPO, _messages, conf, ready, run  # noqa: F401
from tests.test_web import seed


@pytest.mark.parametrize("command", [("track",), ("quarantine", "list")])
@pytest.mark.parametrize("limit", ["0", "-1", "ten"])
def test_limit_below_one_is_refused(conf, command, limit):
    result = run(*command, "--limit", limit, conf=conf)
    assert result.returncode == 2
    assert f"argument --limit: '{limit}' is not a whole number 1 or more" \
        in result.stderr
    assert "Traceback" not in result.stderr


def test_quarantine_list_says_how_many_it_left_off(conf, ready):
    spool = Spool(ready.data_dir)
    for number in range(3):
        seed(spool, verdict="spam", quarantine="spam", subject=f"held {number}")
    assert QuarantineItem.select().count() == 3

    capped = run("quarantine", "list", "--limit", "2", conf=conf)
    assert capped.returncode == 0, capped.stderr
    assert capped.stdout.splitlines()[-1] == "(2 of 3 shown; --limit N for more)"

    whole = run("quarantine", "list", conf=conf)
    assert "held 0" in whole.stdout and "shown" not in whole.stdout

    # JSON keeps its shape: the total was always in it.
    data = json.loads(run("quarantine", "list", "--limit", "2", "--json",
                          conf=conf).stdout)
    assert data["total"] == 3 and len(data["items"]) == 2


def test_bayes_dump_and_restore_refuse_a_dash(conf, ready):
    dumped = run("bayes", "dump", "-", conf=conf)
    assert dumped.returncode == 2
    assert "not standard output" in dumped.stderr and "./-" in dumped.stderr
    assert not os.path.lexists(os.path.join(REPO, "-"))

    restored = run("bayes", "restore", "-", conf=conf)
    assert restored.returncode == 2
    assert "not standard input" in restored.stderr


def test_bayes_dump_keeps_an_existing_file_unless_forced(conf, ready, tmp_path):
    target = tmp_path / "bayes.dump"
    target.write_text("an older dump worth keeping")

    refused = run("bayes", "dump", str(target), conf=conf)
    assert refused.returncode == 2
    assert f"{target} already exists" in refused.stderr
    assert "--force" in refused.stderr
    assert target.read_text() == "an older dump worth keeping"

    forced = run("bayes", "dump", str(target), "--force", conf=conf)
    assert forced.returncode == 0, forced.stderr
    with gzip.open(target, "rt") as handle:
        assert handle.readline().strip()

    # A link to nowhere would be replaced by the dump: it counts as there.
    link = tmp_path / "link.dump"
    link.symlink_to(tmp_path / "nowhere")
    assert run("bayes", "dump", str(link), conf=conf).returncode == 2
    assert link.is_symlink()


@pytest.mark.parametrize("name", ["#zz", "#0123", "#0123456789abcdefg"])
def test_bayes_token_says_a_hash_name_is_malformed(conf, ready, tmp_path, name):
    ham = _messages(tmp_path / "ham", "meeting agenda minutes project", 2)
    spam = _messages(tmp_path / "spam", "cheap pills casino winner", 2)
    trained = run("bayes", "train", "--ham", str(ham), "--spam", str(spam),
                  "--quiet", conf=conf)
    assert trained.returncode == 0, trained.stderr

    result = run("bayes", "token", "meeting", name, conf=conf)
    assert result.returncode == 2
    assert f"'{name}' is not a token hash" in result.stderr
    assert "16 hex digits" in result.stderr
    assert "not in the store" not in result.stdout

    whole = run("bayes", "token", "#0123456789ABCDEF", conf=conf)
    assert whole.returncode == 0, whole.stderr
    assert "not in the store" in whole.stdout


def _commands(parser, path=()):
    """(command words, parser) for the parser and every subcommand below it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _commands(child, path + (name,))


def test_every_argument_has_help():
    missing = []
    for path, parser in _commands(cli.build_parser()):
        # core/policy/commands.py builds its own part of the parser.
        if path[:1] == ("policy",):
            continue
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            if not action.help:
                missing.append(" ".join(path + (action.dest,)))
    assert missing == []


@pytest.mark.parametrize("command, words", [
    (("bayes", "dump"), ["gzip", "--force", "'-' is refused"]),
    (("bayes", "restore"), ["Replace the whole token store", "'-' is refused"]),
    (("bayes", "train"), ["Maildir", "mbox"]),
    (("bayes", "stats"), ["--json      print JSON"]),
    (("quarantine", "list"), ["only items held for this reason", "default: held",
                              "1 or more"]),
    (("config",), ["PORTCULLIS_* variables", "every key"]),
])
def test_help_says_what_each_argument_is(command, words):
    result = run(*command, "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for word in words:
        assert " ".join(word.split()) in text, word
