"""TURN through coturn: shared-secret, time-limited credentials that LiveKit accepts."""

import re
from pathlib import Path

import pytest
import yaml

from stack.livekit_config import with_turn
from stack.livekit_server import LiveKitServer, find_binary

ROOT = Path(__file__).resolve().parent.parent


def test_coturn_uses_time_limited_credentials_and_never_relays_inward():
    conf = (ROOT / "coturn" / "turnserver.conf").read_text()
    lines = {line.split("=")[0] for line in conf.splitlines() if line and not line.startswith("#")}
    assert "use-auth-secret" in lines and "static-auth-secret" not in lines  # secret from env
    denied = re.findall(r"^denied-peer-ip=(\S+)", conf, re.M)
    for private in ("10.0.0.0-", "172.16.0.0-", "192.168.0.0-", "127.0.0.0-", "169.254.0.0-"):
        assert any(d.startswith(private) for d in denied), private
    assert "listening-port=3478" in conf and "tls-listening-port=5349" in conf


def test_livekit_config_with_turn_is_accepted_by_livekit(tmp_path, livekit):
    base = yaml.safe_load((ROOT / "livekit.yaml").read_text())
    assert "turn_servers" not in base.get("rtc", {})  # no secret in the committed file
    with pytest.raises(ValueError, match="32 characters"):
        with_turn(base, host="turn.example", secret="short")
    config = with_turn(base, host="turn.example", secret="x" * 40, ttl=3600)
    turns = config["rtc"]["turn_servers"]
    assert {t["protocol"] for t in turns} == {"udp", "tcp", "tls"}
    assert all(t["secret"] == "x" * 40 and t["ttl"] == 3600 for t in turns)
    server = LiveKitServer(find_binary(), tmp_path, "APIturn", "t" * 40, config=config)
    try:
        assert server.proc.poll() is None  # started with it: the keys are LiveKit's own
    finally:
        server.stop()
