"""Bayes filter bench: accuracy and speed on the dev corpus, beside bogofilter
and spamprobe trained on the same split.

    .venv/bin/python bench/bayes.py [--test-share 3] [--seed TEXT]
        [--twin-sample 300] [--no-others] [--bigrams N] [--method M]
        [--max-tokens N] [--cv K]

Split: a message is in the test part when the first 8 hex digits of
sha256(seed + body_group) are 0 modulo --test-share, so every body group
stays on one side; --seed gives other splits to check a choice against.
Speeds are one core, in CPU seconds (getrusage, so other load on
the machine does not count), from raw bytes to verdict (MIME parse
included), for the compiled build, the pure-Python twin and the two others.
The cost of ``SpamFilter.check()`` on parsed messages and the tokenizer
speeds are the best of three rounds, since other load can only slow a round.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import config, db  # noqa: E402
from core.spam import (SpamFilter, features, scorer, tokenize_py,  # noqa: E402
                        tokenizer)
from core.spam.tokenspec import HTML  # noqa: E402
from core.spam.training import Learner, strip_envelope  # noqa: E402
from tests.support.paths import CASES, CORPUS  # noqa: E402

HOSTILE = ("034-multipart-nesting-bomb", "036-many-mime-parts",
           "060-long-mime-param-name", "061-semicolon-stuffing")


def cpu() -> float:
    """CPU seconds used so far by this process (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_cpu() -> float:
    """CPU seconds used so far by finished child processes."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def parser():
    """core.mime.parse when it imports, else the bench's stand-in."""
    try:
        from core.mime import parse

        return parse, "core.mime"
    except Exception as exc:  # the MIME layer may be mid-change
        from bench.mime_adapter import parse

        return parse, f"bench.mime_adapter ({type(exc).__name__} from core.mime)"


def corpus(test_share: int, seed: str = ""):
    rows = []
    lines = (CORPUS / "labels.tsv").read_text().splitlines()
    head = lines[0].split("\t")
    for line in lines[1:]:
        row = dict(zip(head, line.split("\t")))
        group = hashlib.sha256((seed + row["body_group"]).encode()).hexdigest()
        row["test"] = int(group[:8], 16) % test_share == 0
        row["spam"] = row["label"] == "spam"
        row["file"] = CORPUS / row["path"]
        rows.append(row)
    return [r for r in rows if not r["test"]], [r for r in rows if r["test"]]


def auc(scores: list[tuple[float, bool]]) -> float:
    """Area under the ROC curve (ties count half)."""
    ordered = sorted(scores, key=lambda s: s[0])
    ranks = {}
    i = 0
    while i < len(ordered):
        j = i
        while j < len(ordered) and ordered[j][0] == ordered[i][0]:
            j += 1
        for k in range(i, j):
            ranks[k] = (i + j + 1) / 2
        i = j
    spam_ranks = sum(ranks[k] for k, (_, s) in enumerate(ordered) if s)
    n_spam = sum(1 for _, s in ordered if s)
    n_ham = len(ordered) - n_spam
    return (spam_ranks - n_spam * (n_spam + 1) / 2) / (n_spam * n_ham)


def fp_share_miss(scores: list[tuple[float, bool]], share: float = 0.0) -> float:
    """Share of spam missed by the best cutoff that lets at most ``share`` of
    the ham through as spam (0: none)."""
    ham = sorted((p for p, s in scores if not s), reverse=True)
    top_ham = ham[min(int(share * len(ham)), len(ham) - 1)]
    spam = [p for p, s in scores if s]
    return sum(1 for p in spam if p <= top_ham) / len(spam)


def report(name: str, verdicts, scores, seconds: float | None, count: int,
           tokens: int | None = None) -> None:
    ham = [v for v, s in verdicts if not s]
    spam = [v for v, s in verdicts if s]
    fp = sum(1 for v in ham if v == "spam")
    fn = sum(1 for v in spam if v != "spam")
    fn_ham = sum(1 for v in spam if v == "ham")
    unsure = sum(1 for v, _ in verdicts if v == "unsure")
    print(f"{name}:")
    print(f"  false positives {fp}/{len(ham)} = {fp / len(ham):.2%}; "
          f"false negatives {fn}/{len(spam)} = {fn / len(spam):.2%} "
          f"(called ham {fn_ham}, unsure {fn - fn_ham})")
    print(f"  unsure {unsure}/{len(verdicts)} = {unsure / len(verdicts):.2%} "
          f"(ham {sum(1 for v in ham if v == 'unsure')}, "
          f"spam {sum(1 for v in spam if v == 'unsure')})")
    print(f"  ROC area {auc(scores):.5f}; misses at zero FP "
          f"{fp_share_miss(scores):.2%}, at most 0.1% FP "
          f"{fp_share_miss(scores, MAX_FP_SHARE):.2%} (the best cutoff after the "
          "fact: a bound, not a setting)")
    cuts = []
    for cut in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95):
        fp = sum(1 for p, s in scores if not s and p >= cut)
        fn = sum(1 for p, s in scores if s and p < cut)
        cuts.append(f"{cut}: {fp}/{fn}")
    print("  FP/FN with one cutoff at " + ", ".join(cuts))
    if seconds:
        line = f"  classify {count / seconds:.0f} messages/s"
        if tokens:
            line += f", {tokens / seconds:.0f} tokens/s"
        print(line + f" ({seconds:.2f} s for {count})")


