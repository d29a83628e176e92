"""Per-token counts (``bayes token``) and the expiry of old rare tokens.

The store is trained from a few corpus messages in a temporary data_dir;
the CLI runs as a real subprocess against it, as ``portcullis`` would.
"""

from __future__ import annotations

import json
import logging

import pytest

from core import db
from core.message import ParsedMessage
from core.models import BayesToken
from core.pipeline import BayesExpiry, FilterWorker
from core.spam import (NGRAM_CLUE, SpamFilter, store, tokeninfo, tokenize_py,
                        training)
from core.spam import tokenspec as ts
from tests.support.filtering import bayes_cli, conf, settings  # noqa: F401
from tests.support.paths import CORPUS
from tests.support.system import need
from tests.test_bayes import message, parse

TODAY = store.today()


def run(conf, *args):
    return bayes_cli(conf, *args, timeout=60)


def corpus_messages(count: int) -> tuple[list, list]:
    need((CORPUS / "dev").is_dir(), "the dev corpus in ../shared/corpus")
    ham = sorted((CORPUS / "dev" / "ham").glob("easy_ham.*.eml"))[:count]
    spam = sorted((CORPUS / "dev" / "spam").glob("spam.*.eml"))[:count]
    return ham, spam


@pytest.fixture
def trained(settings):
    """A store learned from eight ham and eight spam corpus messages."""
    ham, spam = corpus_messages(8)
    training.train(ham, spam, progress=False, settings=settings, parse=parse)
    return [parse(training.strip_envelope(p.read_bytes())) for p in ham + spam]


def why_names(settings, parsed: list[ParsedMessage]):
    """{shown name: (hash, f)} of the Why lists of the given messages."""
    flt = SpamFilter(settings)
    hashes = {}
    for one in parsed:
        result = flt.check(one)
        known = {name: token for token, name in flt._names.items()}
        for name, f in result.tokens:
            if name != NGRAM_CLUE:  # the 4-gram voice is no stored token
                hashes[name] = (known[name], f)
    return hashes


def test_token_finds_why_list_names_with_the_stored_counts(settings, trained,
                                                           conf):
    names = why_names(settings, trained)
    word = next(n for n in names if ":" not in n and " ~" not in n)
    header = next(n for n in names if n.startswith("rcvd:") and " ~" not in n)
    pair = next(n for n in names if " ~" in n)

    result = run(conf, "token", "--json", word, header, pair, "zzunknownzz")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    values = store.meta()
    assert shown["ham_messages"] == values["nham"] == 8
    assert shown["spam_messages"] == values["nspam"] == 8
    by_name = {t["name"]: t for t in shown["tokens"]}
    for name in (word, header, pair):
        token, f = names[name]
        [match] = by_name[name]["matches"]
        row = BayesToken.get(BayesToken.token == token)
        assert match["hash"] == f"{token & ts.MASK64:016x}"
        assert (match["ham"], match["spam"]) == (row.ham, row.spam)
        # The f the filter weighed, computed again from the counts alone.
        assert match["f"] == f
        assert match["weight"] == round(row.weight, 6)
        assert match["last_seen_day"] == row.last_seen == TODAY
        assert match["kind"] == ("pair" if name == pair else "token")
    assert by_name["zzunknownzz"] == {"name": "zzunknownzz", "found": False,
                                      "matches": []}

    text = run(conf, "token", word, "zzunknownzz")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == "Store: 8 ham and 8 spam messages learned."
    # The header says why most weights are 0 (two lines).
    assert "most tokens have weight 0" in lines[2]
    row = BayesToken.get(BayesToken.token == names[word][0])
    assert lines[3] == word
    assert lines[4].startswith(f"  ham {row.ham}  spam {row.spam}  f ")
    assert lines[5:] == ["zzunknownzz", "  not in the store"]


def test_token_reads_pairs_with_a_prefix_and_hash_names(settings):
    for i in range(3):
        training.learn(message(f"cheap pills {i}", "buy now"), True, settings)
        training.learn(message(f"team meeting {i}", "agenda"), False, settings)
    [info, hashed, empty] = tokeninfo.lookup(
        ["subject:cheap ~1 pills", "#0000000000000001", "subject:"])
    [match] = info.matches
    assert (match.kind, match.prefix, match.ham, match.spam) == \
        ("pair", "subject:", 0, 3)
    assert match.f == pytest.approx((0.45 * 0.5 + 3 * 1.0) / 3.45)
    assert hashed.matches == [] and empty.matches == []

    # The hex form of a token that had no name reads the same row.
    [again] = tokeninfo.lookup([f"#{match.token & ts.MASK64:016x}"])
    [same] = again.matches
    assert same.kind == "hash"
    assert (same.token, same.ham, same.spam, same.f) == \
        (match.token, match.ham, match.spam, match.f)


def test_every_name_the_tokenizer_gives_maps_back_to_its_hash():
    segments = [(b"subject:", b"Re: ab:cd efg http://www.example.com/x", ts.WORDS),
                (b"", b"please click here now", ts.WORDS),
                (b"rcvd:host:", b"mail.example.net", ts.LITERAL)]
    hashes = tokenize_py.hash_segments(segments)
    _, names = tokenize_py.hash_segments(segments, wanted=set(hashes))
    assert len(names) == len(set(hashes)) > 10
    for token, name in names.items():
        assert token in {t for *_, t in tokeninfo.candidates(name)}, name
    assert "subject:ab:cd ~1 efg" in names.values()


