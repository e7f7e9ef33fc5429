"""The Compose stack, really started: docker-compose.gpu.yml + docker-compose.cpu.yml under a real
Docker engine, built from the product's Dockerfile, then a conversation through it from outside.

tests/compose/local.yml changes only what cannot be real on a machine that reaches package
registries but no image registry (stand-in base images from tests/compose/prepare.sh, host
networking for the build and the model step, the `test` models); everything else is the
product's own. Not proven here: the CUDA image (no nvidia/cuda base and no GPU on this machine).
The static checks of the same files are in tests/test_compose.py."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import jiwer
import pytest
import yaml
from conftest import BECKETT
from lk_client import Client
from peer_client import PeerClient, offers_to
from turn_server import self_signed_files
from web_session import ROOT, SHARED_AVATARS, WEB

from stack.config import Settings
from stack.livekit_server import free_port
from stack.preflight import host_addresses
from stack.protocol import MESSAGE_ADAPTER

pytestmark = pytest.mark.e2e

PROJECT = "avatar-stack-test"
FILES = ("docker-compose.gpu.yml", "docker-compose.cpu.yml", "tests/compose/local.yml")
STANDINS = ("avatar-stack-test/debian:bookworm", "avatar-stack-test/node:22.21.1",
            "avatar-stack-test/livekit-server:v1.13.5", "avatar-stack-test/coturn:bookworm")
# llama-cpp-python's wheel for this CPU, where scripts/setup.sh built it (it says where)
WHEELS = Path(os.environ.get("LLAMA_WHEELS", Path.home() / ".cache" / "avatar-stack" / "wheels"))
ONE_SHOT = {"preflight", "models"}
SERVICES = {"preflight", "models", "livekit", "coturn", "bot"}
ARTIFACTS = ROOT / "test-artifacts" / "compose"


def _run(args: list[str], *, env: dict | None = None, timeout: float = 600,
         check: bool = False) -> subprocess.CompletedProcess:
    r = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode:
        raise AssertionError(f"{' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def engine_problem() -> str | None:
    """Why the stack cannot be started here, or None."""
    if shutil.which("docker") is None:
        return "no docker command"
    if _run(["docker", "info"], timeout=30).returncode:
        return "no Docker engine answers"
    if _run(["docker", "compose", "version"], timeout=30).returncode:
        return "no Docker Compose v2 plugin"
    missing = [i for i in STANDINS if _run(["docker", "image", "inspect", i]).returncode]
    if missing:
        return f"stand-in base images missing: {missing}"
    if not list(WHEELS.glob("llama_cpp_python-*.whl")):
        return f"no llama-cpp-python wheel in {WHEELS}"
    return None


@dataclass
class Composed:
    env_file: Path
    env: dict[str, str]
    project: str = PROJECT
    files: tuple[str, ...] = FILES

    @functools.cached_property
    def values(self) -> dict[str, str]:
        return dict(re.findall(r"^([A-Z_]+)=(.*)$", self.env_file.read_text(), re.M))

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.values['HTTP_PORT']}"

    def compose(self, *args: str, timeout: float = 600, check: bool = False):
        return _run(["docker", "compose", "--env-file", str(self.env_file), "-p", self.project,
                     *(a for f in self.files for a in ("-f", f)), *args],
                    env=self.env, timeout=timeout, check=check)

    def states(self) -> dict[str, dict]:
        out = self.compose("ps", "-a", "--format", "json", check=True).stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        if len(rows) == 1 and isinstance(rows[0], list):  # older Compose: one JSON array
            rows = rows[0]
        return {r["Service"]: r for r in rows}

    def diagnose(self) -> str:
        """What to read when something failed: each service's state and last log lines."""
        lines = []
        for name, row in sorted(self.states().items()):
            lines.append(f"--- {name}: {row.get('State')} {row.get('Status')}")
            logs = self.compose("logs", "--no-color", "--tail", "30", name).stdout
            lines.extend(logs.splitlines()[-30:])
        return "\n".join(lines)

    def wait_healthy(self, timeout: float = 600) -> None:
        """Every long-running service healthy and the one-shot steps exited 0, or fail with the
        failing service's logs."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.states()
            broken = [n for n, r in states.items()
                      if (n in ONE_SHOT and r["State"] == "exited" and r.get("ExitCode"))
                      or (n not in ONE_SHOT and r["State"] in ("exited", "dead"))]
            if broken:
                pytest.fail(f"service(s) {broken} failed:\n{self.diagnose()}")
            done = (set(states) == SERVICES
                    and all(states[n]["State"] == "exited" for n in ONE_SHOT)
                    and all(states[n]["State"] == "running" and states[n].get("Health") == "healthy"
                            for n in SERVICES - ONE_SHOT))
            if done:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"the stack was not healthy within {timeout:.0f} s:\n{self.diagnose()}")
            time.sleep(3)

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service, check=True).stdout.strip()


def _with_values(env_text: str, **override: str) -> str:
    """A .env's text with these settings' lines set to these values."""
    for name, value in override.items():
        env_text = re.sub(rf"^{name}=.*$", f"{name}={value}", env_text, flags=re.M)
    return env_text


def _make_env(path: Path, **override: str) -> Path:
    _run(["python3", "scripts/make_env.py", "--out", str(path), "--force"], check=True)
    path.write_text(_with_values(path.read_text(), **override))
    return path


@pytest.fixture(scope="module")
def composed(tmp_path_factory):
    problem = engine_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"{problem}: scripts/test.sh runs tests/compose/prepare.sh, which sets "
                        "this up")
        pytest.skip(f"{problem} (tests/compose/prepare.sh sets it up; needs root or a running "
                    "Docker engine)")
    tmp = tmp_path_factory.mktemp("compose")
    env_file = _make_env(tmp / ".env", HTTP_PORT=str(free_port()))
    # The host trusts this network's TLS-inspecting proxy; the images learn it the way an operator
    # behind one would teach them: ca-certificates/*.crt (README).
    added = []
    for crt in Path("/usr/local/share/ca-certificates").glob("*.crt"):
        added.append(ROOT / "ca-certificates" / f"test-host-{crt.name}")
        shutil.copy(crt, added[-1])
    # llama-cpp-python's wheel that scripts/setup.sh built, served to the image build on loopback
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(WHEELS))
    handler.log_message = lambda *a: None
    wheelhouse = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=wheelhouse.serve_forever, daemon=True).start()
    env = {**os.environ, "TEST_AVATARS": str(SHARED_AVATARS),
           "TEST_WHEELHOUSE": f"http://127.0.0.1:{wheelhouse.server_address[1]}/"}
    stack = Composed(env_file, env)
    stack.compose("down", "-v", "--remove-orphans", timeout=120)  # an aborted run's leftovers
    try:
        build = stack.compose("build", "--progress", "plain", timeout=2400)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "build.log").write_text(build.stdout + build.stderr)
        assert build.returncode == 0, (build.stdout + build.stderr)[-4000:]
        up = stack.compose("up", "-d", timeout=900)
        assert up.returncode == 0, f"{up.stderr[-2000:]}\n{stack.diagnose()}"
        stack.wait_healthy()
        yield stack
    finally:
        (ARTIFACTS / "compose.log").write_text(stack.compose("logs", "--no-color").stdout)
        stack.compose("down", "-v", "--remove-orphans", timeout=300)
        left = _run(["docker", "ps", "-aq", "--filter",
                     f"label=com.docker.compose.project={PROJECT}"])
        assert left.stdout.strip() == "", "containers left after down -v"
        wheelhouse.shutdown()
        for path in added:
            path.unlink(missing_ok=True)


def test_every_service_is_healthy_and_the_bot_is_not_root(composed):
    states = composed.states()
    assert {n: states[n]["ExitCode"] for n in ONE_SHOT} == {"preflight": 0, "models": 0}
    uid = composed.compose("exec", "-T", "bot", "id", "-u", check=True).stdout.strip()
    assert uid == "10001"
    r = httpx.get(f"{composed.base}/ready", timeout=10)
    assert r.status_code == 200 and r.json()["ready"] is True, r.text
    # what a failure prints: each service's state and its last log lines
    report = composed.diagnose()
    assert "--- bot: running" in report and "--- models: exited" in report
    assert re.search(r"profile test: \d+ file\(s\) fetched", report), report
    # the CPU image carries no PyTorch (Kokoro runs on ONNX there)
    probe = composed.compose("exec", "-T", "bot", "python", "-c",
                             "import importlib.util as u; print(u.find_spec('torch') is None)")
    assert probe.stdout.strip() == "True", probe.stdout + probe.stderr


def _norm(text: str) -> str:
    return re.sub(r"[^\w\s']", "", text.lower()).strip()


async def test_a_conversation_through_the_composed_stack(composed, beckett):
    async with httpx.AsyncClient(base_url=composed.base, timeout=30) as http:
        r = await http.post("/token", json={})
        assert r.status_code == 401, r.text  # the access key is required
        r = await http.post("/token", json={},
                            headers={"Authorization": f"Bearer {composed.values['ACCESS_KEY']}"})
        assert r.status_code == 200, r.text
    conv = r.json()
    client = Client()
    await client.join(conv["url"], conv["token"])
    try:
        await client.silence(0.5)
        await client.speak(beckett, trailing_s=1.0)
        assert await client.wait_for(
            lambda: client.got.of_type("speech.chunk") and client.got.voiced(), timeout=90), \
            f"no bot speech through the composed stack:\n{composed.diagnose()}"
        await client.silence(3.0)
    finally:
        await client.leave()
    heard = " ".join(client.got.user_transcripts())
    assert jiwer.wer(_norm(BECKETT), _norm(heard)) <= 0.3, heard
    chunks = [MESSAGE_ADAPTER.validate_python(m) for _, m in client.got.of_type("speech.chunk")]
    assert chunks and all(c.words for c in chunks)
    assert len(client.got.voiced()) > 20  # frames of 10 ms: at least a fifth of a second heard


def test_the_page_loads_from_the_stack_alone_renders_the_avatar_and_connects(composed):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "avatar.png"
    r = subprocess.run(["node", "e2e/page.mjs", composed.base, composed.values["ACCESS_KEY"],
                        str(shot)], cwd=WEB, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert "error" not in result, result["error"]
    assert result["foreignRequests"] == []
    # the one error is the refused first start, which made the page ask for the key
    assert all("401" in e for e in result["consoleErrors"]), result["consoleErrors"]
    assert result["screenshot"]["std"] > 20 and result["screenshot"]["colours"] > 500
    assert result["connected"] is True


def test_down_and_up_again_fetches_no_model(composed):
    composed.compose("down", timeout=300, check=True)  # volumes kept
    up = composed.compose("up", "-d", timeout=600)
    assert up.returncode == 0, f"{up.stderr[-2000:]}\n{composed.diagnose()}"
    composed.wait_healthy()
    logs = composed.compose("logs", "--no-color", "models", check=True).stdout
    assert re.search(r"profile test: 0 file\(s\) fetched, \d+ already verified", logs), logs


def test_a_crashed_bot_is_restarted_and_ready_again(composed):
    if os.geteuid() != 0:
        pytest.skip("killing the bot's process from outside needs root")
    cid = composed.container("bot")
    before = json.loads(_run(["docker", "inspect", cid], check=True).stdout)[0]
    # SIGKILL from outside, as the kernel's OOM killer would (`docker kill` counts as a manual
    # stop, which restart policies respect)
    os.kill(before["State"]["Pid"], signal.SIGKILL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        now = json.loads(_run(["docker", "inspect", cid], check=True).stdout)[0]
        if now["RestartCount"] > before["RestartCount"] and now["State"]["Running"]:
            break
        time.sleep(1)
    else:
        pytest.fail(f"the bot was not restarted:\n{composed.diagnose()}")
    composed.wait_healthy(timeout=300)
    assert httpx.get(f"{composed.base}/ready", timeout=10).status_code == 200


def test_a_placeholder_secret_stops_the_stack_at_the_preflight(composed, tmp_path):
    # LiveKit's public development keys, as a copied example would have them
    bad = Composed(_make_env(tmp_path / ".env", LIVEKIT_API_KEY="devkey",
                             LIVEKIT_API_SECRET="secret"),
                   composed.env, project=f"{PROJECT}-refused")
    try:
        up = bad.compose("up", "-d", timeout=300)
        assert up.returncode != 0
        logs = bad.compose("logs", "--no-color", "preflight", check=True).stdout
        reasons = re.findall(r"refusing to start: (.*)", logs)
        assert reasons and "public dev keys" in reasons[0], logs
        running = {n for n, r in bad.states().items() if r["State"] == "running"}
        assert running == set(), running  # nothing started after the refused preflight
    finally:
        bad.compose("down", "-v", "--remove-orphans", timeout=120)


def test_the_model_step_names_a_file_it_cannot_fetch_and_where_from(composed):
    # the `cpu` set comes from Hugging Face, which this machine cannot reach: as an offline host
    r = composed.compose("run", "--rm", "--no-deps", "-T", "models", "python",
                         "scripts/download_models.py", "--profile", "cpu", "--models-dir",
                         "/models", timeout=600)
    assert r.returncode != 0
    err = r.stdout + r.stderr
    m = re.search(r"error: cannot fetch (cpu/\S+) from (\S+):", err)
    assert m, err[-2000:]
    assert "huggingface.co/" in m.group(2)
    assert "Check this machine's access to that host" in err


async def test_a_direct_connection_through_the_stacks_turn_relay(composed, tmp_path,
                                                                 monkeypatch):
    """TRANSPORT=smallwebrtc in the composed stack (last here: the bot is recreated with it), and
    a browser that reaches nothing but coturn: relayed by the stack's own coturn, configured by
    its preflight, to the bot's container on the host's network; over UDP, and over TLS on 443
    with a certificate in .env (TURN_TLS_CERT, a key only root can read, as certbot's), taken up
    by README's command after a renewal (`up -d --force-recreate preflight coturn`)."""
    addresses = host_addresses(Settings(_env_file=None))
    assert addresses, "this machine has no address but loopback"
    cert, key = self_signed_files([addresses[0]], tmp_path / "fullchain.pem",
                                  tmp_path / "privkey.pem")
    # on 443, as for a network that lets only HTTPS out (coturn runs as nobody: the port is
    # below 1024, which its image allows turnserver)
    tls = {"TURN_HOST": addresses[0], "TURN_TLS_CERT": str(cert), "TURN_TLS_KEY": str(key),
           "TURN_TLS_PORT": "443"}
    env_file = tmp_path / ".env"
    env_file.write_text(_with_values(composed.env_file.read_text(), **tls))
    # .env as the services read it (env_file: the repository's .env; the test's is elsewhere)
    override = tmp_path / "smallwebrtc.yml"
    override.write_text(yaml.safe_dump({"services": {
        "preflight": {"environment": tls},
        "bot": {"environment": {"TRANSPORT": "smallwebrtc", **tls}}}}))
    stack = dataclasses.replace(composed, env_file=env_file, files=(*FILES, str(override)))
    up = stack.compose("up", "-d", "--force-recreate", "preflight", "coturn", "bot", timeout=600)
    assert up.returncode == 0, f"{up.stderr[-2000:]}\n{stack.diagnose()}"
    stack.wait_healthy(timeout=300)
    assert "and over TLS" in stack.compose("logs", "preflight").stdout
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts this certificate alone
    auth = {"Authorization": f"Bearer {stack.values['ACCESS_KEY']}"}
    async with httpx.AsyncClient(base_url=stack.base, timeout=30, headers=auth) as http:
        assert (await http.get("/config")).json() == {"transport": "smallwebrtc"}
        [server] = (await http.get("/webrtc/ice-servers")).json()["ice_servers"]
        offer = offers_to(http)
        # aiortc takes a server's first address: one client over UDP, one over TLS
        for scheme in ("turn:", "turns:"):
            url = next(u for u in server["urls"] if u.startswith(scheme))
            assert scheme == "turn:" or ":443?" in url, url
            client = PeerClient(ice_servers=[{**server, "urls": [url]}], relay_only=True)
            try:
                await client.join(offer)
                await client.wait_for(lambda c=client: c.channel.readyState == "open", 15)
                client.ask_in_text()
                assert await client.wait_for(
                    lambda c=client: c.got.voiced() and "paris" in _norm(c.spoken_words()),
                    timeout=90), \
                    f"no spoken answer through {url}:\n{client.spoken_words()}\n" \
                    f"{stack.diagnose()}"
            finally:
                await client.leave()