def train_ours(train_rows, parse, opts, impl):
    learner = Learner(opts, impl)
    for row in train_rows:
        learner.add(parse(strip_envelope(row["data"])), row["spam"])
    learner.flush()
    return learner.learned


def classify_ours(flt: SpamFilter, rows, parse):
    verdicts, scores, tokens = [], [], 0
    started = cpu()
    for row in rows:
        parsed = parse(strip_envelope(row["data"]))
        result = flt.check(parsed)
        verdicts.append((result.verdict, row["spam"]))
        scores.append((result.probability, row["spam"]))
    seconds = cpu() - started
    for row in rows:
        tokens += len(tokenizer.tokenize(parse(strip_envelope(row["data"])), flt.opts))
    return verdicts, scores, seconds, tokens


def check_cost(flt: SpamFilter, rows, parse, rounds: int = 3) -> None:
    """CPU ms per SpamFilter.check() of a parsed message, with and without explain."""
    parsed = [parse(strip_envelope(row["data"])) for row in rows]
    best = {True: float("inf"), False: float("inf")}
    for _ in range(rounds):
        for explain in (True, False):
            started = cpu()
            for message in parsed:
                flt.check(message, explain=explain)
            best[explain] = min(best[explain], (cpu() - started) / len(parsed) * 1000)
    print(f"  check() of a parsed message: {best[True]:.3f} ms with explain, "
          f"{best[False]:.3f} ms without (CPU, best of {rounds} rounds)")


CUTOFFS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
MAX_FP_SHARE = 0.001


def errors(scores, cut: float) -> tuple[int, int]:
    """(ham at or above ``cut``, spam below it)."""
    return (sum(1 for p, s in scores if not s and p >= cut),
            sum(1 for p, s in scores if s and p < cut))


def cv_cutoff(train_rows, parse, overrides: dict, tmp: Path, folds: int):
    """The spam cutoff chosen on the training part alone, by ``folds``-fold CV.

    Folds split by body group (another hash than the test split). The
    lowest cutoff whose held-out false positives stay at most 0.1% wins;
    when none does, the one with the fewest false positives.
    """
    scores = []
    compiled = tokenizer.implementation(True)
    for fold in range(folds):
        def held(row):
            digest = hashlib.sha256(("cv" + row["body_group"]).encode()).hexdigest()
            return int(digest[:8], 16) % folds == fold

        settings = config.load(environ={}, overrides={
            **overrides, "data_dir": str(tmp / f"cv{fold}")})
        database = db.open_database(settings.database_url)
        db.migrate(database)
        train_ours([r for r in train_rows if not held(r)], parse,
                   tokenizer.options(settings), compiled)
        flt = SpamFilter(settings, compiled=True)
        for row in train_rows:
            if held(row):
                result = flt.check(parse(strip_envelope(row["data"])), explain=False)
                scores.append((result.probability, row["spam"]))
        database.close()
    nham = sum(1 for _, s in scores if not s)

    def badness(cut):
        fp, fn = errors(scores, cut)
        return (fp > MAX_FP_SHARE * nham, fp if fp > MAX_FP_SHARE * nham else fn, cut)

    cut = min(CUTOFFS, key=badness)
    return cut, errors(scores, cut), nham, len(scores) - nham, scores


