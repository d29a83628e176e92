"""VirusScanner speed against a throwaway clamd (test signatures only).

    .venv/bin/python bench/virus_scan.py [--workers 2]

Scans the whole dev corpus three ways: the raw message only, raw plus the
leaves the scanner picks (what the pipeline does), and parse + scan in
``--workers`` processes at once (the filter workers of a 2-core box).
The clamd here has two signatures, so these figures are the protocol and
parsing cost; a production signature set adds clamd's own matching time.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import config  # noqa: E402
from core.filters.virus import VirusScanner  # noqa: E402
from core.mime import parse  # noqa: E402
from tests.support import paths  # noqa: E402
from tests.support.clamd import Clamd  # noqa: E402

_SCANNER: VirusScanner | None = None


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _init(setting: str) -> None:
    global _SCANNER
    _SCANNER = VirusScanner(config.load().replace(clamd=setting))


def _work(data: bytes) -> int:
    result = _SCANNER.scan(data, parse(data))
    return result.streams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    program = shutil.which("clamd") or "/usr/sbin/clamd"
    folder = Path(tempfile.mkdtemp(prefix="bench-clamd-"))
    # clamd remembers clean files by hash; every pass here sends the same
    # messages again, real traffic does not.
    daemon = Clamd(program, folder, stream_max=25 * 1024 * 1024,
                   extra=("DisableCache yes",))
    daemon.start()
    try:
        datas = [p.read_bytes() for p in sorted((paths.CORPUS / "dev").glob("*/*.eml"))]
        parsed = [parse(d) for d in datas]
        total = sum(map(len, datas))
        print(f"{len(datas)} messages, {total / 1e6:.1f} MB")
        pid = daemon.process.pid
        count = len(datas)
        for setting in (daemon.setting, daemon.tcp_setting):
            scanner = VirusScanner(config.load().replace(clamd=setting))
            both = list(zip(datas, parsed, strict=True))
            for label, pairs in (("raw only", [(d, None) for d in datas]),
                                 ("raw + leaves", both)):
                clamd_cpu, own_cpu = _cpu(pid), time.process_time()
                started = time.perf_counter()
                streams = sum(scanner.scan(d, p).streams for d, p in pairs)
                took = time.perf_counter() - started
                clamd_cpu = _cpu(pid) - clamd_cpu
                own_cpu = time.process_time() - own_cpu
                print(f"{setting.split(':')[0]:>9} {label:>12}: "
                      f"{count / took:,.0f} msg/s wall, "
                      f"clamd {clamd_cpu / count * 1000:.2f} ms CPU/msg, "
                      f"client {own_cpu / count * 1000:.2f} ms CPU/msg, "
                      f"{streams / count:.2f} streams/msg")

        with multiprocessing.Pool(args.workers, _init, (daemon.setting,)) as pool:
            pool.map(_work, datas[:50])
            clamd_cpu = _cpu(pid)
            started = time.perf_counter()
            pool.map(_work, datas, chunksize=32)
            took = time.perf_counter() - started
            clamd_cpu = _cpu(pid) - clamd_cpu
        print(f"parse + scan, {args.workers} processes: {count / took:,.0f} msg/s "
              f"wall, clamd {clamd_cpu / count * 1000:.2f} ms CPU/msg "
              f"(load average now {os.getloadavg()[0]:.1f})")
    finally:
        daemon.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
