#!/usr/bin/env python3
"""Write .env from .env.example with strong, random secrets (standard library only: runs on the
host before anything is installed).

    python3 scripts/make_env.py    # then: docker compose -f docker-compose.gpu.yml up -d
    python3 scripts/make_env.py --turn-host turn.example.internal \
        --public-url wss://avatar.example.internal/rtc

Sets LIVEKIT_API_KEY, LIVEKIT_API_SECRET, TURN_SECRET and ACCESS_KEY (the passphrase people type
in the page; printed at the end). An existing .env is left alone unless --force.
"""

from __future__ import annotations

import argparse
import re
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def fresh_values(turn_host: str | None, public_url: str | None) -> dict[str, str]:
    values = {
        "LIVEKIT_API_KEY": "avatar-" + secrets.token_hex(6),
        "LIVEKIT_API_SECRET": secrets.token_urlsafe(36),
        "TURN_SECRET": secrets.token_urlsafe(36),
        "ACCESS_KEY": secrets.token_urlsafe(18),
    }
    if turn_host:
        values["TURN_HOST"] = turn_host
    if public_url:
        values["LIVEKIT_PUBLIC_URL"] = public_url
    return values


def render(example: str, values: dict[str, str]) -> str:
    """.env.example with each NAME=... line of ``values`` replaced; every comment kept."""
    out, seen = [], set()
    for line in example.splitlines():
        m = re.match(r"^([A-Z_]+)=", line)
        if m and m.group(1) in values:
            line = f"{m.group(1)}={values[m.group(1)]}"
            seen.add(m.group(1))
        out.append(line)
    missing = set(values) - seen
    if missing:
        raise SystemExit(f"error: .env.example has no line for {sorted(missing)}")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / ".env")
    ap.add_argument("--turn-host",
                    help="this machine's name or address as browsers reach it (TURN)")
    ap.add_argument("--public-url", help="LiveKit as browsers reach it, e.g. wss://host/rtc")
    ap.add_argument("--force", action="store_true", help="replace an existing file")
    args = ap.parse_args(argv)
    if args.out.exists() and not args.force:
        print(f"{args.out} exists; left as it is (--force replaces it, with new secrets)",
              file=sys.stderr)
        return 1
    values = fresh_values(args.turn_host, args.public_url)
    args.out.write_text(render((ROOT / ".env.example").read_text(), values))
    args.out.chmod(0o600)
    print(f"wrote {args.out} with new secrets.")
    print(f"ACCESS_KEY (people type it in the page): {values['ACCESS_KEY']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
