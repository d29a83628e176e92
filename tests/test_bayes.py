"""Bayes scorer, token store and training, on a temporary SQLite database."""

from __future__ import annotations

import gzip
import math
import mailbox
import random
from array import array

import pytest

from core import config, db
from core.message import ParsedMessage, Part
from core.models import BayesModel, BayesToken
from core.spam import (NGRAM_CLUE, SpamFilter, bayes_py, features, ngram, ngram_py,
                       scorer, store, tokenizer, training)
from tests.support.paths import CORPUS as SHARED_CORPUS
from tests.support.system import need

CORPUS = SHARED_CORPUS / "dev"


def parse(data: bytes) -> ParsedMessage:
    try:
        from core.mime import parse as mime_parse
    except ImportError:
        from bench.mime_adapter import parse as mime_parse
    return mime_parse(data)


@pytest.fixture
def settings(tmp_path):
    empty = tmp_path / "empty.conf"
    empty.write_text("")
    return config.load(empty, environ={}, overrides={
        "data_dir": str(tmp_path), "bayes_min_learned": 2,
        "bayes_autolearn": False, "bayes_reload_seconds": 0})


@pytest.fixture(autouse=True)
def small_batches_fit_ngrams(monkeypatch):
    """These tests learn a handful of messages and look at how the 4-gram
    weights are fitted and stored; the gateway fits them only on batches of
    training.NGRAM_MIN_BATCH (test_one_message_leaves_the_ngrams_alone)."""
    monkeypatch.setattr(training, "NGRAM_MIN_BATCH", 1)


@pytest.fixture
def ngram_heard(monkeypatch):
    """Let mix hear the 4-gram voice on the few messages a test learns."""
    monkeypatch.setattr(scorer, "NGRAM_MIN_LEARNED", 1)


@pytest.fixture
def database(settings):
    database = db.open_database(settings.database_url)
    db.migrate(database)
    yield database
    database.close()


def message(subject: str, body: str, sender: str = "a@example.net") -> ParsedMessage:
    return ParsedMessage(
        headers=[("From", sender), ("Subject", subject),
                 ("Message-ID", f"<{abs(hash((subject, body)))}@example.net>")],
        parts=[Part(path="", content_type="text/plain", text=body)],
        from_addresses=[sender], subject=subject)


HAM = [message(f"meeting {i}", f"agenda for the project review number {i} "
               "see the attached minutes and the build logs") for i in range(6)]
SPAM = [message(f"cheap pills {i}", f"buy cheap viagra now limited offer {i} "
                "click here to claim your prize money", "x@spam.example")
        for i in range(6)]


# region scorer


@pytest.fixture(scope="module")
def compiled_bayes():
    need(scorer.COMPILED, "compiled core.fast._bayes (setup.py build_ext)")
    return scorer.implementation(True)


def test_scorer_twins_agree(compiled_bayes):
    rng = random.Random(99)
    tokens = [rng.randrange(1, 2**63) * rng.choice((1, -1)) for _ in range(3000)]
    fast, slow = compiled_bayes.CountTable(10), bayes_py.CountTable()
    for token in tokens:
        ham, spam = rng.randrange(0, 40), rng.randrange(0, 40)
        fast.put(token, ham, spam)
        slow.put(token, ham, spam)
    assert len(fast) == len(slow) == len(set(tokens))
    for _ in range(60):
        sample = array("q", rng.sample(tokens, rng.randrange(0, 600))
                       + [rng.randrange(1, 2**62) for _ in range(20)])
        sample.extend(sample[:10])  # repeats count once
        for max_clues in (150, 5):
            args = (30, 25, 0.45, 0.5, 0.1, max_clues, 12)
            assert compiled_bayes.score(fast, sample, *args) == \
                bayes_py.score(slow, sample, *args)


