"""The ``portcullis`` command.

Every subcommand loads the settings (``--config FILE``, else the usual
places, see core/config.py). Bad input prints one line saying what to do
and exits with 2; so do configuration errors.

``track`` shows, when the search finds one message, why the filter judged
it so: the Bayes probability (or why there is none), the clues that weighed
most and the URI blocklist hits. ``quarantine learn`` is the web admin's
"Spam" / "Not spam" button.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import logging
import os
import sys
from pathlib import Path

from core import config as _config

log = logging.getLogger(__name__)

EXIT_USAGE = 2
# The longest expiry age the Bayes store takes.
MAX_DAYS = _config.MAX_EXPIRE_DAYS
TOKEN_WEIGHT_NOTE = (
    "The logistic weight is fitted only on messages trained on or near an "
    "error\n(misjudged or nearly so), so most tokens have weight 0.")


class CliError(Exception):
    """Bad input or state; printed as one line, exit code 2."""


# region helpers


def _settings(args) -> _config.Settings:
    return _config.load(args.config)


def _open_db(settings, need_schema: bool = True):
    from core import db

    url = settings.database_url
    if need_schema and url.startswith("sqlite:///") \
            and not Path(url[len("sqlite:///"):]).exists():
        # Opening would create an empty database here: a second gateway
        # nobody meant to make, usually from running in the wrong folder.
        where = ("no config file was found" if settings.source == "defaults"
                 else f"settings from {settings.source}")
        raise CliError(f"no database at {url[len('sqlite:///'):]} ({where}); run "
                       "from the gateway's folder, give --config FILE, or run "
                       "'portcullis init' to set up a new gateway here")
    database = db.open_database(url)
    if need_schema:
        missing = db.pending(database)
        if missing:
            raise CliError(f"the database {settings.database_url} is not set up "
                           f"(missing {', '.join(missing)}); run 'portcullis init'")
    return database


def _read_password_file(path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read password file {path}: {exc.strerror}") from None
    lines = text.splitlines()
    password = lines[0] if lines else ""
    if not password:
        raise CliError(f"password file {path} is empty; put the password on its "
                       "first line")
    return password


def _ask_password(prompt_name: str) -> str:
    first = getpass.getpass(f"Password for {prompt_name}: ")
    second = getpass.getpass("Same password again: ")
    if first != second:
        raise CliError("the two passwords differ; run the command again")
    return first


def _password(args, username: str) -> tuple[str, bool]:
    """(password, generated?) from --password-file, a prompt, or generated."""
    from core.users import generate_password

    if args.password_file:
        return _read_password_file(args.password_file), False
    if getattr(args, "generate_password", False) or not sys.stdin.isatty():
        return generate_password(), True
    return _ask_password(username), False


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _table(rows: list[list[str]], headers: list[str]) -> None:
    from core.logsetup import scrub

    cells = [[scrub(c, 60) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    print(line.rstrip())
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def _when(value) -> str:
    if value is None:
        return "-"
    return value.strftime("%Y-%m-%d %H:%M:%S") if hasattr(value, "strftime") \
        else str(value)[:19]


# endregion

# region init, run, config


def cmd_init(args) -> int:
    """Create data dir, queue, database, signing key and the first admin."""
    from core import db
    from core.models import AdminUser
    from core.spool import Spool
    from core.users import UserError, check_username, create_user, secret_key

    settings = _settings(args)
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o750)
    Spool(data_dir)

    database = db.open_database(settings.database_url)
    ran = db.migrate(database)
    key_file = data_dir / "secret_key"
    had_key = key_file.exists()
    secret_key(data_dir, settings.secret_key)
    if not settings.secret_key and not had_key:
        print(f"Made the session signing key {key_file} (mode 0600).")
    if ran:
        print(f"Database {settings.database_url}: applied {', '.join(ran)}.")

    if AdminUser.select().exists():
        if args.if_needed:
            return 0
        names = ", ".join(u.username for u in AdminUser.select().limit(5))
        print(f"Already set up: admin accounts exist ({names}). Use 'portcullis "
              "user add' or 'portcullis user passwd' to change them.")
        return 0

    try:
        username = check_username(args.admin)
        password, generated = _password(args, username)
        create_user(username, password)
    except UserError as exc:
        raise CliError(str(exc)) from None
    print(f"Created admin {username!r}.")
    if generated:
        # Shown this once; only its hash is stored.
        print(f"Password (shown only now, write it down): {password}")
    host, port = settings.web_listen
    print(f"Log in at http://{host if ':' not in host else '[' + host + ']'}:{port}/")
    return 0


def cmd_run(args) -> int:
    """Start the whole gateway in the foreground."""
    settings = _settings(args)
    from core import logsetup

    logsetup.configure(settings.log_level, settings.log_file)
    from core import runner

    result = runner.run(settings)
    return int(result or 0)


def cmd_config(args) -> int:
    """Print the effective settings, then the table of all keys."""
    settings = _settings(args)
    print(f"# effective settings (source: {settings.source})")
    for key in _config.SCHEMA:
        value = getattr(settings, key.name)
        if key.name == "secret_key" and value:
            value = "(set, not shown)"
        elif key.name == "database_url":
            value = _hide_password(value)
        print(f"{key.name} = {_show(value)}")
    print()
    print(_config.describe())
    return 0


def _hide_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if sep and at and ":" in creds:
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


def _show(value) -> str:
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int):
        host, port = value
        # Quoted, as portcullis.conf wants it: the output pastes into it.
        if not host:
            return '""'
        return json.dumps(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    if isinstance(value, tuple):
        return json.dumps([str(v) for v in value])
    if isinstance(value, dict):
        return json.dumps({k: f"{h}:{p}" for k, (h, p) in value.items()})
    if isinstance(value, str):
        return json.dumps(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


# endregion

# region track


def cmd_track(args) -> int:
    """Search the tracking records."""
    from core import stats

    settings = _settings(args)
    _open_db(settings)
    filters = stats.Filters(
        qid=args.qid or "", sender=args.sender or "", rcpt=args.rcpt or "",
        subject=args.subject or "", client_ip=args.ip or "",
        verdict=args.verdict or "", status=args.status or "",
        since=args.since or "", until=args.until or "",
    )
    try:
        page = stats.search(filters, 1, args.limit)
    except stats.SearchError as exc:
        raise CliError(str(exc)) from None

    if args.json:
        _print_json({"total": page.total, "limit": page.per_page,
                     "messages": [_with_reasons(stats.message_dict(m), m)
                                  for m in page.items]})
        return 0
    rows = []
    for msg in page.items:
        rcpts = ", ".join(f"{r.address}:{r.status}" for r in msg.rcpt_list)
        rows.append([_when(msg.received_at), msg.qid, msg.sender or "<>", rcpts,
                     msg.verdict, msg.status, msg.subject])
    _table(rows, ["received(UTC)", "qid", "sender", "recipients", "verdict",
                  "status", "subject"])
    shown = len(page.items)
    if page.total > shown:
        if args.limit >= stats.MAX_PAGE_SIZE:
            hint = (f"; at most {stats.MAX_PAGE_SIZE} at a time, narrow with "
                    "--since/--until")
        else:
            hint = (f"; use --limit for more (at most {stats.MAX_PAGE_SIZE}) or "
                    "narrow with --since/--until")
        print(f"({shown} of {page.total} shown{hint})")
    if page.total == 1 and page.items:
        _print_reasons(page.items[0], settings)
    return 0


def _with_reasons(data: dict, msg) -> dict:
    from core import tracking

    data["bayes_probability"] = msg.bayes_probability
    data["spam_clues"] = tracking.read_clues(msg.spam_clues)
    return data


def _print_reasons(msg, settings) -> None:
    """Why the filter judged one message so, below its table row."""
    from core import tracking
    from core.logsetup import scrub

    clues = tracking.read_clues(msg.spam_clues)
    print()
    if msg.bayes_probability is not None:
        print(f"Bayes probability: {msg.bayes_probability:.4f} "
              f"({tracking.band_label(msg.bayes_probability, settings)})")
    elif clues["note"]:
        print(f"Bayes probability: none ({scrub(clues['note'])})")
    elif msg.spam_clues:
        print("Bayes probability: none")
    elif msg.filtered_at is None:
        print("Bayes probability: not filtered yet")
    else:
        print("Bayes probability: nothing recorded (filtered without the Bayes "
              "filter, or before clues were kept)")
    if clues["bayes"]:
        print("Clues that weighed most (f near 1: spam, near 0: ham):")
        for token, weight in clues["bayes"]:
            leaning = "spam" if weight >= 0.5 else "ham"
            print(f"  {weight:.4f}  {leaning:<4}  {scrub(token, 80)}")
    if clues["uri"]:
        print("URI blocklist hits:")
        for hit in clues["uri"]:
            print(f"  {scrub(hit['test'])}  {scrub(hit['domain'])} in "
                  f"{scrub(hit['zone'])} answered {scrub(hit['answer'])}: "
                  f"{hit['score']:+.1f} points")
    if clues["uri_note"]:
        print(f"URI lookups not all made: {scrub(clues['uri_note'], 500)}")


# endregion

# region quarantine


def cmd_quarantine(args) -> int:
    """List, release, delete or learn from quarantined messages."""
    from core import quarantine
    from core.spool import Spool

    settings = _settings(args)
    _open_db(settings)
    spool = Spool(settings.data_dir)
    by = f"cli:{getpass.getuser()}"

    try:
        if args.action == "list":
            page = quarantine.list_items(args.kind or "", args.state, 1, args.limit)
            if args.json:
                _print_json({"total": page.total,
                             "items": [quarantine.item_dict(i) for i in page.items]})
                return 0
            rows = [[str(i.id), _when(i.created_at), i.message.qid, i.kind,
                     i.state, i.message.sender or "<>", i.message.subject]
                    for i in page.items]
            _table(rows, ["id", "quarantined(UTC)", "qid", "kind", "state", "sender",
                          "subject"])
            _say_left_off(len(page.items), page.total, args)
            return 0
        if args.action == "learn":
            return _quarantine_learn(args, spool, by, settings)

        operation = quarantine.release if args.action == "release" \
            else quarantine.delete
        failed = 0
        for item_id in args.ids:
            try:
                item = operation(spool, item_id, by)
            except quarantine.QuarantineError as exc:
                print(f"item {item_id}: {exc}", file=sys.stderr)
                failed += 1
                continue
            print(f"item {item.id} ({item.message.qid}): {item.state}")
    finally:
        from core import tracking

        tracking.flush()
    return EXIT_USAGE if failed else 0


def _say_left_off(shown: int, total: int, args) -> None:
    """One line under the list when it holds fewer items than there are."""
    from core import stats

    if total <= shown:
        return
    if args.limit < stats.MAX_PAGE_SIZE:
        hint = "--limit N for more"
    elif args.kind:
        hint = f"at most {stats.MAX_PAGE_SIZE} at a time"
    else:
        hint = f"at most {stats.MAX_PAGE_SIZE} at a time; narrow with --kind"
    print(f"({shown} of {total} shown; {hint})")


def _quarantine_learn(args, spool, by: str, settings) -> int:
    """Train-on-error: the same operation as the web admin's buttons."""
    from core import quarantine

    if not (args.spam or args.ham):
        raise CliError("say what the message is: 'portcullis quarantine learn "
                       f"{args.id} --spam' or '... --ham' (not spam)")
    try:
        item = quarantine.learn(spool, args.id, bool(args.spam), by, settings)
    except quarantine.QuarantineError as exc:
        raise CliError(f"item {args.id}: {exc}; see 'portcullis quarantine "
                       "list'") from None
    except _bayes_errors() as exc:
        raise CliError(f"item {args.id}: the Bayes filter could not learn it: "
                       f"{exc}") from None
    what = "spam" if args.spam else "ham (not spam)"
    if item.learned:
        print(f"item {item.id} ({item.message.qid}): learned as {what}")
    else:
        print(f"item {item.id} ({item.message.qid}): already learned as {what}; "
              "nothing changed")
    return 0


