"""The HTTP API against its own OpenAPI schema: schemathesis generates requests (valid and
not) for every operation and checks every response - status codes, bodies and headers the
schema documents, no server errors, 405 with an honest Allow header for other methods."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from conftest import LIVEKIT_KEY, LIVEKIT_SECRET

from stack.config import Settings
from stack.livekit_server import free_port
from stack.server import create_app

pytestmark = pytest.mark.e2e
KEY = "conformance access key"


@pytest.fixture
def api(livekit, tmp_path):
    avatars = tmp_path / "avatars"
    avatars.mkdir()
    (avatars / "ada.glb").write_bytes(b"glTF" + bytes(60))
    settings = Settings(access_key=KEY, livekit_url=livekit.url, livekit_api_key=LIVEKIT_KEY,
                        livekit_api_secret=LIVEKIT_SECRET, rate_limit_per_minute=1_000_000,
                        avatars_dir=avatars, _env_file=None)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, models_ready=lambda: True),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{base}/health", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield base
    server.should_exit = True
    thread.join(10)


def test_every_operation_conforms_to_the_schema(api, tmp_path):
    st = Path(sys.executable).with_name("st")
    run = subprocess.run(
        [str(st), "run", f"{api}/openapi.json", "--checks", "all", "--seed", "1",
         "--max-examples", "60", "-H", f"Authorization: Bearer {KEY}",
         "--report", "junit", "--report-dir", str(tmp_path), "--no-color"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)  # its cache stays there
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert "No issues found" in out or " passed" in out, out[-3000:]