def test_strongest_clues_come_first_whether_or_not_all_are_used(compiled_bayes):
    tokens = array("q", range(1, 41))
    for impl in (compiled_bayes, bayes_py):
        table = impl.CountTable()
        for token in tokens:
            table.put(token, token % 7, 30 - token % 11)
        for max_clues in (400, 10):
            _, used, top = impl.score(table, tokens, 50, 50, 0.45, 0.5, 0.1,
                                      max_clues, 5)
            strength = [abs(f - 0.5) for _, f in top]
            assert len(top) == 5 and strength == sorted(strength, reverse=True)
            assert used == 10 or max_clues == 400
        assert impl.score(table, tokens, 50, 50, 0.45, 0.5, 0.1, 400, 0)[2] == []


def test_split_averages_the_log_odds_of_header_and_body(compiled_bayes):
    for impl in (compiled_bayes, bayes_py):
        flt = scorer.Scorer(impl is compiled_bayes, "split")
        flt.nham = flt.nspam = 10
        for token in (1, 2, 3):
            flt.table.put(token, 0, 10)  # spam words
        flt.table.put(9, 10, 0)  # a ham sender
        body = array("q", [1, 2, 3])
        body_prob = flt.chi(body)[0]
        # No header clue: the header's voice is 0.5 (log-odds 0).
        prob, used, top = flt.probability((array("q", [77]), body), 2)
        odds = math.log(body_prob / (1 - body_prob)) / 2
        assert prob == pytest.approx(1 / (1 + math.exp(-odds))) and used == 3
        assert len(top) == 2 and top[0][1] > 0.9
        # A ham header pulls the message back even against a sure body.
        mixed = flt.probability((array("q", [9]), body))[0]
        assert mixed < prob and 0.0 < mixed < 1.0


def test_mix_weighs_the_header_of_list_mail_less(compiled_bayes):
    flt = scorer.Scorer(True, "mix")
    flt.nham = flt.nspam = 10
    for token in (1, 2, 3):
        flt.table.put(token, 0, 10)  # spam words
    flt.table.put(9, 10, 0)  # the list's own fields, learnt as ham
    tokens = (array("q", [9]), array("q", [1, 2, 3]))
    plain = flt.split(*tokens)[0]
    listed = flt.split(*tokens, head_share=scorer.LIST_HEAD_SHARE)[0]
    assert listed > plain
    # Without 4-gram weights mix is plain split, list mail or not.
    assert flt.probability(tokens, listed=True)[0] == pytest.approx(plain)
    assert flt.probability(tokens)[0] == pytest.approx(plain)
    # With them (all zero here: a silent 4-gram voice) list mail takes the share.
    flt.set_weights(ngram.new_weights(), 1)
    flt.nham = flt.nspam = scorer.NGRAM_MIN_LEARNED
    grams = array("I", [5])
    half = scorer.sigmoid(math.log(listed / (1 - listed)) / 2)
    assert flt.probability(tokens, grams=grams, listed=True)[0] == pytest.approx(half)


def test_mix_adds_the_author_voice(compiled_bayes):
    flt = scorer.Scorer(True, "mix")
    flt.nham = flt.nspam = scorer.NGRAM_MIN_LEARNED
    flt.set_weights(ngram.new_weights(), 1)  # a silent 4-gram voice
    for token in (1, 2):
        flt.table.put(token, 0, 40)  # the sender's own fields, spammy
    flt.table.put(9, 40, 0)  # a relay, hammy
    head, body = array("q", [1, 2, 9]), array("q", [77])
    author = array("q", [1, 2])
    grams = array("I", [5])
    without = flt.probability((head, body), grams=grams)[0]
    with_author = flt.probability((head, body, author), grams=grams)[0]
    z = math.log(without / (1 - without)) * 2 + scorer.AUTHOR_WEIGHT * (
        math.log(flt.chi(author)[0] / (1 - flt.chi(author)[0])))
    assert with_author == pytest.approx(scorer.sigmoid(z / 2)) and with_author > without