def run_bogofilter(train_rows, test_rows, tmp: Path):
    home = tmp / "bogofilter"
    home.mkdir()
    base = ["bogofilter", "-C", "-d", str(home)]
    ham = [str(r["file"]) for r in train_rows if not r["spam"]]
    spam = [str(r["file"]) for r in train_rows if r["spam"]]
    subprocess.run(base + ["-n", "-B"] + ham, check=True)
    subprocess.run(base + ["-s", "-B"] + spam, check=True)
    files = [str(r["file"]) for r in test_rows]
    started = child_cpu()
    out = subprocess.run(base + ["-t", "-B"] + files, check=False,
                         capture_output=True, text=True).stdout
    seconds = child_cpu() - started
    marks = {"S": "spam", "H": "ham", "U": "unsure"}
    verdicts, scores = [], []
    lines = out.splitlines()
    for row, line in zip(test_rows, lines):
        mark, value = line.split()[-2:]
        verdicts.append((marks[mark], row["spam"]))
        scores.append((float(value), row["spam"]))
    return verdicts, scores, seconds


def run_spamprobe(train_rows, test_rows, tmp: Path):
    home = tmp / "spamprobe"
    base = ["spamprobe", "-c", "-M", "-d", str(home)]
    ham = [str(r["file"]) for r in train_rows if not r["spam"]]
    spam = [str(r["file"]) for r in train_rows if r["spam"]]
    subprocess.run(base + ["good"] + ham, check=True, capture_output=True)
    subprocess.run(base + ["spam"] + spam, check=True, capture_output=True)
    files = [str(r["file"]) for r in test_rows]
    started = child_cpu()
    out = subprocess.run(base + ["score"] + files, check=True,
                         capture_output=True, text=True).stdout
    seconds = child_cpu() - started
    verdicts, scores = [], []
    for row, line in zip(test_rows, out.splitlines()):
        mark, value, _ = line.split()
        verdicts.append(("spam" if mark == "SPAM" else "ham", row["spam"]))
        scores.append((float(value), row["spam"]))
    return verdicts, scores, seconds


def tokenizer_speed(rows, parse, opts, rounds: int = 3) -> None:
    """Tokenizer speeds, the best of ``rounds`` (other load only slows a round)."""
    parsed = [parse(strip_envelope(r["data"])) for r in rows]
    segs = [features.segments(p) for p in parsed]
    compiled = tokenizer.implementation(True)
    times = {}
    for name, impl in (("compiled", compiled), ("twin", tokenize_py)):
        hot = full = float("inf")
        for _ in range(rounds):
            started = cpu()
            count = sum(len(impl.hash_segments(s, opts)) for s in segs)
            hot = min(hot, cpu() - started)
            started = cpu()
            for p in parsed:
                tokenizer.tokenize(p, opts, impl)
            full = min(full, cpu() - started)
        times[name] = (hot, full, count)
        print(f"  {name}: {len(rows) / full:.0f} messages/s, {count / full:.0f} "
              f"tokens/s with feature extraction; hot path alone "
              f"{count / hot:.0f} tokens/s")
    print(f"  compiled/twin: {times['twin'][1] / times['compiled'][1]:.1f}x "
          f"(hot path alone {times['twin'][0] / times['compiled'][0]:.1f}x; "
          f"best of {rounds} rounds each)")


