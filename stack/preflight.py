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
  one exception to its refusal to relay into private networks (LiveKit's media ports are there);
  with TURN_TLS_CERT, a copy of the certificate and key coturn can read (checked first: PEM, the
  key of that certificate, valid today, naming TURN_HOST), so TURN over TLS is offered.
The secrets reach both without sitting in a committed file or on a command line. Exit status 2
and one line per problem when something must change.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .config import (
    REPO_ROOT,
    TURN_SECRET_SHORT,
    ConfigError,
    Settings,
    check_config,
    get_settings,
)
from .livekit_config import livekit_config

COTURN_BASE = REPO_ROOT / "coturn" / "turnserver.conf"
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


def turn_tls_port_problems(settings: Settings, coturn_base: Path = COTURN_BASE) -> list[str]:
    """TURN_TLS_PORT where another of the stack's TCP listeners already is (they all share this
    host's network): coturn, or the other one, would fail to start."""
    if not settings.turn_tls_cert:
        return []
    livekit = livekit_config(settings)
    turn = re.search(r"^listening-port=(\d+)", coturn_base.read_text(), re.M)
    taken = [(settings.http_port, "the bot's HTTP_PORT"),
             (livekit.get("port"), "LiveKit's signalling port (livekit.yaml `port`)"),
             (livekit.get("rtc", {}).get("tcp_port"), "LiveKit's media over TCP (livekit.yaml "
              "`rtc.tcp_port`)"),
             (int(turn.group(1)) if turn else None, "coturn's TURN port (turnserver.conf "
              "`listening-port`)")]
    return [f"TURN_TLS_PORT={port} is {name}: pick another (5349, or 443 where nothing else on "
            "this host listens there)" for port, name in taken if port == settings.turn_tls_port]


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


def coturn_config(settings: Settings, addresses: list[str], tls: tuple[Path, Path] | None = None,
                  base: Path = COTURN_BASE) -> str:
    """coturn/turnserver.conf with the shared secret, and relaying allowed to this host only;
    ``tls``: the certificate and key files as coturn reads them (TURN over TLS), else none."""
    text = re.sub(r"^tls-listening-port=.*$", f"tls-listening-port={settings.turn_tls_port}",
                  base.read_text().rstrip(), flags=re.M)
    lines = [text, "", "# written by stack/preflight.py",
             f"static-auth-secret={settings.turn_secret}"]
    lines += [f"allowed-peer-ip={a}" for a in addresses]
    # without a certificate coturn would only warn and serve no TLS; said here, it does not try
    lines += [f"cert={tls[0]}", f"pkey={tls[1]}"] if tls else ["no-tls"]
    return "\n".join(lines) + "\n"


def turn_tls_problems(cert_pem: bytes, key_pem: bytes, host: str,
                      now: datetime | None = None) -> list[str]:
    """What would make browsers refuse TURN over TLS with this certificate and key (TURN_TLS_CERT,
    TURN_TLS_KEY): not PEM, a key of another certificate, expired or not yet valid, or not
    naming ``host`` (TURN_HOST, the name browsers are given)."""
    now = now or datetime.now(timezone.utc)
    try:
        leaf = x509.load_pem_x509_certificates(cert_pem)[0]
    except ValueError:
        return ["TURN_TLS_CERT is not a PEM certificate (-----BEGIN CERTIFICATE-----)"]
    found = []
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        found.append("TURN_TLS_KEY is not a PEM private key without a passphrase")
    else:
        spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
            found.append("TURN_TLS_KEY is not the key of TURN_TLS_CERT")
    if leaf.not_valid_after_utc < now:
        found.append(f"TURN_TLS_CERT expired on {leaf.not_valid_after_utc:%Y-%m-%d}: renew it")
    elif leaf.not_valid_before_utc > now:
        found.append(f"TURN_TLS_CERT is valid only from {leaf.not_valid_before_utc:%Y-%m-%d}")
    names = certificate_names(leaf)
    if not any(_name_matches(name, host) for name in names):
        found.append(f"TURN_TLS_CERT names {', '.join(names) or 'nothing'}, not TURN_HOST={host}: "
                     "browsers would refuse it")
    return found


def certificate_names(cert: x509.Certificate) -> list[str]:
    """The DNS names and addresses a certificate is for (browsers read only these, not the CN)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return (san.get_values_for_type(x509.DNSName)
            + [str(a) for a in san.get_values_for_type(x509.IPAddress)])


def _name_matches(name: str, host: str) -> bool:
    host = host.strip("[]").lower().rstrip(".")
    name = name.lower().rstrip(".")
    try:
        return ipaddress.ip_address(host) == ipaddress.ip_address(name)
    except ValueError:
        pass
    if name.startswith("*."):  # a wildcard stands for exactly one label
        first, _, rest = host.partition(".")
        return bool(first) and rest == name[2:]
    return name == host


def read_turn_tls(settings: Settings, mounted: Path | None) -> tuple[bytes, bytes]:
    """TURN_TLS_CERT's and TURN_TLS_KEY's contents: from ``mounted``/cert.pem and key.pem where
    Compose mounts them into the preflight, else from the paths themselves. A file that cannot be
    read raises ConfigError naming the setting and its path."""
    files = {"TURN_TLS_CERT": (settings.turn_tls_cert, "cert.pem"),
             "TURN_TLS_KEY": (settings.turn_tls_key, "key.pem")}
    out = []
    for name, (path, inside) in files.items():
        try:
            out.append(((mounted / inside) if mounted else Path(path)).read_bytes())
        except OSError as e:
            raise ConfigError(f"{name}={path} cannot be read: {e.strerror}") from e
    return out[0], out[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--livekit-config", type=Path, help="where to write LiveKit's configuration")
    ap.add_argument("--coturn-config", type=Path, help="where to write coturn's configuration")
    ap.add_argument("--turn-tls-dir", type=Path, help="where TURN_TLS_CERT and TURN_TLS_KEY are "
                    "mounted, as cert.pem and key.pem (default: read their own paths)")
    args = ap.parse_args(argv)
    settings = get_settings()
    found = problems(settings, turn=args.coturn_config is not None)
    tls = None
    if not found and settings.turn_tls_cert and args.coturn_config:
        found += turn_tls_port_problems(settings)
        try:
            tls = read_turn_tls(settings, args.turn_tls_dir)
            found += turn_tls_problems(*tls, host=settings.turn_host or "")
        except ConfigError as e:
            found.append(str(e))
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
        files = (args.coturn_config.parent / "turn-tls-cert.pem",
                 args.coturn_config.parent / "turn-tls-key.pem")
        for path, content in zip(files, tls or (None, None), strict=True):
            path.unlink(missing_ok=True)  # no key left behind once TLS is turned off
            if content is not None:
                # a copy coturn (nobody in its image) can read, whoever owns the original
                path.write_bytes(content)
                path.chmod(0o644)
        args.coturn_config.write_text(
            coturn_config(settings, host_addresses(settings), files if tls else None))
        # coturn's image runs as nobody; the volume itself is readable by root only on the host
        args.coturn_config.chmod(0o644)
    turn = (f"TURN via {settings.turn_host}{' (and over TLS)' if tls else ''}"
            if settings.turn_host else "no TURN (TURN_HOST empty)")
    print(f"preflight ok: secrets set, {turn}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