def test_author_segments_are_the_fields_the_sender_writes():
    parsed = ParsedMessage(headers=[
        ("Received", "from relay.example.net (relay.example.net [192.0.2.1])"),
        ("List-Id", "<list.example.org>"), ("From", "Ann <ann@example.com>"),
        ("Subject", "cheap pills"), ("X-Mailer", "Mailer 1.0"),
        ("Message-ID", "<abc.123@example.com>")])
    head, _ = features.parts(parsed)
    kept = {prefix for prefix, _, _ in features.author(head)}
    assert {b"from:", b"subject:", b"x-mailer:"} <= kept
    assert any(prefix.startswith(b"mid:") for prefix in kept)
    assert not any(prefix.startswith((b"rcvd:", b"hdr:")) for prefix in kept)


def test_mix_is_split_until_enough_is_learned(database, settings):
    for parsed in HAM + SPAM:
        training.learn(parsed, parsed in SPAM, settings)
    probe = message("cheap pills", "buy cheap viagra now, claim the prize")
    mixed = SpamFilter(settings.replace(bayes_method="mix"))
    split = SpamFilter(settings.replace(bayes_method="split")).check(probe)
    # Weights are stored (training fits them whatever the method), yet six
    # messages of each kind are far below the bar: the 4-grams stay silent.
    assert mixed.scorer.weights is None or not mixed.scorer.ngram_heard()
    assert mixed.check(probe) == split
    assert NGRAM_CLUE not in {name for name, _ in split.tokens}


def test_list_mail_is_told_by_list_fields():
    def message(*headers):
        return ParsedMessage(headers=list(headers))

    assert features.is_list_mail(message(("List-Id", "<ilug.linux.ie>")))
    assert features.is_list_mail(message(("Mailing-List", "contact x-help")))
    assert features.is_list_mail(message(("Precedence", "list")))
    assert not features.is_list_mail(message(("Precedence", "bulk")))
    assert not features.is_list_mail(message(("Subject", "List-Id: no")))


def test_count_table_load_and_get(compiled_bayes):
    for impl in (compiled_bayes, bayes_py):
        table = impl.CountTable()
        table.load(array("q", [5, -7, 2**62]), array("I", [1, 2, 3]),
                   array("I", [4, 5, 6]))
        assert table.get(-7) == (2, 5) and table.get(8) == (0, 0)
        with pytest.raises(ValueError):
            table.put(0, 1, 1)
        table.load(array("q", [5, 9]), array("I", [1, 0]), array("I", [4, 0]),
                   array("d", [0.25, -1.5]))
        table.put(5, 3, 3)  # new counts keep the weight
        assert table.get_weight(5) == 0.25 and table.get_weight(9) == -1.5
        assert table.get_weight(-7) == 0.0 and table.get_weight(8) == 0.0
        table.put_weight(8, 2.0)
        assert table.get(8) == (0, 0) and table.get_weight(8) == 2.0
        assert len(table) == 5
        with pytest.raises(ValueError):
            table.put_weight(0, 1.0)


def test_logistic_twins_agree(compiled_bayes):
    rng = random.Random(7)
    vocabulary = [rng.randrange(1, 2**63) * rng.choice((1, -1)) for _ in range(800)]
    messages = [(array("q", sorted(set(rng.sample(vocabulary, rng.randrange(1, 90))))),
                 rng.random() < 0.4) for _ in range(200)]
    fast, slow = compiled_bayes.CountTable(4), bayes_py.CountTable()
    fast_sum, slow_sum = compiled_bayes.CountTable(4), bayes_py.CountTable()
    for _ in range(4):
        for tokens, is_spam in messages:
            step = compiled_bayes.tone(fast, tokens, is_spam, 0.05, 0.3, fast_sum)
            assert step == bayes_py.tone(slow, tokens, is_spam, 0.05, 0.3, slow_sum)
    assert len(fast) == len(slow) and len(fast_sum) == len(slow_sum)
    for token in vocabulary:
        assert fast.get_weight(token) == slow.get_weight(token)
        assert fast_sum.get_weight(token) == pytest.approx(fast.get_weight(token))
    for tokens, _ in messages:
        probe = array("q", list(tokens) + list(tokens[:5]) + [0, 12345])
        for explain in (0, 7):
            assert compiled_bayes.logistic(fast, probe, explain) == \
                bayes_py.logistic(slow, probe, explain)


