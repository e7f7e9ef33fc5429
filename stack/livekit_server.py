"""Run a LiveKit server process with the repository's livekit.yaml: for the dev runner
(scripts/dev.py) and the tests. The Compose stack runs LiveKit's own image instead.

The binary is built from LiveKit's Go module (scripts/test.sh does it, cached):
    go install github.com/livekit/livekit-server/cmd/server@v1.13.5
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
LIVEKIT_VERSION = "v1.13.5"
BUILD_DIR = Path.home() / ".cache" / "avatar-stack" / "bin" / f"livekit-{LIVEKIT_VERSION}"


def find_binary() -> str | None:
    for candidate in (os.environ.get("LIVEKIT_SERVER_BIN"), shutil.which("livekit-server"),
                      str(BUILD_DIR / "server")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def free_port() -> int:
    """A TCP port nothing holds on any address now (bound on all of them: a port free on
    loopback alone may be another address's, e.g. an outgoing connection's source port)."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


class PortInUse(RuntimeError):
    """A port we must listen on is taken; the message names it and what to do."""


def check_port_free(port: int, host: str = "0.0.0.0", *, what: str, option: str) -> None:
    """Raise ``PortInUse`` when something already listens on ``port`` (e.g. a LiveKit or a bot
    left running): starting anyway would look fine while the old process answers."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
        try:
            s.bind((host, port))
        except OSError:
            raise PortInUse(f"port {port} ({what}) is already in use, probably by an earlier run "
                            f"still going: stop it (ss -ltnp 'sport = :{port}' shows which "
                            f"process), or pick another port with {option}") from None


class _Taken(RuntimeError):
    """livekit-server exited because a port was taken after we checked it."""


class LiveKitServer:
    """Starts livekit-server with the repository's livekit.yaml, on free loopback ports."""

    STARTS = 3  # tries with fresh ports when ours were picked free and one was taken meanwhile

    def __init__(self, binary: str, tmp: Path, api_key: str, api_secret: str, *,
                 port: int | None = None, loopback_only: bool = True, config: dict | None = None):
        config = config or yaml.safe_load((ROOT / "livekit.yaml").read_text())
        for attempt in range(1, self.STARTS + 1):
            try:
                self._start(binary, tmp, api_key, api_secret, port, loopback_only, config)
                return
            except (PortInUse, _Taken):
                # a port picked free was taken before LiveKit bound it (once in a benchmark:
                # ICE/TCP's, by another address): pick others; a port the caller chose stays
                if port is not None or attempt == self.STARTS:
                    raise

    def _start(self, binary: str, tmp: Path, api_key: str, api_secret: str, port: int | None,
               loopback_only: bool, config: dict) -> None:
        self.port = port or free_port()
        config["port"] = self.port
        if port is None:  # tests: free ports, a UDP range apart from a dev server's
            config["rtc"]["tcp_port"] = free_port()
            config["rtc"]["port_range_start"], config["rtc"]["port_range_end"] = 51000, 51200
        if loopback_only:
            config["bind_addresses"] = ["127.0.0.1"]
        host = "127.0.0.1" if loopback_only else "0.0.0.0"
        check_port_free(self.port, host, what="LiveKit signalling", option="--livekit-port")
        # ICE/TCP listens on every address whatever bind_addresses says (":PORT" in its log)
        check_port_free(config["rtc"]["tcp_port"], "0.0.0.0", what="LiveKit ICE/TCP, rtc.tcp_port",
                        option="rtc.tcp_port in livekit.yaml")
        path = tmp / "livekit.yaml"
        path.write_text(yaml.safe_dump(config))
        self.url = f"ws://127.0.0.1:{self.port}"
        self.log = open(tmp / "livekit.log", "w")
        self.proc = subprocess.Popen(
            [binary, "--config", str(path)] + (["--node-ip", "127.0.0.1"] if loopback_only else []),
            env={**os.environ, "LIVEKIT_KEYS": f"{api_key}: {api_secret}"},
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=1)
            except OSError:
                time.sleep(0.2)
                continue
            time.sleep(0.3)  # answering, and still alive (not another server on that port)?
            if self.proc.poll() is None:
                return
        self.stop()
        last = (tmp / "livekit.log").read_text(errors="replace").strip().splitlines()[-3:]
        error = _Taken if any("address already in use" in line for line in last) else RuntimeError
        raise error(f"livekit-server did not start ({tmp / 'livekit.log'}): " + " | ".join(last))

    def stop(self, timeout: float = 10) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