# endregion

# region bayes


def _bayes(name: str):
    from core.quarantine import bayes_function

    function = bayes_function(name)
    if function is None:
        raise CliError(f"the Bayes filter has no {name!r} here (core/spam is not "
                       "installed or too old)")
    return function


def cmd_bayes(args) -> int:
    """Train, inspect, dump, restore and expire the Bayes filter."""
    settings = _settings(args)
    _open_db(settings)

    if args.action == "train":
        ham = _message_dir(args.ham, "--ham")
        spam = _message_dir(args.spam, "--spam")
        train = _bayes("train")
        try:
            result = train(ham, spam, progress=not args.quiet, settings=settings)
        except _bayes_errors() as exc:
            raise CliError(str(exc)) from None
        empty = result.pop("nothing_found_under", []) \
            if isinstance(result, dict) else []
        for path in empty:
            print(f"portcullis: no messages found under {path}", file=sys.stderr)
        print(_format_result(result))
        unfitted = result.get("weights_not_fitted", 0) \
            if isinstance(result, dict) else 0
        if unfitted:
            print(f"portcullis: {unfitted} messages came without the other kind: "
                  "their counts were learned, but the 4-gram and logistic weights "
                  "were not fitted to them (one kind alone tips those weights "
                  "over); give ham and spam in one command, 'portcullis bayes "
                  "train --ham DIR --spam DIR'", file=sys.stderr)
    elif args.action == "stats":
        result = _bayes("stats")()
        if args.json:
            _print_json(result if isinstance(result, (dict, list)) else str(result))
        else:
            print(_format_result(result))
    elif args.action == "dump":
        if args.file == "-":
            raise CliError("bayes dump writes a file, not standard output; give "
                           "a file name, such as bayes.dump (./- for a file "
                           "named '-')")
        if Path(args.file).is_dir():
            raise CliError(f"{args.file} is a directory; give the name of the "
                           "file to write, such as "
                           f"{Path(args.file) / 'bayes.dump'}")
        # lexists: a link to nowhere is replaced too, so it counts as there.
        if os.path.lexists(args.file) and not args.force:
            raise CliError(f"{args.file} already exists; give --force to "
                           "overwrite it, or another file name")
        dump = _bayes("dump")
        try:
            dump(args.file)
        except _bayes_errors() as exc:
            raise CliError(f"cannot dump to {args.file}: {exc}") from None
        print(f"Wrote the Bayes database to {args.file}.")
    elif args.action == "restore":
        if args.file == "-":
            raise CliError("bayes restore reads a file, not standard input; give "
                           "the dump's file name (./- for a file named '-')")
        if not Path(args.file).is_file():
            raise CliError(f"{args.file} is not a file; give a file made by "
                           "'portcullis bayes dump'")
        restore = _bayes("restore")
        if args.unchecked:
            from core.spam import store

            restore = functools.partial(store.restore, unchecked=True)
        try:
            result = restore(args.file)
        except _bayes_errors() as exc:
            raise CliError(f"cannot restore from {args.file}: {exc}") from None
        print(f"Restored the Bayes database from {args.file}.")
        print(_format_result(result))
    elif args.action == "expire":
        _bayes_expire(args, settings)
    elif args.action == "token":
        _bayes_token(args)
    return 0


