"""A real clamd for the tests: Debian's daemon, our config, our signatures.

The fixture ``clamd`` (session scope) writes a config and a tiny signature
database into a temporary folder, starts ``clamd --foreground`` listening on
a unix socket and on 127.0.0.1 (a free port), and waits until it answers
PING. Tests get an object with ``.unix_socket``, ``.tcp_address``,
``.setting`` (the value for ``settings.clamd``), ``.stream_max`` and
``.stop()`` / ``.start()`` to play "clamd is down".

Signatures: the EICAR test file by MD5 (``.hdb``: ClamAV then also finds it
inside zip and MIME parts) and a hex body signature (``.ndb``) that finds the
EICAR string anywhere inside other bytes. ClamAV appends ``.UNOFFICIAL`` to
names from such files.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.support import system

CLAMD_PATHS = ("/usr/sbin/clamd",)

EICAR = (b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!"
         b"$H+H*")
EICAR_MD5 = "44d88612fea8a8f36de82e1278abb02f"
HDB_NAME = "Eicar-Test-Signature"
NDB_NAME = "Portcullis.Test.EicarBody"

# Smaller than clamd's default (25M) so a test can cross it with a few MiB.
STREAM_MAX = 4 * 1024 * 1024
TMPFS = "/dev/shm"


def _signatures(folder: Path) -> None:
    (folder / "test.hdb").write_text(f"{EICAR_MD5}:68:{HDB_NAME}\n")
    # Type 0 (any file), offset "*" (anywhere): the 68 EICAR bytes in hex.
    (folder / "test.ndb").write_text(f"{NDB_NAME}:0:*:{EICAR.hex()}\n")


def scratch_folder() -> Path:
    """A new folder for clamd's scratch files, on tmpfs where there is one.

    clamd writes every stream and every MIME part it unpacks to files there;
    on the disk that also takes the spool's fsyncs, that file work costs it
    more CPU than the scanning (1-4 ms against 0.5 ms a message, measured
    with bench/replay.py).
    """
    parent = TMPFS if os.path.isdir(TMPFS) and os.access(TMPFS, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="portcullis-clamd-tmp-", dir=parent))


def _config(folder: Path, scratch: Path, sock: str, port: int, stream_max: int,
            extra: tuple[str, ...]) -> Path:
    lines = [
        "Foreground yes",
        f"LocalSocket {sock}",
        "LocalSocketMode 600",
        "FixStaleSocket yes",
        "TCPAddr 127.0.0.1",
        f"TCPSocket {port}",
        f"DatabaseDirectory {folder / 'db'}",
        f"PidFile {folder / 'clamd.pid'}",
        f"LogFile {folder / 'clamd.log'}",
        f"TemporaryDirectory {scratch}",
        # clamd drops to its own user when started as root; stay who we are.
        f"User {pwd.getpwuid(os.geteuid()).pw_name}",
        "ScanMail yes",
        "ScanArchive yes",
        "ScanPE yes",
        "ScanHTML yes",
        "ScanOLE2 yes",
        "ScanPDF yes",
        f"StreamMaxLength {stream_max}",
        "MaxThreads 4",
        "SelfCheck 0",
        "LogTime yes",
        "ExtendedDetectionInfo yes",
        "Bytecode no",
        *extra,
    ]
    path = folder / "clamd.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


def ping(address: str | tuple[str, int], timeout: float = 1.0) -> bool:
    """Whether clamd at a unix path or (host, port) answers PONG."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.sendall(b"zPING\0")
            return sock.recv(64).startswith(b"PONG")
    except OSError:
        return False


class Clamd:
    """One clamd process with its own folder; restartable."""

    def __init__(self, program: str, folder: Path, stream_max: int = STREAM_MAX,
                 extra: tuple[str, ...] = ()):
        self.program = program
        self.folder = folder
        self.unix_socket = str(folder / "clamd.sock")
        self.tcp_address = ("127.0.0.1", system.free_port())
        self.setting = f"unix:{self.unix_socket}"
        self.tcp_setting = f"{self.tcp_address[0]}:{self.tcp_address[1]}"
        self.stream_max = stream_max
        self.process: subprocess.Popen | None = None
        (folder / "db").mkdir(exist_ok=True)
        self.scratch = scratch_folder()
        _signatures(folder / "db")
        self.config = _config(folder, self.scratch, self.unix_socket,
                              self.tcp_address[1], stream_max, extra)

    def start(self, timeout: float = 30.0) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        log = open(self.folder / "clamd.out", "ab")
        self.process = subprocess.Popen(
            [self.program, "--foreground", f"--config-file={self.config}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("clamd exited at start; see "
                                   f"{self.folder / 'clamd.out'}:\n"
                                   + self.output())
            if ping(self.unix_socket) and ping(self.tcp_address):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"clamd did not answer PING within {timeout} s")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def close(self) -> None:
        """Stop clamd for good and remove its scratch folder."""
        self.stop()
        shutil.rmtree(self.scratch, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self) -> str:
        try:
            return (self.folder / "clamd.out").read_text(errors="replace")[-4000:]
        except OSError:
            return ""


@pytest.fixture(scope="session")
def clamd():
    """A running clamd with the EICAR test signatures, stopped at the end."""
    program = shutil.which("clamd") or next(
        (p for p in CLAMD_PATHS if os.access(p, os.X_OK)), None)
    system.need(program is not None, "clamd (Debian package clamav-daemon)")
    folder = Path(tempfile.mkdtemp(prefix="portcullis-clamd-"))
    daemon = Clamd(program, folder)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.close()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def clamd_running(clamd):
    """The session clamd, started again if a test stopped it."""
    clamd.start()
    return clamd


def main(argv: list[str] | None = None) -> None:
    """Run a private clamd in the foreground for a development box."""
    parser = argparse.ArgumentParser(
        description="a clamd that knows only the EICAR test signatures")
    parser.add_argument("--dir", required=True, help="folder for socket and db")
    args = parser.parse_args(argv)
    program = shutil.which("clamd") or next(
        (p for p in CLAMD_PATHS if os.access(p, os.X_OK)), None)
    if program is None:
        raise SystemExit("clamd is not installed: apt-get install clamav-daemon")
    folder = Path(args.dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    # The gateway's clamd_stream_max default is clamd's own default (25 MiB):
    # the two must agree, or a large message cannot be scanned.
    daemon = Clamd(program, folder, stream_max=25 * 1024 * 1024)
    # SIGTERM ends it as Ctrl-C does, so clamd does not outlive this script.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    daemon.start()
    print(f"clamd ready: unix:{daemon.unix_socket} and "
          f"{daemon.tcp_setting}; Ctrl-C stops it", flush=True)
    try:
        daemon.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        daemon.close()


if __name__ == "__main__":
    main()
