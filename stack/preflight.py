"""The Compose stack's first step: refuse placeholder secrets, and write LiveKit's configuration.

    python -m stack.preflight --livekit-config /run/livekit/livekit.yaml

Runs once before anything else starts (docker-compose.gpu.yml: every other service waits for it
to complete). It checks the settings the way the bot does at start-up (LiveKit's public dev keys,
a short LiveKit secret, no ACCESS_KEY, a short TURN secret are refused, each with what to change),
then writes the repository's livekit.yaml plus, when TURN_HOST is set, coturn as TURN server with
time-limited credentials from TURN_SECRET: the secret reaches LiveKit without sitting in a
committed file. Exit status 2 and one line per problem when something must change.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from .config import REPO_ROOT, Settings, get_settings
from .livekit_server import with_turn
from .server import ConfigError, check_config

FIX = "run `python3 scripts/make_env.py` to write .env with strong secrets, or edit .env"


def problems(settings: Settings) -> list[str]:
    found = []
    if settings.dev_mode:
        found.append("DEV_MODE=true turns the access checks off; it is for one development "
                     "machine, not for a stack others can reach")
    try:
        check_config(settings)
    except ConfigError as e:
        found.append(str(e))
    if settings.turn_host and len(settings.turn_secret or "") < 32:
        found.append("TURN_SECRET must be at least 32 characters when TURN_HOST is set "
                     "(openssl rand -base64 32)")
    return found


def livekit_config(settings: Settings, base: Path = REPO_ROOT / "livekit.yaml") -> dict:
    """livekit.yaml as LiveKit should run it in the stack (TURN added when configured)."""
    config = yaml.safe_load(base.read_text())
    if settings.turn_host:
        config = with_turn(config, host=settings.turn_host, secret=settings.turn_secret or "",
                           ttl=settings.turn_ttl_seconds)
    return config


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--livekit-config", type=Path, help="where to write LiveKit's configuration")
    args = ap.parse_args(argv)
    settings = get_settings()
    found = problems(settings)
    if found:
        for p in found:
            print(f"refusing to start: {p}", file=sys.stderr)
        print(f"fix: {FIX}", file=sys.stderr)
        return 2
    if args.livekit_config:
        args.livekit_config.parent.mkdir(parents=True, exist_ok=True)
        args.livekit_config.write_text(yaml.safe_dump(livekit_config(settings), sort_keys=False))
        args.livekit_config.chmod(0o600 if settings.turn_host else 0o644)
    turn = f"TURN via {settings.turn_host}" if settings.turn_host else "no TURN (TURN_HOST empty)"
    print(f"preflight ok: secrets set, {turn}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