def test_token_says_so_when_the_store_is_empty(settings, conf):
    result = run(conf, "token", "free")
    assert result.returncode == 2
    assert "the Bayes store is empty" in result.stderr
    assert "portcullis bayes train" in result.stderr


def _rare_and_frequent():
    rare = BayesToken.select().where((BayesToken.ham + BayesToken.spam) == 1).first()
    frequent = BayesToken.select().where(
        (BayesToken.ham + BayesToken.spam) > 4).first()
    return rare.token, frequent.token


def test_expire_deletes_an_old_rare_token_and_keeps_a_frequent_one(
        settings, trained, conf):
    rare, frequent = _rare_and_frequent()
    recent = BayesToken.select().where(
        ((BayesToken.ham + BayesToken.spam) == 1)
        & (BayesToken.token != rare)).first().token
    BayesToken.update(last_seen=TODAY - 200).where(
        BayesToken.token.in_([rare, frequent])).execute()
    before = store.stats()["tokens"]

    result = run(conf, "expire")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("Expired 1 tokens unseen for 180 days and "
                                     "learned at most twice.")
    assert store.stats()["tokens"] == before - 1
    assert store.counts(rare) == (0, 0)
    assert store.counts(frequent) != (0, 0) and store.counts(recent) != (0, 0)
    assert "not in the store" in run(conf, "token", f"#{rare & ts.MASK64:016x}"
                                     ).stdout

    # --days overrides the setting; 0 in the settings turns expiry off.
    assert "Expired 0 tokens unseen for 300 days" in run(
        conf, "expire", "--days", "300").stdout
    conf.write_text(conf.read_text() + "bayes_expire_days = 0\n")
    assert "Expiry is off" in run(conf, "expire").stdout
    bad = run(conf, "expire", "--days", "-3")
    assert bad.returncode == 2 and "1 or more" in bad.stderr


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_scheduled_expiry_runs_after_start_then_daily(settings, trained, caplog):
    rare, frequent = _rare_and_frequent()
    BayesToken.update(last_seen=TODAY - 200).where(
        BayesToken.token.in_([rare, frequent])).execute()
    flt = SpamFilter(settings)
    flt.check(trained[0])
    assert flt.scorer.table.get(rare) != (0, 0)

    clock = Clock()
    schedule = BayesExpiry(settings, first=300, every=86400, retry=3600, clock=clock)
    clock.now += 299
    assert schedule.tick() is None and store.counts(rare) != (0, 0)
    clock.now += 1
    with caplog.at_level(logging.INFO, logger="core.spam.store"):
        assert schedule.tick() == 1
    assert any("event=bayes_expire tokens=1" in r.getMessage() for r in caplog.records)
    assert schedule.due == clock.now + 86400
    assert store.counts(rare) == (0, 0) and store.counts(frequent) != (0, 0)

    # The epoch moved, so a running filter reloads its whole table.
    flt.check(trained[0])
    assert flt.scorer.table.get(rare) == (0, 0)
    assert flt.scorer.table.get(frequent) != (0, 0)

    clock.now += 86399
    assert schedule.tick() is None
    clock.now += 1
    assert schedule.tick() == 0


def test_scheduled_expiry_survives_a_broken_store_and_tries_again(settings, trained,
                                                                 caplog):
    rare, _ = _rare_and_frequent()
    BayesToken.update(last_seen=TODAY - 200).where(BayesToken.token == rare).execute()
    clock = Clock()
    schedule = BayesExpiry(settings, first=60, retry=3600, clock=clock)
    clock.now += 60
    database = db.open_database(settings.database_url)
    database.execute_sql("ALTER TABLE bayes_token RENAME TO bayes_token_away")
    try:
        with caplog.at_level(logging.ERROR, logger="core.pipeline"):
            assert schedule.tick() is None
    finally:
        database.execute_sql("ALTER TABLE bayes_token_away RENAME TO bayes_token")
    assert any("event=bayes_expire_error retry_in=3600" in r.getMessage()
               for r in caplog.records)
    assert schedule.due == clock.now + 3600
    clock.now += 3600
    assert schedule.tick() == 1 and store.counts(rare) == (0, 0)


def test_scheduled_expiry_is_off_at_zero_days(settings, trained):
    rare, _ = _rare_and_frequent()
    BayesToken.update(last_seen=TODAY - 200).where(BayesToken.token == rare).execute()
    clock = Clock()
    schedule = BayesExpiry(settings.replace(bayes_expire_days=0), first=0,
                           clock=clock)
    assert not schedule.enabled and schedule.tick() is None
    assert store.counts(rare) != (0, 0)


def test_filter_worker_runs_its_chores_between_batches(settings):
    worker = FilterWorker(settings)
    calls = []

    def chore():
        calls.append(1)
        worker.stopping = True

    worker.chores.append(chore)
    worker.run()
    assert calls == [1]
