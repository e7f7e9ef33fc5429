"""scripts/dev.py starts LiveKit and the bot (``python -m stack.app``, the container's command):
the product as a whole process tree, reached over HTTP and LiveKit."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from stack.livekit_server import free_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.e2e


def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _ready(proc: subprocess.Popen, base: str, timeout: float = 180) -> dict:
    """``/ready``'s body once it answers 200 (the runner's output if it exits first)."""
    deadline, status, body = time.monotonic() + timeout, None, None
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            status, body = _get(f"{base}/ready")
            if status == 200:
                break
        except OSError:
            pass
        time.sleep(1)
    assert status == 200, proc.stdout.read() if proc.poll() is not None else "not ready"
    return body


def test_dev_runner_serves_ready_and_tokens(models_dir, livekit):  # livekit: the binary is built
    http_port, lk_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "dev.py"), "--profile", "test", "--models-dir",
         str(models_dir), "--http-port", str(http_port), "--livekit-port", str(lk_port),
         "--loopback"],
        cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{http_port}"
    try:
        assert _ready(proc, base) == {"ready": True, "models_loaded": True,
                                      "livekit_reachable": True}

        req = urllib.request.Request(f"{base}/token", method="POST",
                                     data=json.dumps({"name": "me"}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:  # dev mode: no access key needed
            token = json.loads(r.read())
        assert token["url"] == f"ws://127.0.0.1:{lk_port}" and token["token"].count(".") == 2
        # Ctrl-C in a terminal: SIGINT to the whole process group; everything goes
        children = _children(proc.pid)
        assert len(children) >= 2  # the bot and LiveKit
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(30)
        print(f"stopped in {time.monotonic() - t0:.1f} s")
        assert not [c for c in children if Path(f"/proc/{c}").exists()
                    and "zombie" not in Path(f"/proc/{c}/status").read_text().lower()]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
    assert proc.returncode == 0


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


@pytest.mark.parametrize("taken", ["--http-port", "--livekit-port"])
def test_dev_runner_stops_at_once_when_a_port_is_taken(models_dir, livekit, taken, tmp_path):
    import socket

    with socket.socket() as blocker:  # an earlier run still listening there
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        other = "--livekit-port" if taken == "--http-port" else "--http-port"
        run = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "dev.py"), "--profile", "test",
             "--models-dir", str(models_dir), taken, str(port), other, str(free_port()),
             "--loopback"], cwd=ROOT, capture_output=True, text=True, timeout=120,
            env={**os.environ, "TMPDIR": str(tmp_path)})
    assert run.returncode == 1
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, run.stderr
    assert f"port {port}" in errors[0] and "already in use" in errors[0] and taken in errors[0]
    assert "ready:" not in run.stdout and "LiveKit on" not in run.stdout  # nothing claims to be up
    assert list(tmp_path.iterdir()) == []  # no empty LiveKit folder left behind in /tmp


def test_dev_runner_with_smallwebrtc_starts_the_bot_alone(models_dir):
    http_port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "dev.py"), "--profile", "test", "--models-dir",
         str(models_dir), "--http-port", str(http_port), "--loopback"],
        cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1", "TRANSPORT": "smallwebrtc"},
        start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{http_port}"
    try:
        assert _ready(proc, base) == {"ready": True, "models_loaded": True,
                                      "livekit_reachable": None}
        assert _get(f"{base}/config") == (200, {"transport": "smallwebrtc"})
        assert len(_children(proc.pid)) == 1  # the bot, no LiveKit
        # the running server watches its event loop (GET /metrics, open in dev mode)
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as r:
            scraped = r.read().decode()
        count = re.search(r"^avatar_event_loop_lag_seconds_count (\S+)$", scraped, re.M)
        assert count and float(count[1]) > 0, scraped[-2000:]
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
    assert proc.returncode == 0
