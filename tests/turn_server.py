"""Debian's coturn, started with the configuration the stack's preflight writes (for the tests)."""

from __future__ import annotations

import ipaddress
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stack.livekit_server import free_port

COMMAND = ["turnserver", "-c", "/run/stack/turnserver.conf", "--pidfile=/tmp/turnserver.pid"]


def self_signed(names: list[str], days: float = 30, start_days: float = -1) -> tuple[bytes, bytes]:
    """A certificate for ``names`` (DNS names or addresses), valid from ``start_days`` to
    ``days`` from now, and its key, as PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "x")])
    alt = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now + timedelta(days=start_days))
               .not_valid_after(now + timedelta(days=days)))
    if alt:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def self_signed_files(names: list[str], cert: Path, key: Path) -> tuple[Path, Path]:
    """self_signed(names) written to ``cert`` and ``key`` (the key readable by its owner alone,
    as certbot leaves one)."""
    for path, pem in zip((cert, key), self_signed(names), strict=True):
        path.write_bytes(pem)
    key.chmod(0o600)
    return cert, key


@contextmanager
def coturn(config: str, tmp: Path, port: int, command: list[str] = COMMAND,
           tls_port: int | None = None) -> Iterator[Path]:
    """coturn on ``port`` (UDP and TCP) with ``config`` as its file, and over TLS on ``tls_port``
    when given (the config names its certificate); yields its log (verbose: each session,
    allocation and peer is in it)."""
    turnserver = shutil.which("turnserver")
    if turnserver is None:
        pytest.fail("coturn is missing: run scripts/test.sh (apt-get install coturn)")
    conf, log = tmp / "turnserver.conf", tmp / "turn.log"
    conf.write_text(config)
    cmd = [turnserver if a == "turnserver" else a for a in command]
    cmd[cmd.index("-c") + 1] = str(conf)
    cmd = [a for a in cmd if not a.startswith("--pidfile")]
    cmd += [f"--listening-port={port}", f"--tls-listening-port={tls_port or free_port()}",
            "--no-dtls", "--verbose", f"--pidfile={tmp / 'turn.pid'}"]
    if not tls_port:
        cmd.append("--no-tls")
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        # listening before anyone asks: a TURN client over TCP that finds the port closed gets
        # no relay candidate at all (UDP ones retry)
        deadline = time.monotonic() + 15
        for wanted in [port] + ([tls_port] if tls_port else []):
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", wanted), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                pytest.fail(f"coturn did not listen on {wanted}:\n{log.read_text()[-2000:]}")
        yield log
    finally:
        proc.terminate()
        proc.wait(10)