def test_tone_steps_only_on_or_near_errors(compiled_bayes):
    for impl in (compiled_bayes, bayes_py):
        table = impl.CountTable()
        tokens = array("q", [3, 4, 5])
        assert impl.tone(table, tokens, True, 0.5, 0.3) == 0.25  # p was 0.5
        prob, count, top = impl.logistic(table, tokens, 2)
        assert count == 3 and prob > 0.6 and top == [(3, 0.25), (4, 0.25)]
        for _ in range(10):
            impl.tone(table, tokens, True, 0.5, 0.3)
        # Now sure enough (p >= 0.7): no more steps.
        assert impl.tone(table, tokens, True, 0.5, 0.3) == 0.0
        assert impl.logistic(table, array("q", [99]), 5) == (0.5, 0, [])


def test_chi2q_twins(compiled_bayes):
    for x2, v in ((0.0, 2), (3.5, 10), (250.0, 300), (2000.0, 300)):
        assert compiled_bayes.chi2q(x2, v) == bayes_py.chi2q(x2, v)


def test_points_mapping():
    assert scorer.points(0.0) == -1.5
    assert scorer.points(0.2) == 0.0
    # Called spam is tagged at the default spam_tag_level of 3.
    assert scorer.points(0.9) == 3.0
    assert scorer.points(0.999) == 6.0
    assert scorer.points(1.0) == 7.0
    values = [scorer.points(i / 1000) for i in range(1001)]
    assert values == sorted(values)


# endregion

# region store and training


def test_untrained_filter_scores_zero_and_says_so(database, settings):
    result = SpamFilter(settings).check(SPAM[0])
    assert result.score == 0.0 and result.verdict == "unsure"
    assert "not trained" in result.note


def test_learn_store_round_trip(database, settings, tmp_path):
    learner = training.Learner(tokenizer.options(settings))
    for parsed in HAM:
        learner.add(parsed, False)
    for parsed in SPAM:
        learner.add(parsed, True)
    assert learner.flush() == 12
    stats = store.stats()
    assert stats["ham_messages"] == 6 and stats["spam_messages"] == 6
    assert stats["tokens"] == BayesToken.select().count() > 20
    token = tokenizer.tokenize(message("x", "viagra"))[-1]
    assert store.counts(token) == (0, 6)
    assert BayesToken.get(BayesToken.token == token).weight > 0

    # Learning the same message again does nothing.
    assert not training.learn(SPAM[0], True, settings)
    assert store.stats()["spam_messages"] == 6

    # Dump, change, restore: back to the dumped state.
    path = tmp_path / "bayes.dump.gz"
    rows = sorted(BayesToken.select().tuples())
    assert store.dump(path) == len(rows)
    training.learn(message("other", "completely new words here"), False, settings)
    restored = store.restore(path)
    assert sorted(BayesToken.select().tuples()) == rows
    assert restored["ham_messages"] == 6 and restored["learned_messages"] == 12

    # A dump from before token weights (five fields a row) still restores.
    old = tmp_path / "old.dump.gz"
    with gzip.open(old, "wt", encoding="ascii") as out:
        out.write(store.DUMP_MAGIC + "\nm\tnham\t1\nm\tnspam\t1\nt\t77\t1\t2\t3\n")
    # It has no end line, so it is refused unless said to be whole.
    with pytest.raises(store.StoreError, match="no end line"):
        store.restore(old)
    assert store.restore(old, unchecked=True)["tokens"] == 1
    assert BayesToken.get(BayesToken.token == 77).weight == 0.0


