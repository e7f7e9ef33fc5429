"""Debian's coturn, started with the configuration the stack's preflight writes (for the tests)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from stack.livekit_server import free_port

COMMAND = ["turnserver", "-c", "/run/stack/turnserver.conf", "--pidfile=/tmp/turnserver.pid"]


@contextmanager
def coturn(config: str, tmp: Path, port: int, command: list[str] = COMMAND) -> Iterator[Path]:
    """coturn on ``port`` (UDP and TCP, no TLS) with ``config`` as its file; yields its log
    (verbose: each session, allocation and peer is in it)."""
    turnserver = shutil.which("turnserver")
    if turnserver is None:
        pytest.fail("coturn is missing: run scripts/test.sh (apt-get install coturn)")
    conf, log = tmp / "turnserver.conf", tmp / "turn.log"
    conf.write_text(config)
    cmd = [turnserver if a == "turnserver" else a for a in command]
    cmd[cmd.index("-c") + 1] = str(conf)
    cmd = [a for a in cmd if not a.startswith("--pidfile")]
    cmd += [f"--listening-port={port}", f"--tls-listening-port={free_port()}", "--no-tls",
            "--no-dtls", "--verbose", f"--pidfile={tmp / 'turn.pid'}"]
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        # listening before anyone asks: a TURN client over TCP that finds the port closed gets
        # no relay candidate at all (UDP ones retry)
        deadline = time.monotonic() + 15
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail(f"coturn did not listen on {port}:\n{log.read_text()[-2000:]}")
        yield log
    finally:
        proc.terminate()
        proc.wait(10)
