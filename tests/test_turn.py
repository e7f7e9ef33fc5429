"""TURN through coturn: shared-secret, time-limited credentials that LiveKit accepts."""

import re
from pathlib import Path

import pytest
import yaml
from turn_server import self_signed

from stack.config import ConfigError, Settings, check_config
from stack.ice import ice_servers
from stack.livekit_config import livekit_config, with_turn
from stack.livekit_server import LiveKitServer, find_binary
from stack.preflight import coturn_config, turn_tls_port_problems, turn_tls_problems

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
    # TURN over TLS only where coturn has a certificate: without one nothing listens there
    plain = with_turn(base, host="turn.example", secret="x" * 40, ttl=3600)["rtc"]["turn_servers"]
    assert {t["protocol"] for t in plain} == {"udp", "tcp"}
    config = with_turn(base, host="turn.example", secret="x" * 40, ttl=3600, tls_port=443)
    turns = config["rtc"]["turn_servers"]
    assert {(t["protocol"], t["port"]) for t in turns} == {("udp", 3478), ("tcp", 3478),
                                                           ("tls", 443)}
    assert all(t["secret"] == "x" * 40 and t["ttl"] == 3600 for t in turns)
    server = LiveKitServer(find_binary(), tmp_path, "APIturn", "t" * 40, config=config)
    try:
        assert server.proc.poll() is None  # started with it: the keys are LiveKit's own
    finally:
        server.stop()


def test_turn_over_tls_is_offered_only_with_a_certificate_and_a_host():
    base = dict(turn_host="turn.example", turn_secret="x" * 40, _env_file=None)
    assert not any(u.startswith("turns:") for u in ice_servers(Settings(**base))[0]["urls"])
    tls = Settings(**base, turn_tls_cert="/c.pem", turn_tls_key="/k.pem")
    assert "turns:turn.example:5349?transport=tcp" in ice_servers(tls)[0]["urls"]
    assert {t["protocol"] for t in livekit_config(tls)["rtc"]["turn_servers"]} == {
        "udp", "tcp", "tls"}
    # on 443, for firewalls that pass only HTTPS: offered there, and coturn told to listen there
    on_443 = tls.model_copy(update=dict(turn_tls_port=443))
    assert "turns:turn.example:443?transport=tcp" in ice_servers(on_443)[0]["urls"]
    assert {t["port"] for t in livekit_config(on_443)["rtc"]["turn_servers"]} == {3478, 443}
    conf = coturn_config(on_443, ["192.0.2.7"], (Path("/c.pem"), Path("/k.pem")))
    assert re.findall(r"^tls-listening-port=(\d+)$", conf, re.M) == ["443"]
    assert re.findall(r"^listening-port=(\d+)$", conf, re.M) == ["3478"]
    with pytest.raises(ConfigError, match="both TURN_TLS_CERT and TURN_TLS_KEY"):
        check_config(Settings(**base, turn_tls_cert="/c.pem", dev_mode=True))
    with pytest.raises(ConfigError, match="TURN_HOST is not"):
        check_config(Settings(turn_tls_cert="/c.pem", turn_tls_key="/k.pem", dev_mode=True,
                              _env_file=None))


def test_a_turn_tls_port_another_listener_holds_is_refused_saying_whose():
    """They all share the host's network: coturn on LiveKit's port would keep one of them down."""
    base = dict(turn_host="turn.example", turn_secret="x" * 40, turn_tls_cert="/c.pem",
                turn_tls_key="/k.pem", _env_file=None)
    assert turn_tls_port_problems(Settings(**base)) == []
    assert turn_tls_port_problems(Settings(**base, turn_tls_port=443)) == []
    [livekit] = turn_tls_port_problems(Settings(**base, turn_tls_port=7881))
    assert livekit.startswith("TURN_TLS_PORT=7881 is LiveKit's media over TCP"), livekit
    [http] = turn_tls_port_problems(Settings(**base, turn_tls_port=9000, http_port=9000))
    assert "HTTP_PORT" in http and "pick another" in http
    assert "coturn's TURN port" in turn_tls_port_problems(Settings(**base, turn_tls_port=3478))[0]
    # without a certificate coturn serves no TLS: the port is never used
    no_tls = {k: v for k, v in base.items() if not k.startswith("turn_tls")}
    assert turn_tls_port_problems(Settings(**no_tls, turn_tls_port=7881)) == []


def test_a_certificate_browsers_would_refuse_is_refused_saying_why():
    """The preflight's checks of TURN_TLS_CERT/TURN_TLS_KEY (stack/preflight.py)."""
    cert, key = self_signed(["turn.example.org", "192.0.2.7"])
    assert turn_tls_problems(cert, key, "turn.example.org") == []
    assert turn_tls_problems(cert, key, "TURN.example.org.") == []  # names are case-insensitive
    assert turn_tls_problems(cert, key, "192.0.2.7") == []  # an address as TURN_HOST
    [wrong] = turn_tls_problems(cert, key, "turn.example.com")
    assert wrong == ("TURN_TLS_CERT names turn.example.org, 192.0.2.7, not "
                     "TURN_HOST=turn.example.com: browsers would refuse it")
    wildcard, wkey = self_signed(["*.example.org"])
    assert turn_tls_problems(wildcard, wkey, "turn.example.org") == []
    assert turn_tls_problems(wildcard, wkey, "a.turn.example.org")  # one label only
    assert turn_tls_problems(wildcard, wkey, "example.org")
    assert ["TURN_TLS_KEY is not the key of TURN_TLS_CERT"] == turn_tls_problems(
        cert, wkey, "turn.example.org")
    old, okey = self_signed(["turn.example.org"], days=-2, start_days=-30)
    [expired] = turn_tls_problems(old, okey, "turn.example.org")
    assert expired.startswith("TURN_TLS_CERT expired on ") and "renew" in expired
    assert turn_tls_problems(b"not pem", key, "turn.example.org") == [
        "TURN_TLS_CERT is not a PEM certificate (-----BEGIN CERTIFICATE-----)"]
    assert turn_tls_problems(cert, cert, "turn.example.org") == [
        "TURN_TLS_KEY is not a PEM private key without a passphrase"]
    # the common name alone is not enough: browsers read only the alternative names
    bare, bkey = self_signed([])
    assert "names nothing" in turn_tls_problems(bare, bkey, "x")[0]