def test_restore_refuses_a_foreign_file(database, tmp_path):
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(store.StoreError, match="cannot be read"):
        store.restore(bad)


def test_relearn_moves_counts_to_the_other_class(database, settings):
    for parsed in HAM + SPAM:
        training.learn(parsed, parsed in SPAM, settings)
    token = tokenizer.tokenize(message("x", "agenda"))[-1]
    assert store.counts(token) == (6, 0)
    assert training.learn(HAM[0], True, settings)
    assert store.counts(token) == (5, 1)
    assert store.stats()["ham_messages"] == 5
    assert store.stats()["spam_messages"] == 7


def test_expire_drops_old_rare_tokens(database, settings):
    learner = training.Learner(tokenizer.options(settings))
    learner.add(HAM[0], False)
    learner.add(HAM[1], False)
    learner.flush()
    before = store.stats()["tokens"]
    BayesToken.update(last_seen=1).execute()
    gone = store.expire(30)
    # Tokens of both messages (count 2) go too: "rare" is at most 2 uses.
    assert gone == before and store.stats()["tokens"] == 0
    assert store.meta()["epoch"] == 1


@pytest.mark.parametrize("method", scorer.METHODS)
def test_filter_classifies_and_explains(database, settings, ngram_heard, method):
    learner = training.Learner(tokenizer.options(settings))
    for parsed in HAM + SPAM:
        learner.add(parsed, parsed in SPAM)
    learner.flush()
    flt = SpamFilter(settings.replace(bayes_method=method))
    # 4-grams alone read the header as much as the words: a spam probe from
    # the ham sender would be a coin toss for them with twelve messages.
    sender = "x@spam.example" if method in ("mix", "ngram") else "a@example.net"
    spam = flt.check(message("cheap pills", "buy cheap viagra now, claim the prize",
                             sender))
    ham = flt.check(message("meeting", "the project review agenda and build logs"))
    assert spam.probability > 0.5 > ham.probability
    if method == "chi":
        # Twelve tiny messages: only chi-square is this sure this soon.
        assert spam.verdict == "spam" and spam.score > 3
        assert ham.verdict == "ham" and ham.score <= 0
    names = [name for name, _ in spam.tokens]
    if method != "ngram":
        assert any("viagra" in name for name in names)
    if method in ("mix", "ngram"):
        assert names[-1] == "(character 4-grams)"


def test_explaining_names_each_strong_token_once(database, settings):
    for parsed in HAM + SPAM:
        training.learn(parsed, parsed in SPAM, settings)
    flt = SpamFilter(settings)
    probe = message("cheap pills", "buy cheap viagra now, claim the prize")
    first = flt.check(probe)
    # The names found by the naming pass are kept, so the next message with
    # the same strong tokens needs no naming pass.
    words = {name for name, _ in first.tokens} - {NGRAM_CLUE}
    assert words and words <= set(flt._names.values())
    assert flt.check(probe).tokens == first.tokens
    assert SpamFilter(settings).check(probe).tokens == first.tokens
    assert flt.check(probe, explain=False).tokens == []


@pytest.mark.parametrize("method", scorer.METHODS)
def test_twin_filter_gives_the_same_result(database, settings, compiled_bayes,
                                           ngram_heard, method):
    for parsed in HAM + SPAM:
        training.learn(parsed, parsed in SPAM, settings)
    settings = settings.replace(bayes_method=method)
    probe = message("prize meeting", "cheap agenda viagra review")
    fast = SpamFilter(settings, compiled=True).check(probe)
    slow = SpamFilter(settings, compiled=False).check(probe)
    assert fast == slow


