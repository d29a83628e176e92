"""Nothing accepted is lost: kill -9 and SIGTERM against the whole gateway.

Once the gateway has answered 250 the message must reach the downstream
sooner or later, whatever happens to the gateway's processes in between
(at least once: a crash in the middle of a relay may send it twice).
"""

from __future__ import annotations

import os
import signal
import smtplib
import time
from pathlib import Path

import pytest

from tests.support.gateway import Gateway
from tests.support.sink import Sink


@pytest.fixture(scope="module")
def sink(tmp_path_factory):
    server = Sink(tmp_path_factory.mktemp("sink")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, sink, dns_server):
    # No clamd here: scanning is not what these tests are about.
    gw = Gateway(tmp_path_factory.mktemp("gateway"), sink.address,
                 dns_port=dns_server.port, bayes_enabled=False)
    yield gw
    gw.kill9()


@pytest.fixture
def running(gateway, sink):
    sink.set_rules()
    if gateway.proc is None:
        gateway.start()
    return gateway


def _message(subject: str) -> bytes:
    return (f"From: <alice@example.net>\r\nTo: <user@example.com>\r\n"
            f"Subject: {subject}\r\n\r\nbody of {subject}\r\n").encode()


def _subjects(sink: Sink, prefix: str) -> set[str]:
    found = set()
    for tx in sink.transactions():
        for subject in tx.header("Subject"):
            if subject.startswith(prefix):
                found.add(subject)
    return found


def test_message_survives_kill9_between_250_and_delivery(running, sink):
    sink.set_rules(fail_first=10**6, fail_reply="451 4.3.0 held for the test")

    qid = running.send("alice@example.net", ["user@example.com"],
                       _message("durable-held"))
    assert running.wait_log(qid, "event=deferred")
    running.kill9()

    sink.set_rules()
    running.start()

    found = sink.wait_for(lambda tx: qid.encode() in tx.data, timeout=30)
    assert len(found) >= 1
    assert found[0].header("Subject") == ["durable-held"]
    assert running.wait_empty()


def test_burst_then_kill9_loses_nothing(running, sink):
    sent = []
    for number in range(30):
        subject = f"burst-{number}"
        running.send("alice@example.net", ["user@example.com"], _message(subject))
        sent.append(subject)
    running.kill9()  # some are in incoming, filtering, deliver or sending

    running.start()

    deadline = time.monotonic() + 30
    while _subjects(sink, "burst-") != set(sent) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _subjects(sink, "burst-") == set(sent)
    assert running.wait_empty()


def test_sigterm_drains_open_transaction(running, sink):
    client = smtplib.SMTP("127.0.0.1", running.port_in, timeout=30)
    client.ehlo("client.example.net")
    client.mail("alice@example.net")
    client.rcpt("user@example.com")

    running.proc.send_signal(signal.SIGTERM)
    code, _text = client.data(_message("drained"))
    client.close()

    assert code == 250
    assert running.proc.wait(60) == 0
    running.proc = None
    running.start()
    assert sink.wait_for(lambda tx: tx.header("Subject") == ["drained"])
    assert running.wait_empty()


def _child_pid(gateway: Gateway, name: str) -> int:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            comm = Path(f"/proc/{entry}/comm").read_text().strip()
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if comm == name and int(stat[2]) == gateway.proc.pid:
            return int(entry)
    raise AssertionError(f"no process {name} in the gateway's group")


def test_crashed_child_is_restarted(running, sink):
    os.kill(_child_pid(running, "pc-delivery"), signal.SIGKILL)

    qid = running.send("alice@example.net", ["user@example.com"],
                       _message("after-crash"))

    assert sink.wait_for(lambda tx: qid.encode() in tx.data, timeout=30)
    assert running.wait_log("", "event=child_died name=delivery")


def test_sweep_puts_back_what_a_dead_worker_left(tmp_path, monkeypatch):
    from core import config, runner
    from core.spool import Envelope, Spool, new_qid

    settings = config.load(environ={}, overrides={"data_dir": str(tmp_path)})
    spool = Spool(tmp_path)
    env = Envelope(qid=new_qid(), sender="a@example.net",
                   recipients=["u@example.com"])
    spool.store_new(env, b"Subject: left\r\n\r\nbody\r\n")
    assert spool.claim(env.qid, "incoming", "filtering")

    runner.Supervisor(settings).sweep()
    assert spool.list("filtering") == [env.qid]  # young: a live worker's

    monkeypatch.setattr(runner, "ORPHAN_AGE", -1.0)
    runner.Supervisor(settings).sweep()
    assert spool.list("incoming") == [env.qid]


