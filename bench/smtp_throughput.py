"""SMTP front end bench: accepted messages/s and transaction latency.

    .venv/bin/python bench/smtp_throughput.py [--connections 20] [--messages 2000]
        [--size 5000] [--no-fsync] [--reconnect] [--policy] [--no-tracking]

The server runs in its own process (the real SmtpService, spool with fsync
unless --no-fsync, database for tracking); the clients are smtplib in
threads of this process, one connection each, sending ~--size octet messages
until --messages are accepted. A transaction is MAIL FROM to the 250 after
the final dot (with --reconnect: connect to QUIT). Figures go to stdout.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import smtplib
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import config, db  # noqa: E402
from core.spool import Spool  # noqa: E402


def _serve(values: dict, fsync: bool, use_policy: bool, tracking_on: bool, ready,
           stop, cpu) -> None:
    from core import tracking
    from core.smtp.server import build_policy
    from core.smtp.thread import ServiceThread

    if not tracking_on:
        # Measures the cost of the tracking writes (the worker makes them too).
        tracking.received = lambda *args, **kwargs: None

    settings = config.load(environ={}, overrides=values)
    db.migrate(db.open_database(settings.database_url))
    policy = None
    if use_policy:
        import asyncio

        policy = asyncio.run(build_policy(settings))
    smtp = ServiceThread(settings, Spool(settings.data_dir, fsync=fsync), policy)
    smtp.start()
    started = resource.getrusage(resource.RUSAGE_SELF)
    ready.set()
    stop.wait()
    ended = resource.getrusage(resource.RUSAGE_SELF)
    cpu.value = (ended.ru_utime - started.ru_utime
                 + ended.ru_stime - started.ru_stime)
    smtp.stop(5.0)


def _message(size: int, n: int) -> bytes:
    head = (f"From: <bench@example.net>\r\nTo: <user@example.com>\r\n"
            f"Subject: bench {n}\r\nMessage-ID: <bench-{n}@example.net>\r\n\r\n")
    line = "The quick brown fox jumps over the lazy dog, again and again. "
    body = (line + "\r\n") * max(1, (size - len(head)) // (len(line) + 2))
    return (head + body).encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=5000)
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("--reconnect", action="store_true",
                        help="new connection per message")
    parser.add_argument("--no-tracking", action="store_true",
                        help="skip tracking.received, to see what it costs")
    parser.add_argument("--policy", action="store_true",
                        help="run core.policy.build(settings) instead of no policy")
    args = parser.parse_args()

    from tests.support.system import free_port

    folder = tempfile.mkdtemp(prefix="smtp-bench-")
    port = free_port()
    values = {"data_dir": folder, "smtp_listen_in": f"127.0.0.1:{port}",
              "smtp_listen_out": "", "hostname": "mx.example.com",
              "relay_domains": "example.com", "log_level": "warning",
              # Nothing may reach a real resolver; the default checks need none.
              "dns_servers": "127.0.0.1:9"}
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Event(), context.Event()
    cpu = context.Value("d", 0.0)
    server = context.Process(target=_serve, args=(
        values, not args.no_fsync, args.policy, not args.no_tracking, ready, stop, cpu))
    server.start()
    if not ready.wait(60):
        print("server did not start", file=sys.stderr)
        server.kill()
        return 1

    payload = _message(args.size, 0)
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(args.messages))
    lock = threading.Lock()

    def take() -> bool:
        with lock:
            return next(counter, None) is not None

    def client() -> None:
        try:
            connection = None
            while take():
                start = time.perf_counter()
                if connection is None:
                    connection = smtplib.SMTP("127.0.0.1", port, timeout=30)
                    connection.ehlo("bench.example.net")
                    if not args.reconnect:
                        start = time.perf_counter()
                connection.sendmail("bench@example.net", ["user@example.com"],
                                    payload)
                if args.reconnect:
                    connection.quit()
                    connection = None
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
            if connection is not None:
                connection.quit()
        except Exception as error:  # reported with the figures
            with lock:
                errors.append(repr(error))

    threads = [threading.Thread(target=client) for _ in range(args.connections)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    stop.set()
    server.join(30)

    stored = len(os.listdir(Path(folder) / "queue" / "incoming"))
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"connections={args.connections} messages={len(latencies)} "
          f"size={len(payload)} fsync={'off' if args.no_fsync else 'on'} "
          f"reconnect={'yes' if args.reconnect else 'no'} "
          f"policy={'build' if args.policy else 'none'} "
          f"tracking={'off' if args.no_tracking else 'on'}")
    print(f"accepted_per_s={len(latencies) / wall:.0f} wall_s={wall:.2f} "
          f"stored={stored} errors={len(errors)}")
    print(f"server_cpu_ms_per_message={cpu.value * 1000 / max(1, len(latencies)):.2f}"
          f" (user+system, all threads)")
    print(f"transaction_ms p50={statistics.median(latencies) * 1000:.1f} "
          f"p99={p99 * 1000:.1f} max={latencies[-1] * 1000:.1f}")
    for error in errors[:5]:
        print("error:", error)
    return 0 if not errors and stored == len(latencies) else 1


if __name__ == "__main__":
    sys.exit(main())
