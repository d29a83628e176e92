"""``portcullis policy``: show and change the SMTP-time checks from the CLI.

The settings and lists live in the database (core/policy/store.py); a running
gateway picks changes up within ``policy_refresh`` seconds.
"""

from __future__ import annotations

import json

from core.policy import store


def add_parser(sub) -> None:
    p = sub.add_parser(
        "policy", help="SMTP-time checks: SPF, DNSBL, greylisting, lists")
    psub = p.add_subparsers(dest="action", metavar="ACTION")
    psub.required = True
    psub.add_parser("show", help="every policy setting, its value and meaning")
    q = psub.add_parser("set", help="change one setting (JSON or plain text value)")
    q.add_argument("key")
    q.add_argument("value")
    q = psub.add_parser("reset", help="put one setting back to its default")
    q.add_argument("key")
    q = psub.add_parser("list", help="entries of the block and welcome lists")
    q.add_argument("name", nargs="?", choices=store.LIST_NAMES)
    q = psub.add_parser("add", help="add a list entry")
    q.add_argument("name", choices=store.LIST_NAMES)
    q.add_argument("kind", choices=store.LIST_KINDS)
    q.add_argument("pattern", help="address, domain, *.domain, /regex/ or network")
    q.add_argument("--comment", default="")
    q = psub.add_parser("remove", help="remove a list entry by id")
    q.add_argument("id", type=int)
    p.set_defaults(func=cmd_policy)


def _value(text: str):
    # "true", "3", '["a", "b"]' read as JSON; anything else is a string.
    try:
        return json.loads(text)
    except ValueError:
        return text


def cmd_policy(args) -> int:
    """Show or change the SMTP-time policy stored in the database."""
    from core.cli import CliError, _open_db, _settings

    _open_db(_settings(args))
    try:
        if args.action == "show":
            current = store.load().values
            for key in store.DEFAULTS:
                mark = "" if current[key] == store.DEFAULTS[key] else "  (changed)"
                print(f"{key} = {json.dumps(current[key])}{mark}")
                if store.HELP.get(key):
                    print(f"    {store.HELP[key]}")
        elif args.action == "set":
            if args.key not in store.DEFAULTS:
                raise CliError(f"no policy setting {args.key!r}; "
                               "'portcullis policy show' lists them")
            stored = store.set_setting(args.key, _value(args.value))
            print(f"{args.key} = {json.dumps(stored)}")
        elif args.action == "reset":
            store.reset_setting(args.key)
            print(f"{args.key} = {json.dumps(store.DEFAULTS.get(args.key))} (default)")
        elif args.action == "list":
            entries = list(store.list_entries(args.name))
            if not entries:
                print(f"no entries in {args.name or 'the block and welcome lists'}; "
                      "add one with 'portcullis policy add'")
            for entry in entries:
                print(f"{entry.id}\t{entry.list_name}\t{entry.kind}\t{entry.pattern}"
                      f"\t{entry.comment}")
        elif args.action == "add":
            entry = store.add_list_entry(args.name, args.kind, args.pattern,
                                         args.comment)
            print(f"added {entry.id}: {entry.list_name} {entry.kind} {entry.pattern}")
        elif args.action == "remove":
            if not store.remove_list_entry(args.id):
                raise CliError(f"no list entry {args.id}; 'portcullis policy list' "
                               "shows the ids")
            print(f"removed {args.id}")
    except store.PolicyError as exc:
        raise CliError(str(exc)) from None
    return 0
