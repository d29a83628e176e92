"""The Bayes commands under load and on bad input: no half writes, no junk.

Training runs while a second SQLite connection writes to the same database
file (as the running gateway does); a dump cut short must not replace a
whole store; files that are no mail are skipped and counted. The CLI runs
as a real subprocess against a temporary data_dir.
"""

from __future__ import annotations

import gzip
import random
import sqlite3
import threading
import time

import pytest

from core import db
from core.models import BayesModel, BayesSeen, BayesToken
from core.spam import store, training
from tests.support.filtering import bayes_cli, conf, settings  # noqa: F401
from tests.support.paths import CORPUS
from tests.support.system import need
from tests.test_bayes import parse


def run(conf, *args):
    return bayes_cli(conf, *args, timeout=120)


@pytest.fixture(autouse=True)
def small_batches_fit_ngrams(monkeypatch):
    """These tests learn a handful of messages and look at how the 4-gram
    weights are fitted and stored; the gateway fits them only on batches of
    training.NGRAM_MIN_BATCH (test_one_message_leaves_the_ngrams_alone)."""
    monkeypatch.setattr(training, "NGRAM_MIN_BATCH", 1)


def db_path(settings) -> str:
    return settings.database_url[len("sqlite:///"):]


def corpus(count: int) -> tuple[list, list]:
    need((CORPUS / "dev").is_dir(), "the dev corpus in ../shared/corpus")
    ham = sorted((CORPUS / "dev" / "ham").glob("easy_ham.*.eml"))[:count]
    spam = sorted((CORPUS / "dev" / "spam").glob("spam.*.eml"))[:count]
    return ham, spam


def snapshot() -> tuple:
    return (sorted(BayesToken.select().tuples()), sorted(BayesSeen.select().tuples()),
            sorted((n, v) for n, v, _ in BayesModel.select().tuples()), store.meta())


class Writer(threading.Thread):
    """Another process's connection: short write transactions in a loop."""

    def __init__(self, path: str, hold: float = 0.01, gap: float = 0.005):
        super().__init__(daemon=True)
        self.connection = sqlite3.connect(path, timeout=10, isolation_level=None,
                                          check_same_thread=False)
        self.connection.execute("CREATE TABLE IF NOT EXISTS noise (n INTEGER)")
        self.hold, self.gap = hold, gap
        self.stop = threading.Event()
        self.commits = 0

    def run(self) -> None:
        while not self.stop.is_set():
            self.connection.execute("BEGIN IMMEDIATE")
            self.connection.execute("INSERT INTO noise VALUES (1)")
            time.sleep(self.hold)
            self.connection.execute("COMMIT")
            self.commits += 1
            time.sleep(self.gap)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.join(10)
        self.connection.close()


# region training while another connection writes


def test_training_while_another_connection_writes_stores_everything(
        settings, monkeypatch):
    ham, spam = corpus(15)
    # Small batches: many write transactions, each racing the writer.
    monkeypatch.setattr(training, "BATCH_MESSAGES", 3)
    with Writer(db_path(settings)) as writer:
        result = training.train(ham, spam, progress=False, settings=settings,
                                 parse=parse)
    assert writer.commits > 10
    assert result["learned"] == 30 and result["learned_messages"] == 30
    assert result["ham_messages"] == 15 and result["spam_messages"] == 15
    # Every batch stored its 4-gram weights with its counts.
    assert store.ngram_version() == 10