def test_filter_reloads_when_the_store_changed(database, settings):
    flt = SpamFilter(settings)
    flt.check(HAM[0])
    assert flt.scorer.nham == 0
    for parsed in HAM + SPAM:
        training.learn(parsed, parsed in SPAM, settings)
    flt.check(HAM[0])
    assert flt.scorer.nham == 6 and flt.scorer.nspam == 6
    # An incremental reload sees a newly learned token.
    training.learn(message("fresh", "zanzibar"), True, settings)
    flt.check(HAM[0])
    token = tokenizer.tokenize(message("x", "zanzibar"))[-1]
    assert flt.scorer.table.get(token) == (0, 1)


def test_autolearn_is_batched(database, settings):
    for parsed in HAM + SPAM:
        training.learn(parsed, parsed in SPAM, settings)
    flt = SpamFilter(settings.replace(bayes_autolearn=True, bayes_autolearn_spam=0.9,
                                      bayes_autolearn_ham=0.1))
    result = flt.check(message("cheap pills now", "buy cheap viagra claim prize"))
    assert result.autolearned == "spam"
    assert store.stats()["spam_messages"] == 6  # still pending
    flt.flush()
    assert store.stats()["spam_messages"] == 7


def test_train_reads_files_mbox_and_maildir(database, settings, tmp_path):
    raw = b"From: a@example.net\r\nSubject: hello %d\r\n\r\nproject agenda %d\r\n"
    folder = tmp_path / "ham"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.eml").write_bytes(b"From someone Thu Jan 1 00:00:00 2026\n"
                                          + raw % (i, i))
    box = mailbox.mbox(str(tmp_path / "spam.mbox"))
    for i in range(4):
        box.add(b"From: x@spam.example\nSubject: pills %d\n\n"
                b"From now on buy %d\n" % (i, i))
    box.close()
    maildir = mailbox.Maildir(str(tmp_path / "Maildir"))
    maildir.add(b"From: y@spam.example\nSubject: offer\n\ncheap cheap\n")
    maildir.close()

    result = training.train([folder], [tmp_path / "spam.mbox", tmp_path / "Maildir"],
                            progress=False, settings=settings, parse=parse)
    assert result["learned"] == 8 and result["ham_messages"] == 3
    assert result["spam_messages"] == 5
    again = training.train([folder], [], progress=False, settings=settings, parse=parse)
    assert again["learned"] == 0 and again["already_known"] == 3
    with pytest.raises(training.TrainingError, match="does not exist"):
        training.train([tmp_path / "missing"], [], progress=False, settings=settings,
                       parse=parse)


def test_split_mbox_unquotes_from_lines():
    data = b"From a\nSubject: 1\n\n>From here\n\nFrom b\nSubject: 2\n\nbody\n"
    assert list(training.split_mbox(data)) == [
        b"Subject: 1\n\nFrom here\n", b"Subject: 2\n\nbody\n"]


def test_train_then_classify_corpus_sample(database, settings):
    need(CORPUS.is_dir(), "the dev corpus in ../shared/corpus")
    ham = sorted((CORPUS / "ham").glob("easy_ham.*.eml"))[:60]
    spam = sorted((CORPUS / "spam").glob("spam.*.eml"))[:60]
    training.train(ham[:40], spam[:40], progress=False, settings=settings, parse=parse)
    flt = SpamFilter(settings)
    right = 0
    probes = [(p, False) for p in ham[40:]] + [(p, True) for p in spam[40:]]
    for path, is_spam in probes:
        result = flt.check(parse(training.strip_envelope(path.read_bytes())))
        right += (result.verdict == "spam") == is_spam
    assert right >= 34  # of 40; the bench measures the real accuracy


# endregion


def test_learning_one_message_continues_the_stored_weights(database, settings):
    learner = training.Learner(tokenizer.options(settings))
    for parsed in HAM + SPAM:
        learner.add(parsed, parsed in SPAM)
    learner.flush()
    token = tokenizer.tokenize(message("x", "viagra"))[-1]
    before = BayesToken.get(BayesToken.token == token).weight
    # A ham message full of spam words: a step towards ham from the stored
    # weights (the one-message path reads only its own tokens' rows).
    assert training.learn(message("cheap pills 9", "buy cheap viagra now"), False,
                          settings)
    after = BayesToken.get(BayesToken.token == token).weight
    assert after < before


