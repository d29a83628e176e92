"""SMTP transactions per second with every SMTP-time check on, against all off.

One run, one process: the SMTP server with the real policy on a loopback
port, the loopback test DNS server answering (SPF records, two DNSBL zones
that list nobody), an aiosmtpd downstream for receiver verification, and a
fresh SQLite database. Client threads present distinct client addresses
with the PROXY protocol and send small messages; with greylisting on, a
first round is deferred, the policy clock is moved past the delay and the
measured round is accepted.

    .venv/bin/python bench/smtp_policy.py [--connections 8] [--messages 50]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiosmtpd.controller import Controller  # noqa: E402

from core import dns as portdns  # noqa: E402
from core.policy import store  # noqa: E402
from tests.support import dnsserver  # noqa: E402
from tests.support.policyharness import PolicyGateway  # noqa: E402
from tests.support.system import free_port  # noqa: E402

ZONE = """
bench.example.   TXT  "v=spf1 ip4:198.18.0.0/15 -all"
helo.bench.example. TXT "v=spf1 ip4:198.18.0.0/15 -all"
"""

BODY = b"From: <news@bench.example>\r\nSubject: bench\r\n\r\nbody\r\n"

ALL_ON = {
    "routing.enabled": True, "lists.enabled": True, "helo.enabled": True,
    "limits.max_connections": 100, "limits.connection_rate": 100000,
    "limits.message_rate": 100000, "limits.max_recipients": 100,
    "dnsbl.enabled": True, "dnsbl.zones": ["bl1.bench.example=127.0.0.[2..11]",
                                           "bl2.bench.example*2"],
    "spf.enabled": True, "greylist.enabled": True, "callout.enabled": True,
}
ALL_OFF = {
    "routing.enabled": False, "lists.enabled": False, "helo.enabled": False,
    "limits.max_connections": 0, "limits.connection_rate": 0,
    "limits.message_rate": 0, "limits.max_recipients": 0,
    "dnsbl.enabled": False, "spf.enabled": False, "greylist.enabled": False,
    "callout.enabled": False,
}


class Everyone:
    async def handle_RCPT(self, server, session, envelope, address, options):
        return "250 2.1.5 ok"


def client_ip(round_no: int, conn: int) -> str:
    return f"198.18.{round_no}.{conn + 1}"


def run_round(gw, connections: int, messages: int, round_no: int) -> tuple[int, int]:
    """(accepted, refused or deferred) transactions over all connections."""
    counts = [0, 0]
    lock = threading.Lock()

    def worker(conn: int) -> None:
        client = gw.client(client_ip(round_no, conn))
        ok = bad = 0
        try:
            for number in range(messages):
                codes = client.transaction(
                    f"news{conn}@bench.example", f"user{number}@example.com",
                    helo="helo.bench.example",
                    body=BODY)
                if codes[-1] == 250:
                    ok += 1
                else:
                    bad += 1
        finally:
            client.close()
        with lock:
            counts[0] += ok
            counts[1] += bad

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counts[0], counts[1]


def timed(gw, connections, messages, round_no) -> tuple[float, int, int]:
    started = time.perf_counter()
    ok, bad = run_round(gw, connections, messages, round_no)
    return time.perf_counter() - started, ok, bad


def each_alone(gw, args) -> list[tuple[str, float]]:
    """(check, tx/s) with only that check on; fresh client networks each."""
    figures = []
    for number, name in enumerate(("routing", "lists", "helo", "limits", "dnsbl",
                                   "spf", "callout", "greylist"), start=10):
        for key, value in ALL_OFF.items():
            store.set_setting(key, value)
        for key, value in ALL_ON.items():
            if key.startswith(name + "."):
                store.set_setting(key, value)
        gw.policy.reload()
        portdns.clear_cache()
        if name == "greylist":
            run_round(gw, args.connections, args.messages, number)
            gw.clock.advance(400)
        seconds, ok, _ = timed(gw, args.connections, args.messages, number)
        figures.append((name, ok / seconds))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--each", action="store_true",
                        help="also measure each check alone")
    args = parser.parse_args()

    dns = dnsserver.start()
    dns.load_text(ZONE)
    downstream_port = free_port()
    downstream = Controller(Everyone(), hostname="127.0.0.1", port=downstream_port,
                            server_hostname="downstream.test")
    downstream.start()
    work = Path(tempfile.mkdtemp(prefix="bench-policy-"))
    gw = PolicyGateway(work, dns_servers=f"127.0.0.1:{dns.port}",
                       downstream=f"127.0.0.1:{downstream_port}",
                       hostname="mx.example.com")
    total = args.connections * args.messages
    try:
        for key, value in ALL_OFF.items():
            store.set_setting(key, value)
        gw.policy.reload()
        off_seconds, off_ok, _ = timed(gw, args.connections, args.messages, 1)

        for key, value in ALL_ON.items():
            store.set_setting(key, value)
        gw.policy.reload()
        portdns.clear_cache()
        # Greylisting: the first round is deferred; retry after the delay.
        run_round(gw, args.connections, args.messages, 2)
        gw.clock.advance(400)
        on_seconds, on_ok, on_bad = timed(gw, args.connections, args.messages, 2)
        alone = each_alone(gw, args) if args.each else []
    finally:
        gw.close()
        downstream.stop()

    off_rate = off_ok / off_seconds
    on_rate = on_ok / on_seconds
    print(f"transactions per run: {total} over {args.connections} connections")
    print(f"all checks off: {off_ok} accepted in {off_seconds:.2f} s = "
          f"{off_rate:.0f} tx/s")
    print(f"all checks on:  {on_ok} accepted ({on_bad} not) in {on_seconds:.2f} s = "
          f"{on_rate:.0f} tx/s")
    print(f"ratio on/off: {on_rate / off_rate:.2f}")
    for name, rate in alone:
        print(f"  {name:<9} alone: {rate:.0f} tx/s ({rate / off_rate:.2f} of off)")


if __name__ == "__main__":
    main()