def test_a_database_locked_too_long_stores_nothing_and_says_what(
        settings, monkeypatch):
    ham, spam = corpus(4)
    monkeypatch.setattr(store, "WRITE_PATIENCE", 0.3)
    store.BayesMeta.select().count()
    db.models.db.obj.execute_sql("PRAGMA busy_timeout = 50")
    holder = sqlite3.connect(db_path(settings), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(training.TrainingError) as caught:
            training.train(ham, spam, progress=False, settings=settings,
                           parse=parse)
    finally:
        holder.execute("COMMIT")
        holder.close()
    text = str(caught.value)
    assert "stayed locked" in text and "0 messages were learned" in text
    # Ham and spam are one batch: none of the eight was stored.
    assert "the last 8 read were not" in text and "run the same command" in text
    assert store.stats()["tokens"] == 0 and store.stats()["learned_messages"] == 0
    assert store.ngram_version() == 0

    # Run again: everything is learned, the 4-gram weights included.
    again = training.train(ham, spam, progress=False, settings=settings,
                           parse=parse)
    assert again["learned"] == 8 and again["already_known"] == 0
    assert store.ngram_version() == 1


def test_another_learner_meanwhile_is_not_counted_twice(settings):
    ham, _ = corpus(3)
    first = training.Learner(training.tokenizer.options(settings))
    second = training.Learner(training.tokenizer.options(settings))
    for path in ham:
        parsed = parse(training.strip_envelope(path.read_bytes()))
        first.add(parsed, False)
        second.add(parsed, False)
    # The second planned from the same state; the first wrote in between.
    plan = second._plan(second.pending, second._known(second.pending))
    assert first.flush() == 3
    stored = second._write(second.pending, plan)
    assert stored.learned == [] and stored.skipped == 3
    assert store.meta()["nham"] == 3


# endregion

# region dump and restore


@pytest.fixture
def trained(settings):
    ham, spam = corpus(6)
    training.train(ham, spam, progress=False, settings=settings, parse=parse)


def lines_of(path) -> list[str]:
    with gzip.open(path, "rt", encoding="ascii") as handle:
        return handle.readlines()


def write_dump(path, lines) -> None:
    with gzip.open(path, "wt", encoding="ascii") as out:
        out.writelines(lines)


def test_dump_ends_with_its_row_counts(settings, trained, tmp_path):
    path = tmp_path / "bayes.dump"
    tokens = store.dump(path)
    end = lines_of(path)[-1].split()
    stats = store.stats()
    assert end == ["e", "m=4", f"t={tokens}", f"s={stats['learned_messages']}",
                   "n=1"]
    assert tokens == stats["tokens"]


def test_a_cut_dump_changes_nothing(settings, trained, tmp_path, conf):
    path = tmp_path / "bayes.dump"
    store.dump(path)
    lines = lines_of(path)
    before = snapshot()

    half = tmp_path / "half.dump"
    write_dump(half, lines[:len(lines) // 2])
    with pytest.raises(store.StoreError, match="no end line.*nothing changed"):
        store.restore(half)

    # The end line kept, rows gone: the counts say how many are missing.
    gone = [line for line in lines if not line.startswith("t\t")][:-1]
    gone += [line for line in lines if line.startswith("t\t")][:-5]
    tokens = sum(line.startswith("t\t") for line in lines)
    short = tmp_path / "short.dump"
    write_dump(short, gone + lines[-1:])
    with pytest.raises(store.StoreError) as caught:
        store.restore(short)
    assert str(caught.value) == (f"incomplete dump: {tokens - 5} token rows "
                                 f"where its end line counts {tokens}; nothing "
                                 "changed")

    # More rows than the end line counts: not called incomplete.
    extra = tmp_path / "extra.dump"
    token_line = next(line for line in lines if line.startswith("t\t"))
    write_dump(extra, lines[:-1] + [token_line, lines[-1]])
    with pytest.raises(store.StoreError, match="does not match its end line"):
        store.restore(extra)

    # A last line cut in the middle, and text after the end line.
    cut = tmp_path / "cut.dump"
    write_dump(cut, lines[:-1] + [lines[-1][:-3]])
    with pytest.raises(store.StoreError, match="cut short"):
        store.restore(cut)
    after = tmp_path / "after.dump"
    write_dump(after, lines + lines[1:2])
    with pytest.raises(store.StoreError, match="after the end line"):
        store.restore(after)
    assert snapshot() == before

    refused = run(conf, "restore", str(half))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "no end line" in refused.stderr and "--unchecked" in refused.stderr
    assert snapshot() == before

    # The whole dump restores; without its end line only when told so.
    assert store.restore(path)["tokens"] == len(before[0])
    old = tmp_path / "old.dump"
    write_dump(old, lines[:-1])
    unchecked = run(conf, "restore", "--unchecked", str(old))
    assert unchecked.returncode == 0, unchecked.stderr
    # The same rows; the weights' version moves on, so that filters reload.
    assert snapshot()[:2] == before[:2]
    assert [name for name, _ in snapshot()[2]] == ["ngram4"]


def test_numbers_a_dump_cannot_hold_are_refused_with_their_line(
        settings, trained, tmp_path, conf):
    path = tmp_path / "bayes.dump"
    store.dump(path)
    lines = lines_of(path)
    before = snapshot()
    at = next(i for i, line in enumerate(lines) if line.startswith("t\t"))
    fields = lines[at].split("\t")

    def edited(name, index, value):
        changed = list(fields)
        changed[index] = value
        bad = tmp_path / f"{name}.dump"
        write_dump(bad, lines[:at] + ["\t".join(changed)] + lines[at + 1:])
        return bad

    for name, index, value, said in (
            ("negative", 2, "-5", "ham count -5 is out of range"),
            ("huge", 3, "99999999999999999999999", "spam count"),
            ("word", 2, "abc", "ham count 'abc' is not a whole number")):
        with pytest.raises(store.StoreError) as caught:
            store.restore(edited(name, index, value))
        assert f"line {at + 1}: {said}" in str(caught.value)
        assert "nothing changed" in str(caught.value)
    total = next(i for i, line in enumerate(lines) if line.startswith("m\tnham"))
    minus = tmp_path / "minus.dump"
    write_dump(minus, lines[:total] + ["m\tnham\t-3\n"] + lines[total + 1:])
    with pytest.raises(store.StoreError, match="nham -3 is out of range"):
        store.restore(minus)

    # The same token twice, counted in the end line: refused in one line.
    twice = tmp_path / "twice.dump"
    end = lines[-1].replace(f"t={sum(l.startswith('t') for l in lines)}",
                            f"t={sum(l.startswith('t') for l in lines) + 1}")
    write_dump(twice, lines[:at + 1] + [lines[at]] + lines[at + 1:-1] + [end])
    refused = run(conf, "restore", str(twice))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "twice; nothing changed" in refused.stderr
    assert snapshot() == before


def test_dump_to_a_directory_names_it_as_given(settings, conf, tmp_path):
    folder = tmp_path / "x"
    folder.mkdir()
    result = run(conf, "dump", f"{folder}/")
    assert result.returncode == 2
    assert f"{folder}/ is a directory" in result.stderr
    assert ".tmp" not in result.stderr
    missing = run(conf, "dump", str(tmp_path / "nope" / "bayes.dump"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


# endregion

# region training input


def test_input_that_is_no_mail_is_skipped_and_counted(settings, tmp_path, conf):
    ham, spam = corpus(2)
    folder = tmp_path / "mixed"
    folder.mkdir()
    for path in spam:
        (folder / path.name).write_bytes(path.read_bytes())
    rng = random.Random(5)
    (folder / "random").write_bytes(bytes(rng.randrange(256) for _ in range(200_000)))
    (folder / "ls").write_bytes(b"\x7fELF\x02\x01\x01" + bytes(5000))
    (folder / "notes.txt").write_bytes(b"hello, this is a note\nnot a mail\n")
    (folder / "nul").write_bytes(b"Subject: x\n\nbody\0with a NUL\n")
    dump = tmp_path / "bayes.dump"
    store.dump(dump)

    result = run(conf, "train", "--spam", str(folder), "--ham", str(dump), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "learned: 2\n" in result.stdout
    assert "skipped_not_mail: 5\n" in result.stdout
    stats = store.stats()
    assert stats["spam_messages"] == 2 and stats["ham_messages"] == 0
    assert stats["tokens"] < 5000


def test_a_file_too_big_is_counted(settings, tmp_path, conf):
    folder = tmp_path / "big"
    folder.mkdir()
    with open(folder / "huge.eml", "wb") as out:
        out.truncate(training.MAX_FILE + 1)  # sparse: no disk used
    result = run(conf, "train", "--spam", str(folder), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "skipped_too_big: 1\n" in result.stdout
    assert "learned: 0\n" in result.stdout


def test_an_empty_folder_says_so(settings, tmp_path, conf):
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = run(conf, "train", "--spam", str(empty), "--quiet")
    assert nothing.returncode == 2
    assert f"no messages found under {empty}" in nothing.stderr

    ham, _ = corpus(1)
    some = run(conf, "train", "--spam", str(empty), "--ham", str(ham[0]), "--quiet")
    assert some.returncode == 0, some.stderr
    assert f"no messages found under {empty}" in some.stderr
    assert "learned: 1\n" in some.stdout and "nothing_found" not in some.stdout


def test_one_kind_alone_adds_counts_but_fits_no_weights(settings, tmp_path,
                                                         conf):
    ham, spam = corpus(25)
    folders = {}
    for kind, files in (("ham", ham), ("spam", spam)):
        folders[kind] = tmp_path / kind
        folders[kind].mkdir()
        for path in files:
            (folders[kind] / path.name).write_bytes(path.read_bytes())

    alone = run(conf, "train", "--ham", str(folders["ham"]), "--quiet")
    assert alone.returncode == 0, alone.stderr
    assert "weights_not_fitted: 25" in alone.stdout
    assert "25 messages came without the other kind" in alone.stderr
    assert "'portcullis bayes train --ham DIR --spam DIR'" in alone.stderr
    assert store.meta()["nham"] == 25 and store.ngram_version() == 0

    # One message from the quarantine is a train-on-error step: fitted.
    assert training.learn(spam[0].read_bytes(), True, settings)
    assert store.ngram_version() == 1

    both = run(conf, "train", "--ham", str(folders["ham"]), "--spam",
               str(folders["spam"]), "--quiet")
    assert both.returncode == 0, both.stderr
    assert "weights_not_fitted: 0" in both.stdout and both.stderr == ""
    assert store.ngram_version() == 2

    # Both folders again, everything already learned: the weights are
    # fitted over them once more (this mends a store trained one kind at a
    # time), the counts stay.
    counts = store.meta()["nham"], store.meta()["nspam"]
    again = run(conf, "train", "--ham", str(folders["ham"]), "--spam",
                str(folders["spam"]), "--quiet")
    assert again.returncode == 0, again.stderr
    assert "learned: 0\n" in again.stdout and "already_known: 50" in again.stdout
    assert store.ngram_version() == 3
    assert (store.meta()["nham"], store.meta()["nspam"]) == counts


# endregion

# region expire and token


def test_expire_days_out_of_range_is_one_line(settings, conf):
    result = run(conf, "expire", "--days", "99999999999999999999")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "36500" in result.stderr
    with pytest.raises(store.StoreError, match="out of range"):
        store.expire(10**20)


def test_token_help_says_why_most_weights_are_zero(conf):
    result = run(conf, "token", "--help")
    assert result.returncode == 0
    assert "most tokens have weight 0" in " ".join(result.stdout.split())


# endregion