def hostile(parse, opts) -> None:
    impl = tokenizer.implementation(True)
    for case in HOSTILE:
        data = (CASES / case / "input.eml").read_bytes()
        parsed = parse(data)
        started = time.perf_counter()
        count = len(tokenizer.tokenize(parsed, opts, impl))
        ms = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        raw = len(impl.hash_segments([(b"", data, HTML)], opts))
        raw_ms = (time.perf_counter() - started) * 1000
        print(f"  {case}: tokenizer {ms:.1f} ms, {count} tokens, "
              f"{len(parsed.parts)} parts; whole raw message as HTML "
              f"{raw_ms:.1f} ms, {raw} tokens")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--test-share", type=int, default=3,
                    help="one body group in N goes to the test part (default 3)")
    ap.add_argument("--twin-sample", type=int, default=300,
                    help="test messages classified with the pure-Python twin")
    ap.add_argument("--no-others", action="store_true",
                    help="skip bogofilter and spamprobe")
    ap.add_argument("--seed", default="",
                    help="text put before body_group when hashing (default none)")
    ap.add_argument("--bigrams", type=int, default=None, help="OSB window")
    ap.add_argument("--max-tokens", type=int, default=None,
                    help="bayes_max_tokens (default: the configured one)")
    ap.add_argument("--method", choices=scorer.METHODS,
                    default=None,
                    help="bayes_method (default: the configured one)")
    ap.add_argument("--cv", type=int, default=0, metavar="K",
                    help="also choose the spam cutoff by K-fold CV on the train part")
    args = ap.parse_args(argv)

    parse, parse_name = parser()
    train_rows, test_rows = corpus(args.test_share, args.seed)
    for row in train_rows + test_rows:
        row["data"] = row["file"].read_bytes()
    print(f"corpus: train {len(train_rows)} "
          f"({sum(r['spam'] for r in train_rows)} spam), test {len(test_rows)} "
          f"({sum(r['spam'] for r in test_rows)} spam); parser {parse_name}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        overrides = {"data_dir": str(tmp), "bayes_autolearn": False,
                     "bayes_min_learned": 1, "uribl_zones": ""}
        if args.bigrams is not None:
            overrides["bayes_bigrams"] = args.bigrams
        if args.method is not None:
            overrides["bayes_method"] = args.method
        if args.max_tokens is not None:
            overrides["bayes_max_tokens"] = args.max_tokens
        chosen = None
        if args.cv > 1:
            chosen = cv_cutoff(train_rows, parse, overrides, tmp, args.cv)
        settings = config.load(environ={}, overrides=overrides)
        database = db.open_database(settings.database_url)
        db.migrate(database)
        opts = tokenizer.options(settings)

        started = time.perf_counter()
        learned = train_ours(train_rows, parse, opts, tokenizer.implementation(True))
        print(f"portcullis: trained {learned} messages in "
              f"{time.perf_counter() - started:.1f} s; window {opts.window}; "
              f"method {settings.bayes_method}; "
              f"threshold spam >= {settings.bayes_unsure_high}, "
              f"ham <= {settings.bayes_unsure_low}")
        flt = SpamFilter(settings, compiled=True)
        started = time.perf_counter()
        flt.scorer.load()
        print(f"  token table: {len(flt.scorer.table)} tokens, loaded in "
              f"{time.perf_counter() - started:.2f} s")
        verdicts, scores, seconds, tokens = classify_ours(flt, test_rows, parse)
        report("portcullis (compiled)", verdicts, scores, seconds, len(test_rows),
               tokens)
        check_cost(flt, test_rows, parse)
        if chosen is not None:
            cut, (fp, fn), nham, nspam, held = chosen
            high = settings.bayes_unsure_high
            held_fp, held_fn = errors(held, high)
            print(f"  {args.cv}-fold CV on the train part at {high}: held out FP "
                  f"{held_fp}/{nham} = {held_fp / nham:.2%}, FN {held_fn}/{nspam} = "
                  f"{held_fn / nspam:.2%}")
            test_fp, test_fn = errors(scores, cut)
            test_ham = sum(1 for _, s in scores if not s)
            print(f"  cutoff by {args.cv}-fold CV on the train part: {cut} "
                  f"(held out: FP {fp}/{nham}, FN {fn}/{nspam}); on the test part "
                  f"FP {test_fp}/{test_ham} = {test_fp / test_ham:.2%}, FN "
                  f"{test_fn}/{len(scores) - test_ham} = "
                  f"{test_fn / (len(scores) - test_ham):.2%}")
        worst = sorted(((p, r) for (p, s), r in zip(scores, test_rows) if not s),
                       key=lambda x: -x[0])[:3]
        print("  highest ham: " + ", ".join(
            f"{r['source_name']} {p:.3f}" for p, r in worst))
        worst = sorted(((p, r) for (p, s), r in zip(scores, test_rows) if s),
                       key=lambda x: x[0])[:3]
        print("  lowest spam: " + ", ".join(
            f"{r['source_name']} {p:.3f}" for p, r in worst))

        sample = test_rows[::max(len(test_rows) // max(args.twin_sample, 1), 1)]
        twin = SpamFilter(settings, compiled=False)
        twin.scorer.load()
        tv, ts, tsec, ttok = classify_ours(twin, sample, parse)
        same = sum(1 for (a, _), (b, _) in zip(ts, [scores[test_rows.index(r)]
                                                    for r in sample]) if a == b)
        print(f"portcullis (pure-Python twin) on {len(sample)} test messages: "
              f"{len(sample) / tsec:.0f} messages/s, {ttok / tsec:.0f} tokens/s; "
              f"probabilities equal to the compiled build: {same}/{len(sample)}")

        print("tokenizer speed (test part, parsed once):")
        tokenizer_speed(test_rows, parse, opts)
        print("hostile cases (compiled tokenizer):")
        hostile(parse, opts)

        if not args.no_others:
            v, s, sec = run_bogofilter(train_rows, test_rows, tmp)
            report("bogofilter (defaults)", v, s, sec, len(test_rows))
            v, s, sec = run_spamprobe(train_rows, test_rows, tmp)
            report("spamprobe (defaults)", v, s, sec, len(test_rows))
        database.close()
    return 0


if __name__ == "__main__":
    os.environ.pop("PORTCULLIS_CONFIG", None)
    sys.exit(main())
