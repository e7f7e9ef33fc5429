"""The ICE servers a browser gets for a direct connection to the bot (TRANSPORT=smallwebrtc):
the stack's coturn, with time-limited credentials derived from TURN_SECRET (the TURN REST API
that coturn's ``use-auth-secret`` checks: username ``<expiry>:<id>``, password
base64(HMAC-SHA1(secret, username))). LiveKit hands its browsers the same kind itself
(stack/livekit_config.py).

A browser that cannot reach the bot's own addresses (NAT, a firewall that lets only the TURN
ports through) is relayed: coturn, on the bot's host, passes its packets to the bot's host
address, the one private peer coturn may reach (stack/preflight.py). The bot itself needs no
TURN: its answer carries its host addresses, and the browser's relayed checks reach them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

from .config import Settings

TURN_PORT = 3478  # coturn/turnserver.conf `listening-port`, UDP and TCP (over TLS: TURN_TLS_PORT)


def ice_servers(settings: Settings, now: float | None = None) -> list[dict]:
    """RTCIceServer dictionaries (``urls``, ``username``, ``credential``) valid for
    TURN_TTL_SECONDS; none without TURN_HOST. TURN over TLS only with a certificate
    (TURN_TLS_CERT): without one coturn does not listen there, and a URL a browser cannot reach
    only holds up its gathering."""
    if not settings.turn_host:
        return []
    expiry = int(time.time() if now is None else now) + settings.turn_ttl_seconds
    username = f"{expiry}:{secrets.token_hex(8)}"
    digest = hmac.new((settings.turn_secret or "").encode(), username.encode(), hashlib.sha1)
    host = settings.turn_host
    if ":" in host and not host.startswith("["):  # an IPv6 address
        host = f"[{host}]"
    urls = [f"turn:{host}:{TURN_PORT}?transport=udp", f"turn:{host}:{TURN_PORT}?transport=tcp"]
    if settings.turn_tls_cert:
        urls.append(f"turns:{host}:{settings.turn_tls_port}?transport=tcp")
    return [{"urls": urls,
             "username": username,
             "credential": base64.b64encode(digest.digest()).decode()}]
