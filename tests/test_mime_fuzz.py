"""Property tests: parse never fails, returns UTF-8 clean text, stays quick.

Inputs: random bytes, random MIME-ish token soup, and mutations of a fixed
sample of corpus messages (byte flips, cuts, duplicated and swapped chunks,
inserted MIME syntax). An internal error would show as ``parser error`` in
``malformed_reason``: the wrapper keeps parse from raising, these tests keep
the wrapper from hiding bugs. Seeds are fixed, so a failure reproduces.
"""

from __future__ import annotations

import random
import time

import pytest

from core.mime import add_headers, parse, remove_headers
from tests.support import paths

TOKENS = [b"\r\n", b"\n", b"\r", b"--b", b"--b--", b"--", b"boundary=b", b"; ",
          b"Content-Type: ", b"multipart/mixed", b"message/rfc822", b"text/plain",
          b"text/html", b"Content-Transfer-Encoding: ", b"base64", b"quoted-printable",
          b"x-uuencode", b"begin 644 x\n", b"Content-Disposition: attachment",
          b"filename*0*=utf-8''%41", b"filename*1=b", b'name="', b"=?utf-8?B?",
          b"?=", b"=?x?Q?", b"=3D", b"=", b"From: ", b"a@b.c", b"(", b")", b"<", b">",
          b"\"", b"\\", b"\x00", b"\xff", b"\xc3", b"\t", b" ", b":", b"MZ",
          b"PK\x03\x04",
          b"charset=", b"utf-7", b"+2D0-", b"idna", b"Subject: ",
          b"X-Spam-Flag: NO", b"X-Spam-Status: Yes"]

# A message must parse far below this; it only guards against a hang.
HANG_GUARD = 2.0


def _check(data: bytes) -> None:
    started = time.monotonic()
    parsed = parse(data)
    took = time.monotonic() - started
    assert took < HANG_GUARD, f"parse took {took:.2f} s"
    reason = parsed.malformed_reason
    assert not reason.startswith("parser error"), reason
    for name, value in parsed.headers:
        name.encode("utf-8")
        value.encode("utf-8")
    for address in parsed.from_addresses:
        address.encode("utf-8")
    for defect in parsed.defects:
        defect.encode("utf-8")
    for part in parsed.parts:
        part.filename.encode("utf-8")
        for defect in part.defects:
            defect.encode("utf-8")
        if part.text is not None:
            part.text.encode("utf-8")
    # remove_headers reads the header block as parse does: afterwards no
    # X-Spam-* field is left and every other field is still there.
    cleaned = remove_headers(data, ["X-Spam-*"])
    kept = [n.lower() for n, _ in parse(cleaned).headers]
    assert not [n for n in kept if n.startswith("x-spam-")]
    assert kept == [n.lower() for n, _ in parsed.headers
                    if not n.lower().startswith("x-spam-")]
    edited = add_headers(cleaned, [("X-Spam-Flag", "NO")])
    assert edited.startswith(b"X-Spam-Flag: NO")


def _soup(rng: random.Random) -> bytes:
    return b"".join(rng.choice(TOKENS) if rng.random() < 0.7
                    else bytes(rng.randrange(256) for _ in range(rng.randrange(8)))
                    for _ in range(rng.randrange(1, 400)))


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randrange(1, 12)):
        if not buf:
            buf.extend(rng.choice(TOKENS))
        op = rng.randrange(6)
        pos = rng.randrange(len(buf))
        if op == 0:
            buf[pos] = rng.randrange(256)
        elif op == 1:
            del buf[pos:pos + rng.randrange(1, 200)]
        elif op == 2:
            buf[pos:pos] = rng.choice(TOKENS)
        elif op == 3:
            chunk = buf[pos:pos + rng.randrange(1, 400)]
            buf[pos:pos] = chunk * rng.randrange(1, 5)
        elif op == 4:
            other = rng.randrange(len(buf))
            buf[pos], buf[other] = buf[other], buf[pos]
        else:
            del buf[pos:]
    return bytes(buf)


def _corpus_sample(count: int) -> list[bytes]:
    files = sorted((paths.CORPUS / "dev").glob("*/*.eml"))
    if not files:
        pytest.skip(f"no corpus under {paths.CORPUS}")
    rng = random.Random(2026)
    return [path.read_bytes() for path in rng.sample(files, min(count, len(files)))]


def test_random_bytes():
    rng = random.Random(1)
    for _ in range(300):
        _check(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 600))))


def test_mime_token_soup():
    rng = random.Random(2)
    for _ in range(600):
        _check(_soup(rng))


def test_mutated_corpus_messages():
    rng = random.Random(3)
    for data in _corpus_sample(60):
        _check(data)
        for _ in range(8):
            _check(_mutate(rng, data))


def test_mutated_case_inputs():
    rng = random.Random(4)
    for path in sorted(paths.CASES.glob("*/input.eml")):
        data = path.read_bytes()
        for _ in range(6):
            _check(_mutate(rng, data))


@pytest.mark.parametrize("builder", [
    lambda n: b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
              + b"--b\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" * n,
    lambda n: b"Content-Type: message/rfc822\r\n\r\n" * n,
    lambda n: b"Content-Type: text/plain" + b";" * (n * 10) + b"\r\n\r\nx",
    lambda n: b"Subject: " + b"=?utf-8?B?" * n + b"\r\n\r\n",
    lambda n: b"From: " + b"(" * n + b"\r\n\r\n",
    lambda n: b"X: y\r\n" + b" folded\r\n" * n,
    lambda n: b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--b\r\n" * n,
    lambda n: b"Content-Disposition: attachment"
              + b"".join(b"; filename*%d*=%%41" % i for i in range(n)) + b"\r\n\r\n",
    lambda n: b"Content-Transfer-Encoding: base64\r\n\r\n" + b"QQ==\r\n" * n,
    lambda n: b"junk line without colon\r\n" * n,
], ids=["nested-multipart", "rfc822-chain", "semicolons", "open-words",
        "open-comments", "folded-lines", "empty-parts", "rfc2231-sections",
        "padded-base64", "junk-lines"])
def test_pathological_shapes_stay_linear(builder):
    """20,000 repetitions of a shape the stdlib handles badly: within the guard."""
    _check(builder(20_000))