def _bayes_expire(args, settings) -> None:
    """Drop old rare tokens now, as the running gateway does once a day."""
    import peewee

    days = settings.bayes_expire_days if args.days is None else args.days
    if days <= 0:
        print("Expiry is off (bayes_expire_days = 0); give --days N to expire "
              "once anyway.")
        return
    if days > MAX_DAYS:
        raise CliError(f"expiry after {days} days is out of range; give 1 to "
                       f"{MAX_DAYS} days (bayes_expire_days or --days)")
    expire = _bayes("expire")
    try:
        gone = expire(settings.replace(bayes_expire_days=days))
    except peewee.OperationalError as exc:
        raise CliError(f"the token store could not be changed ({exc}); try "
                       "again in a moment") from None
    except _bayes_errors() as exc:
        raise CliError(str(exc)) from None
    print(f"Expired {gone} tokens unseen for {days} days and learned at most "
          "twice.")


def _bayes_token(args) -> None:
    """Counts, f, weight and last day of tokens named as the Why list shows."""
    from core.logsetup import scrub

    try:
        from core.spam import scorer, store, tokeninfo
    except ImportError:
        raise CliError("the Bayes filter is not installed here (core/spam)") from None
    for name in args.text:
        # The tokenizer strips "#" off the ends of words, so a name that
        # starts with one can only be a hash as the Why list writes it.
        if name.strip().startswith("#") \
                and tokeninfo.candidates(name)[0][0] != "hash":
            raise CliError(f"{scrub(name, 60)!r} is not a token hash: after # "
                           "come 16 hex digits (0-9, a-f) as the Why list shows "
                           "them, such as #0123456789abcdef")
    values = store.meta()
    if not store.BayesToken.select().exists():
        raise CliError("the Bayes store is empty (no token learned yet); train it "
                       "with 'portcullis bayes train --ham DIR --spam DIR'")
    infos = tokeninfo.lookup(args.text, values)
    if args.json:
        _print_json(tokeninfo.report(infos, values))
        return

    print(f"Store: {values['nham']} ham and {values['nspam']} spam messages "
          "learned.")
    print(TOKEN_WEIGHT_NOTE)
    for info in infos:
        print(scrub(info.name, 120))
        if not info.matches:
            print("  not in the store")
        for match in info.matches:
            shown = match.as_dict()
            if match.f is None:
                f = "f -"
            elif abs(match.f - 0.5) < scorer.MIN_DISTANCE:
                f = f"f {match.f:.4f} (too near 0.5 to count)"
            else:
                f = f"f {match.f:.4f} ({'spam' if match.f > 0.5 else 'ham'})"
            split = ""
            if match.kind == "pair":
                split = (f"  [pair, prefix {scrub(match.prefix, 60)!r}]"
                         if match.prefix else "  [pair]")
            print(f"  ham {match.ham}  spam {match.spam}  {f}  weight "
                  f"{match.weight:+.4f}  last seen {shown['last_seen']}{split}")