# region 4-gram model


@pytest.fixture(scope="module")
def compiled_ngram():
    need(ngram.COMPILED, "compiled core.fast._ngram (setup.py build_ext)")
    return ngram.implementation(True)


def test_ngram_twins_agree(compiled_ngram):
    rng = random.Random(7)
    samples = [b"", b"abc", b"abcd", b"aaaaaaaa", bytes(range(256)) * 3,
               bytes(rng.randrange(256) for _ in range(3000)),
               "Subject: cheap pills\n\nbuy now".encode()]
    fast_w, slow_w = ngram.new_weights(), ngram.new_weights()
    for number, data in enumerate(samples * 3):
        fast = compiled_ngram.features(data, ngram.BITS)
        slow = ngram_py.features(data, ngram.BITS)
        assert fast == slow
        assert len(fast) == len(set(fast)) <= max(len(data) - 3, 0)
        assert compiled_ngram.score(fast_w, fast) == ngram_py.score(slow_w, slow)
        assert (compiled_ngram.step(fast_w, fast, number % 2 == 0, 16.0, 0.05)
                == ngram_py.step(slow_w, slow, number % 2 == 0, 16.0, 0.05))
        assert fast_w == slow_w
    assert any(fast_w)


@pytest.mark.parametrize("impl", ["compiled", "twin"])
def test_ngram_refuses_bad_input(compiled_ngram, impl):
    module = compiled_ngram if impl == "compiled" else ngram_py
    with pytest.raises(ValueError, match="bits"):
        module.features(b"abcdef", 30)
    small = array("f", bytes(16))
    with pytest.raises(ValueError, match="past"):
        module.score(small, array("I", [1, 9]))
    with pytest.raises(ValueError, match="past"):
        module.step(small, array("I", [9]), True, 1.0, 0.0)


def test_ngram_step_only_on_or_near_errors(compiled_ngram):
    weights = ngram.new_weights()
    grams = compiled_ngram.features(b"buy cheap pills now", ngram.BITS)
    assert compiled_ngram.step(weights, grams, True, 16.0, 0.05)
    assert compiled_ngram.score(weights, grams) > 2.9
    # Right with probability above 0.95 now: no further step.
    assert not compiled_ngram.step(weights, grams, True, 16.0, 0.05)
    assert not compiled_ngram.step(weights, array("I"), True, 16.0, 0.05)


def test_ngram_text_is_headers_then_bodies_and_capped():
    parsed = message("hello", "body text " * 1000)
    parsed.headers.append(("X-Spam-Flag", "YES"))
    data = ngram.text(parsed)
    assert data.startswith(b"From: a@example.net\nSubject: hello\n")
    assert b"X-Spam" not in data and b"\n\nbody text" in data
    assert len(data) == ngram.MAX_BYTES


def test_ngram_weights_are_stored_dumped_and_restored(database, settings, tmp_path):
    assert store.stats()["ngram_version"] == 0
    for parsed in HAM + SPAM:
        training.learn(parsed, parsed in SPAM, settings)
    weights, version = store.load_ngram(1 << ngram.BITS)
    assert version == store.stats()["ngram_version"] == 12 and any(weights)

    path = tmp_path / "bayes.dump.gz"
    store.dump(path)
    training.learn(message("other", "completely new words here"), False, settings)
    assert store.load_ngram(1 << ngram.BITS)[0] != weights
    store.restore(path)
    restored, new_version = store.load_ngram(1 << ngram.BITS)
    assert restored == weights and new_version > 13

    # A dump from before the 4-gram model restores to no weights at all.
    old = tmp_path / "old.dump.gz"
    with gzip.open(old, "wt", encoding="ascii") as out:
        out.write(store.DUMP_MAGIC + "\nm\tnham\t1\nm\tnspam\t1\nt\t77\t1\t2\t3\n")
    store.restore(old, unchecked=True)
    assert BayesModel.select().count() == 0
    bad = tmp_path / "bad.dump.gz"
    with gzip.open(bad, "wt", encoding="ascii") as out:
        out.write(store.DUMP_MAGIC + "\nn\tngram4\t1\tbm90IHpsaWI=\n")
    with pytest.raises(store.StoreError, match="cannot be read"):
        store.restore(bad)


