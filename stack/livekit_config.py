"""LiveKit's configuration as we run it: the repository's livekit.yaml, plus coturn as TURN
server when TURN_HOST is set. The one place it is rendered: the Compose preflight
(stack/preflight.py) and the development runner (scripts/dev.py) both call ``livekit_config``."""

from __future__ import annotations

from pathlib import Path

import yaml

from .config import REPO_ROOT, TURN_SECRET_SHORT, Settings
from .ice import TURN_PORT


def livekit_config(settings: Settings, base: Path = REPO_ROOT / "livekit.yaml") -> dict:
    """livekit.yaml as LiveKit should run it (TURN added when configured)."""
    config = yaml.safe_load(Path(base).read_text())
    if settings.turn_host:
        config = with_turn(config, host=settings.turn_host, secret=settings.turn_secret or "",
                           ttl=settings.turn_ttl_seconds,
                           tls_port=settings.turn_tls_port if settings.turn_tls_cert else None)
    return config


def with_turn(config: dict, *, host: str, secret: str, ttl: int = 14400,
              tls_port: int | None = None) -> dict:
    """livekit.yaml plus coturn as TURN server, with time-limited credentials from a shared
    secret (the same as coturn's --static-auth-secret): LiveKit gives each client a
    username/password valid for ``ttl`` seconds. The secret never sits in a committed file.
    ``tls_port``: coturn has a certificate (TURN_TLS_CERT), so TURN over TLS is offered there."""
    if len(secret) < 32:
        raise ValueError(TURN_SECRET_SHORT)
    rtc = dict(config.get("rtc", {}))
    rtc["turn_servers"] = [
        {"host": host, "port": TURN_PORT, "protocol": protocol, "secret": secret, "ttl": ttl}
        for protocol in ("udp", "tcp")]
    if tls_port:
        rtc["turn_servers"].append({"host": host, "port": tls_port, "protocol": "tls",
                                    "secret": secret, "ttl": ttl})
    return {**config, "rtc": rtc}
