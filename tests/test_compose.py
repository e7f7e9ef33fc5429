"""The Compose stack without a Docker engine: docker-compose.gpu.yml (and the CPU override) against
the Compose specification's JSON Schema and our own rules, the Dockerfile, livekit.yaml, and the
configuration the stack's preflight step writes, started for real in LiveKit and coturn."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from turn_server import coturn, self_signed
from web_session import BOT_ARGS

from stack.config import Settings
from stack.ice import ice_servers
from stack.livekit_config import livekit_config, with_turn
from stack.livekit_server import LiveKitServer, find_binary, free_port
from stack.manifest import GPU
from stack.preflight import coturn_config, host_addresses, problems

ROOT = Path(__file__).resolve().parent.parent
# compose-go v2.16.2 (the library `docker compose` itself uses), schema/compose-spec.json,
# fetched from the Go module proxy; see tests/data/README.md.
SCHEMA = json.loads((Path(__file__).parent / "data" / "compose-spec.json").read_text())
LIVEKIT = yaml.safe_load((ROOT / "livekit.yaml").read_text())
SECRETS = {"LIVEKIT_API_KEY": "avatar-0123456789ab", "LIVEKIT_API_SECRET": "s" * 48,
           "ACCESS_KEY": "a" * 24, "TURN_SECRET": "t" * 48}


class ComposeLoader(yaml.SafeLoader):
    """YAML as Compose reads it: merge keys, and the !reset / !override tags of override files."""


ComposeLoader.add_constructor("!reset", lambda loader, node: None)
ComposeLoader.add_constructor(
    "!override",
    lambda loader, node: loader.construct_mapping(node) if isinstance(node, yaml.MappingNode)
    else loader.construct_sequence(node))


def load(name: str) -> dict:
    return yaml.load((ROOT / name).read_text(), Loader=ComposeLoader)


def env_example() -> dict[str, str]:
    out = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        m = re.match(r"^([A-Z_][A-Z0-9_]*)=(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2).strip('"')
    return out


VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value, env: dict[str, str]):
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} on every string of a parsed file."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        val = env.get(name)
        if op in (":?", "?") and not val:
            raise ValueError(f"{name}: {arg}")
        if op in (":-", "-") and not val:
            return arg
        return val or ""
    return VAR.sub(one, value)


def merge(base: dict, over: dict) -> dict:
    """Compose's merge of an override file: mappings merge, other values replace; None (!reset)
    removes."""
    out = dict(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def variables(text: str) -> set[str]:
    return {m.group(1) for m in VAR.finditer(text)}


@pytest.fixture(scope="module")
def gpu() -> dict:
    return interpolate(load("docker-compose.gpu.yml"), {**env_example(), **SECRETS})


@pytest.fixture(scope="module")
def cpu(gpu) -> dict:
    return merge(gpu, interpolate(load("docker-compose.cpu.yml"), {**env_example(), **SECRETS}))


# --- the Compose files -------------------------------------------------------------------------

@pytest.mark.parametrize("stack", ["gpu", "cpu"])
def test_compose_files_follow_the_compose_specification(stack, request):
    compose = request.getfixturevalue(stack)
    errors = sorted(jsonschema.Draft202012Validator(SCHEMA).iter_errors(compose), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_schema_check_catches_a_mistake(gpu):
    broken = json.loads(json.dumps(gpu))
    broken["services"]["bot"]["depends_on"]["models"]["condition"] = "service_finished"
    broken["services"]["livekit"]["healthcheck"]["intervall"] = "10s"
    errors = list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(broken))
    assert len(errors) >= 2


def test_every_variable_is_in_env_example_and_secrets_are_required():
    example = env_example()
    for name in ("docker-compose.gpu.yml", "docker-compose.cpu.yml"):
        missing = variables((ROOT / name).read_text()) - set(example)
        assert not missing, f"{name} uses {sorted(missing)}, not in .env.example"
    with pytest.raises(ValueError, match="make_env.py"):
        interpolate(load("docker-compose.gpu.yml"), example)  # .env.example has no secrets
    text = (ROOT / "docker-compose.gpu.yml").read_text()
    for secret in SECRETS:
        assert re.search(r"\$\{" + secret + r":\?", text), f"{secret} is not required"


def test_every_image_is_pinned(gpu, cpu):
    for compose in (gpu, cpu):
        for name, service in compose["services"].items():
            if "build" in service:
                continue  # built here: its bases are checked in the Dockerfile test
            image = service["image"]
            tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
            assert re.search(r"\d+\.\d+", tag) and tag != "latest", f"{name}: {image} not pinned"


def test_every_long_running_service_has_a_healthcheck_and_a_restart_policy(gpu):
    services = gpu["services"]
    one_shot = {n for n, s in services.items() if s.get("restart") == "no"}
    assert one_shot == {"preflight", "models"}
    for name, service in services.items():
        if name in one_shot:
            continue
        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"][0] == "CMD", name
        assert service["healthcheck"]["timeout"], name


def test_the_bot_gets_the_gpu_and_waits_for_the_models_and_livekit(gpu, cpu):
    bot = gpu["services"]["bot"]
    devices = bot["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert bot["environment"]["DEVICE"] == "cuda" and bot["environment"]["MODEL_PROFILE"] == "gpu"
    assert bot["depends_on"]["models"] == {"condition": "service_completed_successfully"}
    assert bot["depends_on"]["livekit"] == {"condition": "service_healthy"}
    for name in ("models", "livekit", "coturn"):
        assert gpu["services"][name]["depends_on"]["preflight"] == {
            "condition": "service_completed_successfully"}
    # without a GPU: no reservation, the cpu model set on the CPU
    cbot = cpu["services"]["bot"]
    assert "deploy" not in cbot
    assert cbot["environment"]["DEVICE"] == "cpu" and cbot["environment"]["MODEL_PROFILE"] == "cpu"
    assert cpu["services"]["models"]["command"][3] == "cpu"
    assert cbot["build"]["args"]["EXTRAS"] == ""  # no PyTorch: Kokoro runs on ONNX there
    assert "GGML_CUDA" not in cbot["build"]["args"]["LLAMA_CMAKE_ARGS"]


def test_ports_match_livekit_yaml_and_turnserver_conf(gpu):
    services = gpu["services"]
    port, rtc = LIVEKIT["port"], LIVEKIT["rtc"]
    assert services["bot"]["environment"]["LIVEKIT_URL"] == f"ws://127.0.0.1:{port}"
    assert f"http://127.0.0.1:{port}/" in services["livekit"]["healthcheck"]["test"]
    conf = (ROOT / "coturn" / "turnserver.conf").read_text()
    turn = dict(re.findall(r"^([a-z-]+)=(\S+)$", conf, re.M))
    hc = services["coturn"]["healthcheck"]["test"]
    assert hc[hc.index("-p") + 1] == turn["listening-port"]
    # TURN_TLS_PORT's default is the port the committed file has (the preflight writes the
    # setting's there: tests/test_turn.py)
    tls_port = Settings(_env_file=None).turn_tls_port
    assert tls_port == int(turn["tls-listening-port"])
    servers = with_turn({}, host="h", secret="x" * 32, tls_port=tls_port)["rtc"]["turn_servers"]
    ports = {int(turn["listening-port"]), int(turn["tls-listening-port"])}
    assert {s["port"] for s in servers} == ports
    # and the relay a direct connection's browser gets (TRANSPORT=smallwebrtc)
    relay = ice_servers(Settings(turn_host="h", turn_secret="x" * 32, turn_tls_cert="c",
                                 turn_tls_key="k", _env_file=None))
    assert {u.split(":")[2].split("?")[0] for u in relay[0]["urls"]} == {
        turn["listening-port"], turn["tls-listening-port"]}
    # the firewall list at the top of the file
    header = (ROOT / "docker-compose.gpu.yml").read_text().split("\nname:")[0]
    for documented in (f"{port}/tcp", f"{rtc['tcp_port']}/tcp",
                       f"{rtc['port_range_start']}-{rtc['port_range_end']}/udp",
                       f"{turn['listening-port']}/tcp+udp", f"{turn['tls-listening-port']}/tcp",
                       f"{turn['min-port']}-{turn['max-port']}/udp"):
        assert f"#   {documented} " in header, documented
    # host networking: nothing to publish, and so nothing that could disagree
    for name in ("livekit", "coturn", "bot"):
        assert services[name]["network_mode"] == "host" and "ports" not in services[name]


def test_the_container_runs_the_command_the_tests_run():
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", (ROOT / "Dockerfile").read_text(), re.M).group(1))
    assert cmd[0] == "python" and tuple(cmd[1:]) == BOT_ARGS  # BotProcess in tests/web_session.py
    assert "command" not in load("docker-compose.gpu.yml")["services"]["bot"]


def test_the_model_step_fetches_what_download_check_lists(gpu, tmp_path):
    step = gpu["services"]["models"]
    assert step["command"][:4] == ["python", "scripts/download_models.py", "--profile", "gpu"]
    models_dir = step["command"][step["command"].index("--models-dir") + 1]
    # the volume the step fills is the one the bot reads, at the bot's MODELS_DIR
    assert f"models:{models_dir}" in step["volumes"]
    bot = gpu["services"]["bot"]
    assert f"models:{bot['environment']['MODELS_DIR']}:ro" in bot["volumes"]

    empty = tmp_path / "models"
    r = subprocess.run([sys.executable, "scripts/download_models.py", *step["command"][2:4],
                        "--models-dir", str(empty), "--check"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    listed = re.findall(r"^missing: " + re.escape(str(empty)) + r"/(\S+) \(would fetch ([^,)\s]+)",
                        r.stderr, re.M)
    assert {path for path, _ in listed} == {mf.path for mf in GPU.files}
    assert {src for _, src in listed} == {mf.source.describe() for mf in GPU.files}
    assert f"{len(GPU.files)} file(s) to fetch" in r.stderr
    assert not empty.exists()  # listed, not fetched


# --- the Dockerfile ----------------------------------------------------------------------------

def dockerfile() -> tuple[str, dict[str, str]]:
    text = (ROOT / "Dockerfile").read_text()
    args = dict(re.findall(r'^ARG ([A-Z_]+)="?([^"\n]*)"?$', text, re.M))
    return text, args


def test_dockerfile_bases_are_pinned_and_the_bot_runs_on_cuda():
    text, args = dockerfile()
    bases = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], b)
             for b in re.findall(r"^FROM (\S+)", text, re.M)]
    for base in bases:
        if base == "llama":
            continue
        name, _, tag = base.rpartition(":")
        assert name and re.match(r"\d+\.\d+\.\d+", tag), f"{base} is not pinned to a version"
    assert re.search(r"^FROM \$\{RUNTIME_BASE\} AS bot$", text, re.M)
    assert re.match(r"nvidia/cuda:12\.\d+\.\d+-cudnn-runtime-", args["RUNTIME_BASE"])
    assert re.match(r"nvidia/cuda:12\.\d+\.\d+-cudnn-devel-", args["BUILD_BASE"])
    assert args["EXTRAS"] == "torch"  # Kokoro on PyTorch, from the lock:
    torch = next(p for p in tomllib.loads((ROOT / "uv.lock").read_text())["package"]
                 if p["name"] == "torch")
    # a CUDA 12 build, like CTranslate2's cuBLAS (PyPI's torch 2.11 and later: CUDA 13)
    assert "nvidia-cublas-cu12" in {d["name"] for d in torch["dependencies"]}, torch["version"]


def test_every_install_takes_the_locked_versions_and_hashes():
    """uv.lock is what scripts/setup.sh (tests, CI, scripts/run.sh) and the image install."""
    text, _ = dockerfile()
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "--require-hashes -r /tmp/requirements.txt" in text
    assert "COPY pyproject.toml uv.lock" in text
    assert '--require-hashes -r "$REQS"' in setup and "uv export --quiet --locked" in setup
    # one uv version everywhere
    pinned = [set(re.findall(r'"uv==([\d.]+)"', f)) for f in (text, setup)]
    assert pinned[0] == pinned[1] != set()
    # the lock matches pyproject.toml (a changed dependency needs a new lock in the same commit)
    uv = ROOT / ".venv" / "bin" / "uv"
    r = subprocess.run([str(uv) if uv.exists() else "uv", "lock", "--check"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    assert all("sdist" in p or "wheels" in p
               for p in lock["package"] if p["name"] != "avatar-stack")


def test_dockerfile_compiles_llama_cpp_with_cuda_at_the_pinned_version():
    text, args = dockerfile()
    assert "-DGGML_CUDA=on" in args["LLAMA_CMAKE_ARGS"].split()
    assert 'CMAKE_ARGS="${LLAMA_CMAKE_ARGS}"' in text
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = next(p for p in pins if p.startswith("llama-cpp-python=="))
    assert pinned == f"llama-cpp-python=={args['LLAMA_CPP_PYTHON_VERSION']}"


def test_dockerfile_runs_as_a_user_with_the_model_volume_at_models_dir(gpu):
    text, _ = dockerfile()
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(rf"useradd --uid \d+ .* {users[-1]}\b", text)
    env = dict(re.findall(r"\b(MODELS_DIR)=(\S+)", text))
    assert env["MODELS_DIR"] == gpu["services"]["bot"]["environment"]["MODELS_DIR"] == "/models"
    assert re.search(r"chown bot:bot /models", text)
    assert 'VOLUME ["/models"]' in text
    # the web client the bot serves is built in the image, where the bot looks for it
    assert "COPY --from=web /src/web/out web/out" in text and "WORKDIR /app" in text


def test_dockerignore_keeps_local_state_out_of_the_image():
    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in (".env", ".venv", "models", "**/node_modules", "web/out"):
        assert path in ignored


# --- livekit.yaml and the preflight step -------------------------------------------------------

def test_livekit_yaml_has_no_secrets_and_sane_ports():
    assert "keys" not in LIVEKIT and "turn_servers" not in LIVEKIT["rtc"]
    rtc = LIVEKIT["rtc"]
    assert 1024 < LIVEKIT["port"] != rtc["tcp_port"]
    assert 1024 < rtc["port_range_start"] < rtc["port_range_end"] <= 65535


def preflight_settings(**over) -> Settings:
    values = {"livekit_api_key": SECRETS["LIVEKIT_API_KEY"],
              "livekit_api_secret": SECRETS["LIVEKIT_API_SECRET"],
              "access_key": SECRETS["ACCESS_KEY"], "turn_secret": SECRETS["TURN_SECRET"],
              "turn_host": "turn.example.internal"}
    return Settings(_env_file=None, **{**values, **over})


def test_preflight_refuses_placeholder_secrets_naming_the_fix(tmp_path):
    env = {k: v for k, v in os.environ.items() if k.upper() not in {
        "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "ACCESS_KEY", "TURN_SECRET", "TURN_HOST",
        "DEV_MODE"}}
    out = tmp_path / "livekit.yaml"
    # .env.example as it is: LiveKit's public dev keys, no access key
    r = subprocess.run([sys.executable, "-m", "stack.preflight", "--livekit-config", str(out)],
                       cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT),
                                          **{k: v for k, v in env_example().items() if v}},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "public dev keys" in r.stderr and "make_env.py" in r.stderr
    assert not out.exists()
    assert any("TURN_SECRET" in p for p in problems(preflight_settings(turn_secret="short")))
    assert any("ACCESS_KEY" in p for p in problems(preflight_settings(access_key=None)))
    assert any("DEV_MODE" in p for p in problems(preflight_settings(dev_mode=True)))
    assert problems(preflight_settings()) == []
    found = problems(preflight_settings(turn_host=None, turn_secret="x"), turn=True)
    assert any("TURN_SECRET" in p for p in found)


def test_preflight_writes_coturn_its_secret_and_this_host_as_the_one_private_peer(gpu, tmp_path):
    preflight = gpu["services"]["preflight"]
    assert preflight["network_mode"] == "host"  # so it sees the host's own address
    args = preflight["command"]
    livekit_out = args[args.index("--livekit-config") + 1]
    coturn_out = args[args.index("--coturn-config") + 1]
    assert gpu["services"]["livekit"]["command"] == ["--config", livekit_out]
    assert gpu["services"]["coturn"]["command"][1:3] == ["-c", coturn_out]
    for name in ("livekit", "coturn"):
        assert "stack-config:/run/stack:ro" in gpu["services"][name]["volumes"]
        assert not any(SECRETS["TURN_SECRET"] in a for a in gpu["services"][name]["command"])
    text = coturn_config(preflight_settings(), ["192.168.1.10"])
    assert f"static-auth-secret={SECRETS['TURN_SECRET']}" in text.splitlines()
    assert [x for x in text.splitlines() if x.startswith("allowed-peer-ip=")] == [
        "allowed-peer-ip=192.168.1.10"]
    assert "no-tls" in text.splitlines()  # no certificate: no TURN over TLS
    assert "denied-peer-ip=192.168.0.0-192.168.255.255" in text  # the rest of the LAN stays closed
    addresses = host_addresses(preflight_settings(turn_host="localhost"))
    assert "127.0.0.1" not in addresses  # never loopback: every local service listens there


def _preflight(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith(
        ("LIVEKIT_", "ACCESS_KEY", "TURN_", "DEV_MODE"))}
    return subprocess.run([sys.executable, "-m", "stack.preflight", *args], cwd=tmp_path,
                          env={**clean, "PYTHONPATH": str(ROOT), **SECRETS, **env},
                          capture_output=True, text=True, timeout=60)


def test_preflight_gives_coturn_the_tls_certificate_it_checked(gpu, tmp_path):
    """TURN over TLS: the preflight (root: certbot's keys are root's) reads the certificate and
    key Compose mounts into it, refuses one browsers would refuse, and gives coturn a copy."""
    service = gpu["services"]["preflight"]
    mounted = service["command"][service["command"].index("--turn-tls-dir") + 1]
    assert service["user"] == "root"
    # .env.example leaves TURN_TLS_* empty: nothing of the host's is mounted
    assert f"/dev/null:{mounted}/cert.pem:ro" in service["volumes"]
    assert f"/dev/null:{mounted}/key.pem:ro" in service["volumes"]
    used = variables((ROOT / "docker-compose.gpu.yml").read_text())
    assert {"TURN_TLS_CERT", "TURN_TLS_KEY"} <= used
    host = "turn.example.internal"
    certs = tmp_path / "mounted"
    certs.mkdir()
    cert, key = self_signed([host])
    (certs / "cert.pem").write_bytes(cert)
    (certs / "key.pem").write_bytes(key)
    out = tmp_path / "run"
    args = ["--livekit-config", str(out / "livekit.yaml"), "--coturn-config",
            str(out / "turnserver.conf"), "--turn-tls-dir", str(certs)]
    # the paths as the operator wrote them (on the host); the preflight reads the mounted files
    tls = {"TURN_HOST": host, "TURN_TLS_CERT": "/etc/letsencrypt/live/x/fullchain.pem",
           "TURN_TLS_KEY": "/etc/letsencrypt/live/x/privkey.pem"}
    r = _preflight(tmp_path, *args, **tls)
    assert r.returncode == 0 and "over TLS" in r.stdout, r.stderr
    conf = (out / "turnserver.conf").read_text().splitlines()
    assert f"cert={out / 'turn-tls-cert.pem'}" in conf and "no-tls" not in conf
    assert f"pkey={out / 'turn-tls-key.pem'}" in conf
    assert (out / "turn-tls-key.pem").read_bytes() == key
    assert (out / "turn-tls-cert.pem").read_bytes() == cert
    servers = yaml.safe_load((out / "livekit.yaml").read_text())["rtc"]["turn_servers"]
    assert {(s["protocol"], s["host"], s["port"]) for s in servers} >= {("tls", host, 5349)}
    assert "tls-listening-port=5349" in conf
    # on 443 (a firewall that passes only HTTPS): coturn listens there, LiveKit offers it there
    r = _preflight(tmp_path, *args, **tls, TURN_TLS_PORT="443")
    assert r.returncode == 0, r.stderr
    assert "tls-listening-port=443" in (out / "turnserver.conf").read_text().splitlines()
    servers = yaml.safe_load((out / "livekit.yaml").read_text())["rtc"]["turn_servers"]
    assert {s["port"] for s in servers if s["protocol"] == "tls"} == {443}
    # a port another service of the stack holds: refused, saying whose
    r = _preflight(tmp_path, *args, **tls, TURN_TLS_PORT="7880")
    assert r.returncode == 2 and "TURN_TLS_PORT=7880 is LiveKit's signalling port" in r.stderr
    # a certificate for another name: refused, saying why
    (certs / "cert.pem").write_bytes(self_signed(["other.example"])[0])
    r = _preflight(tmp_path, *args, **tls)
    assert r.returncode == 2
    assert "names other.example, not TURN_HOST=turn.example.internal" in r.stderr
    assert "not the key of TURN_TLS_CERT" in r.stderr
    # unreadable: the setting and its path named
    r = _preflight(tmp_path, *args[:4], **tls)
    assert r.returncode == 2 and "TURN_TLS_CERT=/etc/letsencrypt/live/x/fullchain.pem cannot " \
        "be read" in r.stderr, r.stderr
    # TLS turned off again: no key left in the volume
    r = _preflight(tmp_path, *args, TURN_HOST=host)
    assert r.returncode == 0, r.stderr
    assert not (out / "turn-tls-key.pem").exists()
    assert "no-tls" in (out / "turnserver.conf").read_text().splitlines()


def test_make_env_writes_secrets_the_preflight_accepts(tmp_path):
    out = tmp_path / ".env"
    r = subprocess.run([sys.executable, "scripts/make_env.py", "--out", str(out), "--turn-host",
                        "turn.example.internal"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    written = dict(re.findall(r"^([A-Z_]+)=(.*)$", out.read_text(), re.M))
    assert set(written) == set(env_example())  # every setting kept, with its comment
    assert written["ACCESS_KEY"] in r.stdout
    assert problems(Settings(_env_file=str(out))) == []
    again = subprocess.run([sys.executable, "scripts/make_env.py", "--out", str(out)], cwd=ROOT,
                           capture_output=True, text=True)
    assert again.returncode == 1
    assert dict(re.findall(r"^([A-Z_]+)=(.*)$", out.read_text(), re.M)) == written


@pytest.mark.e2e
def test_livekit_starts_with_the_preflight_config_and_the_compose_keys(tmp_path):
    binary = find_binary()
    if binary is None:
        pytest.fail("livekit-server not found: run scripts/test.sh")
    config = livekit_config(preflight_settings())
    servers = config["rtc"]["turn_servers"]
    assert {s["secret"] for s in servers} == {SECRETS["TURN_SECRET"]}
    # LiveKit parses its config strictly: the TURN block must be one it knows
    server = LiveKitServer(binary, tmp_path, SECRETS["LIVEKIT_API_KEY"],
                           SECRETS["LIVEKIT_API_SECRET"],
                           config=json.loads(json.dumps(config)))
    server.stop()


@pytest.mark.e2e
def test_coturn_starts_with_the_compose_command_and_answers_the_healthcheck(gpu, tmp_path):
    service = gpu["services"]["coturn"]
    port = free_port()
    # the configuration the preflight writes for it: turnserver.conf + secret + this host
    with coturn(coturn_config(preflight_settings(), ["192.168.1.10"]), tmp_path, port,
                command=service["command"]) as log:
        check = service["healthcheck"]["test"][1:]
        check[check.index("-p") + 1] = str(port)
        answered = None
        for _ in range(10):  # the healthcheck's own timeout is 5 s: no answer, not healthy
            try:
                answered = subprocess.run(check, capture_output=True, text=True, timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
        assert answered and answered.returncode == 0, log.read_text()[-2000:]
        assert "UDP reflexive addr" in answered.stdout


def test_dockerfile_pulls_only_its_bases_and_trusts_the_operators_extra_cas():
    text, args = dockerfile()
    # a `# syntax=` line makes the builder pull a frontend image from a registry
    assert not re.search(r"^# syntax=", text, re.M)
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert len(stages) == 3
    for stage in stages:  # every stage that downloads trusts ca-certificates/*.crt
        assert "COPY ca-certificates/ /usr/local/share/ca-certificates/extra/" in stage
    assert (ROOT / "ca-certificates" / "README.md").is_file()
    assert "/ca-certificates/*.crt" in (ROOT / ".gitignore").read_text().split()
    assert "ca-certificates" not in (ROOT / ".dockerignore").read_text()
    # the Python of the base is a build argument (Ubuntu 24.04 has 3.12, Debian 12 has 3.11)
    assert args["PYTHON"] == "python3.12" and "${PYTHON}-venv" in text
    # what the services' commands read is in the image
    for path in ("livekit.yaml ./", "coturn/ coturn/", "stack/ stack/", "scripts/ scripts/"):
        assert f"COPY {path}" in text, path
