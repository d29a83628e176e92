"""The SMTP process's group commit: many sessions, few directory fsyncs."""

from __future__ import annotations

import asyncio

from core import spool as spool_mod
from core.smtp.server import Committer
from core.spool import Envelope, Spool, new_qid


def _envelope() -> Envelope:
    return Envelope(qid=new_qid(), sender="s@example.net",
                    recipients=["r@example.com"])


class HalfBroken(Spool):
    """Every message whose qid ends in an even digit fails to write."""

    def _write_tmp(self, envelope, data):
        if envelope.qid[-1] in "02468ACE":
            raise OSError(28, "No space left on device")
        return super()._write_tmp(envelope, data)


def test_concurrent_submits_are_stored_in_few_batches(tmp_path, monkeypatch):
    syncs = []
    real = spool_mod.fsync_dir
    monkeypatch.setattr(spool_mod, "fsync_dir",
                        lambda path: (syncs.append(path), real(path)))
    store = Spool(tmp_path)

    async def main() -> list[Envelope]:
        committer = Committer(store, asyncio.get_running_loop())
        envelopes = [_envelope() for _ in range(50)]
        await asyncio.gather(*(committer.submit(env, b"Subject: x\r\n\r\nb\r\n")
                               for env in envelopes))
        await asyncio.to_thread(committer.close)
        return envelopes

    envelopes = asyncio.run(main())
    assert sorted(store.list("incoming")) == sorted(e.qid for e in envelopes)
    assert 1 <= len(syncs) < 50  # one directory fsync per batch, not per message


def test_a_failed_write_fails_only_its_own_message(tmp_path):
    store = HalfBroken(tmp_path)

    async def main() -> list[object]:
        committer = Committer(store, asyncio.get_running_loop())
        envelopes = [_envelope() for _ in range(20)]
        results = await asyncio.gather(
            *(committer.submit(env, b"Subject: x\r\n\r\nb\r\n") for env in envelopes),
            return_exceptions=True)
        await asyncio.to_thread(committer.close)
        return list(zip(envelopes, results))

    for env, result in asyncio.run(main()):
        failed = env.qid[-1] in "02468ACE"
        assert isinstance(result, OSError) == failed
    stored = set(store.list("incoming"))
    assert all(q[-1] not in "02468ACE" for q in stored)
    assert not list((store.root / "tmp").iterdir())