def test_mix_filter_follows_the_stored_weights(database, settings, ngram_heard):
    settings = settings.replace(bayes_method="mix")
    for parsed in HAM + SPAM:
        training.learn(parsed, parsed in SPAM, settings)
    flt = SpamFilter(settings)
    probe = message("cheap pills", "buy cheap viagra now, claim the prize")
    before = flt.check(probe).probability
    assert flt.scorer.weights_version == 12

    # Learned by this filter: its weights move at once, without a reload.
    assert flt.learn(probe, False)
    assert flt.scorer.weights_version == 13
    assert flt.check(probe).probability < before

    # Learned elsewhere (the quarantine): the next refresh loads them.
    training.learn(message("more pills", "cheap viagra prize"), True, settings)
    flt.check(probe)
    assert flt.scorer.weights_version == 14 == store.ngram_version()


# endregion


def test_training_interleaves_ham_and_spam_in_each_batch(database, settings,
                                                          monkeypatch):
    need(CORPUS.is_dir(), "the dev corpus in ../shared/corpus")
    ham = sorted((CORPUS / "ham").glob("easy_ham.*.eml"))[:30]
    spam = sorted((CORPUS / "spam").glob("spam.*.eml"))[:10]
    batches = []
    real_plan = training.Learner._plan

    def plan(learner, batch, known):
        batches.append([is_spam for _, is_spam, _, _ in batch])
        return real_plan(learner, batch, known)

    monkeypatch.setattr(training.Learner, "_plan", plan)
    monkeypatch.setattr(training, "BATCH_MESSAGES", 8)
    result = training.train(ham, spam, progress=False, settings=settings,
                            parse=parse)

    assert result["learned"] == 40
    # Three ham to one spam, as the folders hold them, in every batch.
    assert [sum(kinds) for kinds in batches] == [2, 2, 2, 2, 2]
    assert all(len(kinds) == 8 for kinds in batches)


def test_interleave_keeps_the_proportion_and_drains_the_longer():
    mixed = list(training._interleave(iter("aaaaaa"), 6, iter("bb"), 2))
    assert "".join(mixed) == "abaaabaa"
    assert "".join(training._interleave(iter(""), 0, iter("bbb"), 3)) == "bbb"
    assert "".join(training._interleave(iter("aa"), 9, iter("b"), 1)) == "aba"


def test_one_message_leaves_the_ngrams_alone(database, settings, monkeypatch):
    monkeypatch.setattr(training, "NGRAM_MIN_BATCH",
                        training.FEW_MESSAGES + 1)  # the gateway's own
    learner = training.Learner(tokenizer.options(settings))
    for i in range(15):
        learner.add(message(f"meeting {i}", f"agenda review number {i} build"),
                    False)
        learner.add(message(f"pills {i}", f"cheap viagra offer {i} prize"), True)
    learner.flush()
    version = store.ngram_version()
    weights, _ = store.load_ngram(1 << ngram.BITS)
    assert version == 1

    # A "not spam" click: the counts and token weights learn it, the 4-gram
    # weights stay, since one message's step would move every common 4-gram.
    probe = message("cheap pills 99", "cheap viagra offer prize")
    before = store.stats()["ham_messages"]
    assert training.learn(probe, False, settings)
    assert store.stats()["ham_messages"] == before + 1
    assert store.ngram_version() == version
    assert store.load_ngram(1 << ngram.BITS)[0] == weights
