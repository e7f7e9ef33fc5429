"""The Compose stack's first step: refuse placeholder secrets, write LiveKit's and coturn's
configuration.

    python -m stack.preflight --livekit-config /run/stack/livekit.yaml \
                              --coturn-config /run/stack/turnserver.conf

Runs once before anything else starts (docker-compose.gpu.yml: every other service waits for it
to complete), on the host's network. It checks the settings the way the bot does at start-up
(LiveKit's public dev keys, a short LiveKit secret, no ACCESS_KEY, a short TURN secret are
refused, each with what to change), then writes
- LiveKit's: the repository's livekit.yaml plus, when TURN_HOST is set, coturn as TURN server
  with time-limited credentials from TURN_SECRET;
- coturn's: coturn/turnserver.conf plus the shared secret, and this host's own addresses as the
  one exception to its refusal to relay into private networks (LiveKit's media ports are there).
The secrets reach both without sitting in a committed file or on a command line. Exit status 2
and one line per problem when something must change.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
from pathlib import Path

import yaml

from .config import (
    REPO_ROOT,
    TURN_SECRET_SHORT,
    ConfigError,
    Settings,
    check_config,
    get_settings,
)
from .livekit_config import livekit_config

FIX = "run `python3 scripts/make_env.py` to write .env with strong secrets, or edit .env"


def problems(settings: Settings, *, turn: bool = False) -> list[str]:
    """What must change before the stack may start; ``turn``: coturn runs (it needs the secret
    whether or not LiveKit offers it to browsers)."""
    found = []
    if settings.dev_mode:
        found.append("DEV_MODE=true turns the access checks off; it is for one development "
                     "machine, not for a stack others can reach")
    try:
        check_config(settings)
    except ConfigError as e:
        found.append(str(e))
    if turn and not settings.turn_host and len(settings.turn_secret or "") < 32:
        found.append(TURN_SECRET_SHORT)  # with TURN_HOST, check_config says it
    return found


def host_addresses(settings: Settings) -> list[str]:
    """This host's addresses LiveKit announces to browsers: the one its default route leaves from
    (a UDP "connect" sends nothing), and what TURN_HOST resolves to."""
    found: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: never reached, only routed
            found.append(s.getsockname()[0])
        except OSError:
            pass
    if settings.turn_host:
        try:
            found += [a[4][0] for a in socket.getaddrinfo(settings.turn_host, None, socket.AF_INET)]
        except socket.gaierror:
            pass
    # never loopback: relaying there would reach every local service, not only LiveKit
    return sorted({a for a in found if not ipaddress.ip_address(a).is_loopback
                   and not ipaddress.ip_address(a).is_unspecified})


def coturn_config(settings: Settings, addresses: list[str],
                  base: Path = REPO_ROOT / "coturn" / "turnserver.conf") -> str:
    """coturn/turnserver.conf with the shared secret, and relaying allowed to this host only."""
    lines = [base.read_text().rstrip(), "", "# written by stack/preflight.py",
             f"static-auth-secret={settings.turn_secret}"]
    lines += [f"allowed-peer-ip={a}" for a in addresses]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--livekit-config", type=Path, help="where to write LiveKit's configuration")
    ap.add_argument("--coturn-config", type=Path, help="where to write coturn's configuration")
    args = ap.parse_args(argv)
    settings = get_settings()
    found = problems(settings, turn=args.coturn_config is not None)
    if found:
        for p in found:
            print(f"refusing to start: {p}", file=sys.stderr)
        print(f"fix: {FIX}", file=sys.stderr)
        return 2
    if args.livekit_config:
        args.livekit_config.parent.mkdir(parents=True, exist_ok=True)
        args.livekit_config.write_text(yaml.safe_dump(livekit_config(settings), sort_keys=False))
        args.livekit_config.chmod(0o600)  # LiveKit runs as root in its image
    if args.coturn_config:
        args.coturn_config.parent.mkdir(parents=True, exist_ok=True)
        args.coturn_config.write_text(coturn_config(settings, host_addresses(settings)))
        # coturn's image runs as nobody; the volume itself is readable by root only on the host
        args.coturn_config.chmod(0o644)
    turn = f"TURN via {settings.turn_host}" if settings.turn_host else "no TURN (TURN_HOST empty)"
    print(f"preflight ok: secrets set, {turn}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
