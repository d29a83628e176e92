"""core.mime.parse speed over the dev corpus (one core), and what it found.

    .venv/bin/python bench/mime_parse.py [--rounds 3]

Prints messages/s and MB/s of the best round, the slowest messages, and how
many messages carry each defect code or were marked malformed.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.mime import parse  # noqa: E402
from tests.support import paths  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    files = sorted((paths.CORPUS / "dev").glob("*/*.eml"))
    datas = [path.read_bytes() for path in files]
    total = sum(map(len, datas))
    print(f"{len(datas)} messages, {total / 1e6:.1f} MB")

    best = float("inf")
    for _ in range(args.rounds):
        started = time.perf_counter()
        results = [parse(data) for data in datas]
        best = min(best, time.perf_counter() - started)
    print(f"parse: {len(datas) / best:,.0f} messages/s, {total / best / 1e6:.1f} MB/s "
          f"({best:.2f} s per pass, best of {args.rounds})")

    slow = []
    for path, data in zip(files, datas, strict=True):
        started = time.perf_counter()
        parse(data)
        slow.append((time.perf_counter() - started, len(data), path.name))
    slow.sort(reverse=True)
    for took, size, name in slow[:3]:
        print(f"slowest: {took * 1000:.1f} ms {size:,} bytes {name}")

    malformed = collections.Counter(m.malformed_reason for m in results if m.malformed)
    codes: collections.Counter = collections.Counter()
    for parsed in results:
        for code in {d.split(":")[0].split(" (")[0] for d in parsed.defects}:
            codes[code] += 1
    print(f"malformed: {sum(malformed.values())} {dict(malformed)}")
    print("messages per defect code:", dict(codes.most_common()))


if __name__ == "__main__":
    main()