def _bayes_errors() -> tuple[type[Exception], ...]:
    """The exceptions core/spam raises for bad input, plus OS and value errors.

    A database error (such as a lock held too long) is one too: it is shown
    as one line, not a traceback.
    """
    import peewee

    errors: list[type[Exception]] = [OSError, ValueError, peewee.DatabaseError]
    for module, name in (("core.spam.training", "TrainingError"),
                         ("core.spam.store", "StoreError")):
        found = getattr(sys.modules.get(module), name, None)
        if isinstance(found, type) and issubclass(found, Exception):
            errors.append(found)
    return tuple(errors)


def _message_dir(directory: str | None, flag: str) -> list[Path]:
    if not directory:
        return []
    path = Path(directory)
    if not path.exists():
        raise CliError(f"{flag} {directory}: no such file or folder; give a folder "
                       "of messages (one file each, Maildir) or an mbox file")
    return [path]


def _whole_at_least_one(text: str, what: str) -> int:
    """``text`` as a whole number 1 or more, else argparse's error naming ``what``."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number {what}")
    return value


def _expiry_days(text: str) -> int:
    """A --days value: 1 to MAX_DAYS."""
    value = _whole_at_least_one(text, "of days, 1 or more")
    if value > MAX_DAYS:
        raise argparse.ArgumentTypeError(f"{text} days is more than the most "
                                         f"allowed, {MAX_DAYS} (a century)")
    return value


def _row_count(text: str) -> int:
    """A --limit value: how many rows to show, 1 or more."""
    return _whole_at_least_one(text, "1 or more; give how many rows to show, "
                                     "such as --limit 100")


def _format_result(result) -> str:
    if isinstance(result, dict):
        return "\n".join(f"{k}: {v}" for k, v in result.items())
    return str(result)


# endregion

# region users


def cmd_user(args) -> int:
    """Add admins, change passwords, make API tokens."""
    from core import users
    from core.models import AdminUser

    settings = _settings(args)
    _open_db(settings)
    try:
        if args.action == "list":
            rows = [[u.username, u.role, _when(u.created_at), _when(u.last_login_at)]
                    for u in AdminUser.select().order_by(AdminUser.username)]
            _table(rows, ["user", "role", "created(UTC)", "last login(UTC)"])
            return 0
        if args.action == "token":
            token = users.create_token(args.name, args.label or "")
            print(f"API token for {args.name} (shown only now): {token}")
            print("Send it as 'Authorization: Bearer <token>' to /api/v1/.")
            return 0
        users.check_username(args.name)
        if args.action == "passwd":
            users.get_user(args.name)
        password, generated = _password(args, args.name)
        if args.action == "add":
            users.create_user(args.name, password)
            print(f"Created admin {args.name!r}.")
        else:
            users.set_password(args.name, password)
            print(f"Changed the password of {args.name!r}; its sessions are ended.")
        if generated:
            print(f"Password (shown only now, write it down): {password}")
    except users.UserError as exc:
        raise CliError(str(exc)) from None
    return 0


# endregion


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="portcullis", description="Portcullis email security gateway.")
    parser.add_argument("--config", metavar="FILE",
                        help="settings file (TOML); default: $PORTCULLIS_CONFIG, "
                             "./portcullis.conf, /etc/portcullis/portcullis.conf")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def password_options(p):
        p.add_argument("--password-file", metavar="F",
                       help="read the password from the first line of F")
        p.add_argument("--generate-password", action="store_true",
                       help="make a random password and print it once "
                            "(the default when not run from a terminal)")

    p = sub.add_parser("init", help="set up data dir, database, key, first admin")
    p.add_argument("--admin", default="admin", metavar="NAME",
                   help="name of the first admin account (default: admin)")
    password_options(p)
    p.add_argument("--if-needed", action="store_true",
                   help="say nothing when already set up")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("run", help="run the gateway in the foreground")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("config", help="print effective settings and all keys",
                       description="Print the settings in effect (defaults, "
                                   "then the config file, then PORTCULLIS_* "
                                   "variables), then a table of every key with "
                                   "its default and meaning. Takes no options.")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("track", help="search the tracking records")
    p.add_argument("--qid", help="queue id or its beginning")
    p.add_argument("--sender", help="part of the envelope sender")
    p.add_argument("--rcpt", help="part of a recipient address")
    p.add_argument("--subject", help="part of the subject")
    p.add_argument("--ip", help="client IP address or its beginning")
    p.add_argument("--verdict", help="clean, spam, virus, blocked, error, queued")
    p.add_argument("--status", help="queued, delivered, deferred, bounced, "
                                    "quarantined, partial, deleted")
    p.add_argument("--since", help="UTC date/time (2026-01-31, 2026-01-31T08:00) "
                                   "or an age (30m, 2h, 3d)")
    p.add_argument("--until", help="UTC date/time, same forms as --since")
    p.add_argument("--limit", type=_row_count, default=50, metavar="N",
                   help="rows to show, 1 or more (default 50, at most 500)")
    p.add_argument("--json", action="store_true",
                   help="print JSON (with the total found and the limit used)")
    p.set_defaults(func=cmd_track)

    p = sub.add_parser("quarantine",
                       help="list, release, delete or learn from held mail")
    qsub = p.add_subparsers(dest="action", metavar="ACTION")
    qsub.required = True
    q = qsub.add_parser("list", help="list quarantine items")
    q.add_argument("--kind", choices=("spam", "virus", "attachment"),
                   help="only items held for this reason (default: all kinds)")
    q.add_argument("--state", default="held", choices=("held", "released", "deleted"),
                   help="only items in this state (default: held)")
    q.add_argument("--limit", type=_row_count, default=50, metavar="N",
                   help="items to show, newest first, 1 or more (default 50, at "
                        "most 500)")
    q.add_argument("--json", action="store_true",
                   help="print JSON (with the total found)")
    for name, what in (("release", "queue for delivery"), ("delete", "remove")):
        q = qsub.add_parser(name, help=f"{what} items by id")
        q.add_argument("ids", nargs="+", metavar="ID",
                       help="item ids from 'portcullis quarantine list'")
    q = qsub.add_parser("learn", help="teach the Bayes filter that an item is "
                                      "spam or not (as the web admin's buttons)")
    q.add_argument("id", metavar="ID", help="item id from 'portcullis quarantine "
                                            "list'")
    which = q.add_mutually_exclusive_group()
    which.add_argument("--spam", action="store_true", help="it is spam")
    which.add_argument("--ham", action="store_true", help="it is not spam")
    p.set_defaults(func=cmd_quarantine)

    p = sub.add_parser("bayes", help="train and inspect the Bayes filter")
    bsub = p.add_subparsers(dest="action", metavar="ACTION")
    bsub.required = True
    b = bsub.add_parser("train", help="learn from folders of ham and spam")
    b.add_argument("--ham", metavar="DIR",
                   help="good mail: a Maildir, a folder of message files or "
                        "mbox files, or one mbox file")
    b.add_argument("--spam", metavar="DIR",
                   help="spam: a Maildir, a folder of message files or mbox "
                        "files, or one mbox file")
    b.add_argument("--quiet", action="store_true",
                   help="no progress bar (one is shown only when stderr is a "
                        "terminal, never in scripts or logs)")
    b = bsub.add_parser("stats", help="token and message counts")
    b.add_argument("--json", action="store_true", help="print JSON")
    b = bsub.add_parser("dump", help="write the token database to a file",
                        description="Write the whole token store (counts, "
                                    "learned messages, weights) to FILE as "
                                    "gzip-compressed text, for 'portcullis "
                                    "bayes restore'. An existing FILE is kept "
                                    "unless --force is given.")
    b.add_argument("file", metavar="FILE",
                   help="file to write, gzip-compressed; '-' is refused, not "
                        "taken as standard output")
    b.add_argument("--force", action="store_true",
                   help="overwrite FILE if it exists")
    b = bsub.add_parser("restore", help="replace the token database from a dump",
                        description="Replace the whole token store with a dump "
                                    "from 'portcullis bayes dump': everything "
                                    "learned since the dump is lost. A dump cut "
                                    "short, or a file that is no dump, changes "
                                    "nothing.")
    b.add_argument("file", metavar="FILE",
                   help="dump to read, made by 'portcullis bayes dump'; '-' is "
                        "refused, not taken as standard input")
    b.add_argument("--unchecked", action="store_true",
                   help="restore a dump that has no end line (made before dumps "
                        "had one) as it is; only for a dump known to be whole")
    b = bsub.add_parser("expire", help="drop old rare tokens now (the gateway "
                                       "does it once a day)")
    b.add_argument("--days", type=_expiry_days, metavar="N",
                   help="tokens unseen for N days (default: bayes_expire_days)")
    b = bsub.add_parser("token", help="counts of tokens named as in the Why list",
                        description="Counts, f, logistic weight and last day "
                                    "seen of tokens. "
                                    + TOKEN_WEIGHT_NOTE.replace("\n", " "))
    b.add_argument("text", nargs="+", metavar="TEXT",
                   help="a token as shown: free, subject:fastest, "
                        "'please ~1 click', #0123456789abcdef (# and 16 hex "
                        "digits)")
    b.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_bayes)

    from core.policy import commands as policy_commands

    policy_commands.add_parser(sub)

    p = sub.add_parser("user", help="admin accounts")
    usub = p.add_subparsers(dest="action", metavar="ACTION")
    usub.required = True
    u = usub.add_parser("add", help="create an admin account")
    u.add_argument("name", help="name of the new account")
    password_options(u)
    u = usub.add_parser("passwd", help="set a new password")
    u.add_argument("name", help="account whose password to change")
    password_options(u)
    usub.add_parser("list", help="list admin accounts")
    u = usub.add_parser("token", help="make an API token (printed once)")
    u.add_argument("name", help="account the token acts as")
    u.add_argument("--label", help="what the token is for")
    p.set_defaults(func=cmd_user)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "bayes" and args.action == "train" \
            and not (args.ham or args.spam):
        parser.error("bayes train needs --ham DIR and/or --spam DIR")
    try:
        return args.func(args)
    except _config.ConfigError as exc:
        print(f"portcullis: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CliError as exc:
        print(f"portcullis: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (head, less) went away; that is not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as exc:
        # A data dir we may not write, a path through a file: name it, no trace.
        where = f": {exc.filename}" if exc.filename else ""
        print(f"portcullis: {exc.strerror or exc}{where}; check data_dir and the "
              "permissions of the user running portcullis", file=sys.stderr)
        return 1


if __name__ == "__main__":
    # Run as ``python -m core.cli``, this module is __main__; modules that
    # import core.cli (the policy command) must get this one, or its
    # CliError would be another class that main() does not catch.
    sys.modules.setdefault("core.cli", sys.modules[__name__])
    sys.exit(main())