def test_sweep_after_a_worker_died_takes_back_only_unheld_claims(
        tmp_path, monkeypatch):
    """A dead worker's claims come back at once; a live worker's stay."""
    from core import config, runner
    from core.spool import Envelope, Spool, new_qid

    settings = config.load(environ={}, overrides={"data_dir": str(tmp_path)})
    spool = Spool(tmp_path)
    qids = []
    for _ in range(2):
        env = Envelope(qid=new_qid(), sender="a@example.net",
                       recipients=["u@example.com"])
        spool.store_new(env, b"Subject: left\r\n\r\nbody\r\n")
        assert spool.claim(env.qid, "incoming", "filtering")
        qids.append(env.qid)
    live, dead = qids
    held = spool.hold("filtering", live)
    assert held is not None
    monkeypatch.setattr(runner, "ORPHAN_GRACE", -1.0)

    runner.Supervisor(settings).sweep()  # the periodic sweep waits ORPHAN_AGE
    assert sorted(spool.list("filtering")) == sorted(qids)

    runner.Supervisor(settings).sweep(after_death=True)
    assert spool.list("filtering") == [live]
    assert spool.list("incoming") == [dead]

    spool.let_go(held)
    runner.Supervisor(settings).sweep(after_death=True)
    assert spool.list("filtering") == []


def test_worker_holds_its_claims_while_it_works(tmp_path):
    """The lock that marks a claim as live is taken and let go by the worker."""
    from core import config
    from core.pipeline import FilterWorker
    from core.spool import Envelope, new_qid

    settings = config.load(environ={}, overrides={
        "data_dir": str(tmp_path), "virus_scan": False, "bayes_enabled": False})
    worker = FilterWorker(settings)
    env = Envelope(qid=new_qid(), sender="a@example.net",
                   recipients=["u@example.com"])
    worker.spool.store_new(env, b"Subject: s\r\n\r\nbody\r\n")
    seen = []
    start = worker._start

    def watching(qid, batch):
        seen.append(worker.spool.unheld("filtering", qid))
        return start(qid, batch)

    worker._start = watching
    assert worker.run_once() == 1
    assert seen == [False]  # held while it was being filtered
    assert worker._holds == {}
    assert worker.spool.list("deliver") == [env.qid]


def test_second_gateway_on_one_data_dir_refuses_to_start(tmp_path):
    """Two gateways on one spool would recover and deliver each other's mail."""
    import subprocess
    import sys

    from core import config
    from core.runner import lock_data_dir

    settings = config.load(environ={}, overrides={"data_dir": str(tmp_path)})
    held = lock_data_dir(settings)
    assert held is not None
    conf = tmp_path / "portcullis.conf"
    conf.write_text(f'data_dir = "{tmp_path}"\nweb_listen = ""\n'
                    'smtp_listen_in = "127.0.0.1:1"\n')
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "core.runner", "--config", str(conf)],
                          capture_output=True, text=True, timeout=60, env=env,
                          cwd=str(config.Path(__file__).resolve().parents[1]))
    held.close()
    assert done.returncode == 1
    assert "another gateway is running" in done.stderr


def test_busy_port_stops_start_with_a_message(tmp_path):
    """A listener that cannot bind must not become a restart loop."""
    import socket
    import subprocess
    import sys

    from core import config

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        conf = tmp_path / "portcullis.conf"
        conf.write_text(f'data_dir = "{tmp_path}"\nweb_listen = ""\n'
                        f'smtp_listen_in = "127.0.0.1:{port}"\n'
                        'smtp_listen_out = ""\nvirus_scan = false\n')
        done = subprocess.run(
            [sys.executable, "-m", "core.runner", "--config", str(conf)],
            capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"},
            cwd=str(config.Path(__file__).resolve().parents[1]))

    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port} (smtp_listen_in)" in done.stderr
    assert "set smtp_listen_in" in done.stderr
    assert "portcullis: smtp in" not in done.stdout  # no banner claiming it


def test_children_end_when_the_supervisor_is_killed(tmp_path, sink, dns_server):
    """kill -9 of the supervisor alone: its children drain and exit too."""
    gw = Gateway(tmp_path, sink.address, dns_port=dns_server.port,
                 bayes_enabled=False, virus_scan=False)
    gw.start()
    try:
        children = [int(entry) for entry in os.listdir("/proc") if entry.isdigit()
                    and _parent(int(entry)) == gw.proc.pid]
        assert children
        os.kill(gw.proc.pid, signal.SIGKILL)
        gw.proc.wait(10)
        gw.proc = None

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(_exists(p) for p in children):
            time.sleep(0.2)
        assert not any(_exists(p) for p in children)

        gw.start()  # the data_dir lock went with them
    finally:
        gw.kill9()


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])


def _exists(pid: int) -> bool:
    # A child that exited but is not reaped yet is a zombie: gone for us.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"
