"""The spool's own guarantees: envelope round trip, group directory sync."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from core import spool as spool_mod
from core.spool import Envelope, GroupSync, RecipientState, Spool, new_qid


def test_envelope_json_round_trip():
    env = Envelope(qid=new_qid(), sender="", recipients=["a@example.com"],
                   mail_options=["BODY=8BITMIME"], smtp_notes=["dnsbl"])
    env.rcpt_state = {"a@example.com": RecipientState("deferred", 2, "451 later")}
    assert Envelope.from_json(env.to_json()) == env


def test_concurrent_stores_share_directory_syncs(tmp_path, monkeypatch):
    """Stores from many threads each wait for a directory fsync that started
    after their rename, and far fewer fsyncs run than there are stores."""
    calls: list[set[str]] = []
    real = spool_mod.fsync_dir
    store = Spool(tmp_path)
    incoming = store.root / "incoming"

    def counting(path: Path) -> None:
        # What the fsync covers: the names present when it starts.
        calls.append(set(os.listdir(path)))
        real(path)

    monkeypatch.setattr(spool_mod, "fsync_dir", counting)
    covered: dict[str, bool] = {}

    def one(number: int) -> None:
        env = Envelope(qid=new_qid(), sender="s@example.net",
                       recipients=["r@example.com"])
        store.store_new(env, b"Subject: %d\r\n\r\nbody\r\n" % number)
        # store_new has returned: some fsync that started after the rename
        # must have seen the file.
        covered[env.qid] = any(env.qid in names for names in calls)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert len(covered) == 40 and all(covered.values())
    assert sorted(store.list("incoming")) == sorted(covered)
    assert len(calls) <= 40
    assert set().union(*calls) <= set(os.listdir(incoming))


def test_group_sync_runs_one_fsync_at_a_time(tmp_path, monkeypatch):
    running = []
    overlap = []

    def slow(path: Path) -> None:
        running.append(path)
        if len(running) > 1:
            overlap.append(True)
        threading.Event().wait(0.01)
        running.pop()

    monkeypatch.setattr(spool_mod, "fsync_dir", slow)
    group = GroupSync(tmp_path)
    threads = [threading.Thread(target=group.sync) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not overlap
    assert group._done == 20
