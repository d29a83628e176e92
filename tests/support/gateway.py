"""The whole gateway in a subprocess, on free loopback ports, for end-to-end tests.

:class:`Gateway` writes a config (a temporary data_dir, free ports, the
sink as downstream and smarthost, the test clamd, the test DNS server,
XCLIENT allowed from 127.0.0.0/8, short retry pauses) and runs
``python -m core.runner --config FILE`` in its own process group, so that
``kill9()`` takes the whole tree down at once, as a power cut would.
It can also SIGTERM (drain) and start again on the same data_dir.
"""

from __future__ import annotations

import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}"
                               for k, v in value.items()) + "}"
    return json.dumps(str(value))


class Gateway:
    """A gateway process tree; ``start()``, ``stop()``, ``kill9()``."""

    def __init__(self, directory: Path | str, downstream: str, clamd: str = "",
                 dns_port: int | None = None, **settings):
        self.directory = Path(directory)
        self.data_dir = self.directory / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port_in = _free_port()
        self.port_out = _free_port()
        values = {
            "data_dir": str(self.data_dir),
            "hostname": "gateway.test",
            "log_file": str(self.directory / "gateway.log"),
            "smtp_listen_in": f"127.0.0.1:{self.port_in}",
            "smtp_listen_out": f"127.0.0.1:{self.port_out}",
            "web_listen": "",
            "downstream": downstream,
            "smarthost": downstream,
            "relay_domains": ["example.com"],
            "xclient_networks": ["127.0.0.0/8"],
            "workers": 2,
            "retry_initial": 1.0,
            "retry_max": 2.0,
            "filter_retry": 1.0,
            "greet_pause": 0.0,
            "virus_scan": bool(clamd),
            "clamd": clamd or "unix:/nonexistent",
            "clamd_timeout": 10.0,
        }
        if dns_port:
            values["dns_servers"] = [f"127.0.0.1:{dns_port}"]
        values.update(settings)
        self.settings = values
        self.config = self.directory / "portcullis.conf"
        self.proc: subprocess.Popen | None = None
        self.write_config()

    def write_config(self) -> None:
        lines = [f"{key} = {_toml(value)}" for key, value in self.settings.items()
                 if value is not None]
        self.config.write_text("\n".join(lines) + "\n")

    # region process control

    def start(self, timeout: float = 30.0) -> "Gateway":
        env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCULLIS_")}
        out = open(self.directory / "runner.out", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "core.runner", "--config", str(self.config)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("gateway exited at start:\n" + self.output())
            if self._greets():
                return self
            time.sleep(0.1)
        self.kill9()
        raise RuntimeError("gateway did not listen in time:\n" + self.output())

    def _greets(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port_in), 1.0) as sock:
                sock.settimeout(3.0)
                return sock.recv(3) == b"220"
        except OSError:
            return False

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (drain) and wait; returns the exit status."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise
        self.proc = None
        return code

    def kill9(self) -> None:
        """SIGKILL the whole process tree at once."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        self.proc = None

    def restart(self) -> "Gateway":
        self.stop()
        return self.start()

    def output(self) -> str:
        text = ""
        for name in ("runner.out", "gateway.log"):
            try:
                text += (self.directory / name).read_text(errors="replace")[-6000:]
            except OSError:
                pass
        return text

    # endregion

    # region looking inside

    def send(self, sender: str, recipients: list[str], data: bytes,
             port: int | None = None) -> str:
        """One message over SMTP; the queue id from the 250 reply."""
        with smtplib.SMTP("127.0.0.1", port or self.port_in, timeout=30) as client:
            client.ehlo("client.example.net")
            client.mail(sender)
            for rcpt in recipients:
                code, text = client.rcpt(rcpt)
                if code >= 400:
                    raise smtplib.SMTPRecipientsRefused({rcpt: (code, text)})
            code, text = client.data(data)
            if code != 250:
                raise smtplib.SMTPDataError(code, text)
        return text.decode().rsplit(" ", 1)[-1]

    def queue(self) -> dict[str, list[str]]:
        root = self.data_dir / "queue"
        return {state: sorted(os.listdir(root / state))
                for state in ("incoming", "filtering", "deliver", "sending")
                if (root / state).is_dir()}

    def quarantined(self) -> list[str]:
        folder = self.data_dir / "quarantine"
        return sorted(os.listdir(folder)) if folder.is_dir() else []

    def wait_quarantined(self, qid: str, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if qid in self.quarantined():
                return True
            time.sleep(0.05)
        return False

    def wait_empty(self, timeout: float = 20.0) -> bool:
        """Whether the queue has no message left within ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any(self.queue().values()):
                return True
            time.sleep(0.05)
        return False

    def wait_log(self, qid: str, text: str, timeout: float = 10.0) -> bool:
        """Whether a log line of ``qid`` containing ``text`` shows up in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.log_lines(qid)):
                return True
            time.sleep(0.05)
        return False

    def log_lines(self, qid: str) -> list[str]:
        try:
            text = (self.directory / "gateway.log").read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if qid in line]

    # endregion


def start_gateway(directory: Path, sink, clamd=None, dns_server=None,
                  **settings) -> Gateway:
    """A started :class:`Gateway` relaying to ``sink``."""
    gateway = Gateway(directory, sink.address,
                      clamd=clamd.setting if clamd is not None else "",
                      dns_port=dns_server.port if dns_server is not None else None,
                      **settings)
    return gateway.start()
