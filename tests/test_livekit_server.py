"""stack/livekit_server.py: a LiveKit server on free ports, for the tests, the benchmarks and
scripts/dev.py."""

import socket
import urllib.request

import pytest
import yaml

from stack import livekit_server
from stack.livekit_server import LiveKitServer

pytestmark = pytest.mark.e2e


def test_a_port_taken_between_the_check_and_livekit_gets_it_other_ports(livekit, tmp_path,
                                                                          monkeypatch):
    # livekit: the binary is there. Once in a benchmark, LiveKit's ICE/TCP port, free when
    # picked, was taken by another address before LiveKit bound it, and the run ended there.
    with socket.socket() as other:
        other.bind(("0.0.0.0", 0))
        other.listen()
        taken = other.getsockname()[1]
        free_port = livekit_server.free_port
        picks = iter([free_port(), taken])  # signalling, then ICE/TCP; then free ones again
        monkeypatch.setattr(livekit_server, "free_port", lambda: next(picks, None) or free_port())
        monkeypatch.setattr(livekit_server, "check_port_free", lambda *a, **kw: None)  # the race
        server = LiveKitServer(livekit.proc.args[0], tmp_path, "APIports", "p" * 40)
    try:
        config = yaml.safe_load((tmp_path / "livekit.yaml").read_text())
        assert config["rtc"]["tcp_port"] != taken and config["port"] == server.port
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=5) as r:
            assert r.status == 200
    finally:
        server.stop()


def test_a_port_the_caller_chose_is_not_swapped_for_another(livekit, tmp_path):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(livekit_server.PortInUse, match=f"port {port} .*already in use"):
            LiveKitServer(livekit.proc.args[0], tmp_path, "APIports", "p" * 40, port=port)
