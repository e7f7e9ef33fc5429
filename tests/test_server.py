"""The HTTP API: access control, validation, limits, minimal token grants, OpenAPI drift."""

import asyncio
import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from livekit import api as lkapi

from stack.config import ConfigError, Settings
from stack.metrics import REGISTRY, watch_event_loop
from stack.server import AtCapacity, NotLoaded, create_app, openapi_schema

SECRET = "s" * 40
KEY = "correct horse battery staple"


def _settings(**kw) -> Settings:
    base = dict(access_key=KEY, livekit_api_key="APIkey123", livekit_api_secret=SECRET,
                livekit_url="ws://127.0.0.1:1", livekit_public_url="wss://talk.example:7880",
                rate_limit_per_minute=5, _env_file=None)
    return Settings(**{**base, **kw})


@pytest.fixture
def client():
    return TestClient(create_app(_settings()))


AUTH = {"Authorization": f"Bearer {KEY}"}
BODY = {"name": "Alice"}


def test_token_has_minimal_grants_for_one_room(client):
    r = client.post("/token", json=BODY, headers=AUTH)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["url"] == "wss://talk.example:7880" and data["expires_in"] == 600
    claims = lkapi.TokenVerifier("APIkey123", SECRET).verify(data["token"])
    assert claims.identity == data["identity"] and claims.name == "Alice"
    g = claims.video
    assert g.room_join and g.room == data["room"] and data["room"].startswith("talk-")
    assert g.can_publish_sources == ["microphone", "camera"]
    assert g.can_publish_data and g.can_subscribe
    assert not (g.room_admin or g.room_create or g.room_list or g.room_record or g.hidden
                or g.can_update_own_metadata or g.ingress_admin or g.agent)


def test_missing_and_wrong_access_key(client):
    r = client.post("/token", json=BODY)
    assert r.status_code == 401 and "missing access key" in r.json()["detail"]
    r = client.post("/token", json=BODY, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 403 and r.json()["detail"] == "wrong access key"


@pytest.mark.parametrize("field,value", [("room", "../etc"), ("room", ""), ("room", "a" * 65),
                                         ("resume", ""), ("name", "n" * 65)])
def test_bad_names_are_422_with_a_reason(client, field, value):
    r = client.post("/token", json={**BODY, "room": "talk-x", "resume": "k", field: value},
                    headers=AUTH)
    assert r.status_code == 422
    assert field in {d["loc"][-1] for d in r.json()["detail"]}


@pytest.mark.parametrize("body", [{"room": "talk-x"}, {"resume": "k"}, {"identity": "me"}])
def test_a_room_needs_its_key_and_unknown_fields_are_refused(client, body):
    r = client.post("/token", json=body, headers=AUTH)
    assert r.status_code == 422, r.text


def test_only_the_key_holder_gets_back_into_a_conversation(client):
    first = client.post("/token", json=BODY, headers=AUTH).json()
    second = client.post("/token", json=BODY, headers=AUTH).json()
    assert first["room"] != second["room"] and first["identity"] != second["identity"]
    back = client.post("/token", json={"room": first["room"], "resume": first["resume"]},
                       headers=AUTH)
    assert back.status_code == 200 and back.json()["identity"] == first["identity"]
    stolen = client.post("/token", json={"room": first["room"], "resume": second["resume"]},
                         headers=AUTH)
    assert stolen.status_code == 403 and "someone else" in stolen.json()["detail"]
    made_up = client.post("/token", json={"room": "talk-mine", "resume": "x"}, headers=AUTH)
    assert made_up.status_code == 404


def test_oversized_body_is_413(client):
    r = client.post("/token", content=json.dumps({**BODY, "name": "x" * 5000}),
                    headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 413 and "4096" in r.json()["detail"]


def test_rate_limit_is_429():
    client = TestClient(create_app(_settings(rate_limit_per_minute=3)))
    codes = [client.post("/token", json=BODY, headers=AUTH).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]


def test_health_and_readiness_without_livekit(client):
    assert client.get("/health").json() == {"status": "ok"}
    r = client.get("/ready")
    assert r.status_code == 503
    assert r.json() == {"ready": False, "models_loaded": False, "livekit_reachable": False}


@pytest.mark.parametrize("kw,message", [
    (dict(livekit_api_key="devkey", livekit_api_secret="secret"), "dev keys"),
    (dict(livekit_api_secret="short"), "at least 32"),
    (dict(access_key=None), "ACCESS_KEY"),
])
def test_unsafe_configuration_is_refused_outside_dev_mode(kw, message):
    with pytest.raises(ConfigError, match=message):
        create_app(_settings(**kw))
    create_app(_settings(dev_mode=True, **kw))  # allowed on a development machine


def test_without_livekit_its_keys_are_not_asked_for_but_the_access_key_is():
    create_app(_settings(transport="smallwebrtc", livekit_api_key="devkey",
                         livekit_api_secret="secret"))
    with pytest.raises(ConfigError, match="ACCESS_KEY"):
        create_app(_settings(transport="smallwebrtc", access_key=None))


def test_a_turn_host_without_a_usable_secret_is_refused_even_in_dev_mode():
    for kw in (dict(turn_secret=None), dict(turn_secret="short", dev_mode=True)):
        with pytest.raises(ConfigError, match="TURN_SECRET must be at least 32"):
            create_app(_settings(transport="smallwebrtc", turn_host="turn.example", **kw))


TURN_SECRET = "t" * 40


def test_a_direct_connection_gets_the_turn_relay_with_credentials_of_its_own():
    peer = TestClient(create_app(_settings(transport="smallwebrtc", turn_host="turn.example",
                                           turn_secret=TURN_SECRET, turn_ttl_seconds=600)))
    assert peer.get("/webrtc/ice-servers").status_code == 401
    assert peer.get("/webrtc/ice-servers",
                    headers={"Authorization": "Bearer wrong"}).status_code == 403
    before = time.time()
    first, second = (peer.get("/webrtc/ice-servers", headers=AUTH).json() for _ in range(2))
    assert first["expires_in"] == 600
    [server] = first["ice_servers"]
    assert server["urls"] == ["turn:turn.example:3478?transport=udp",
                              "turn:turn.example:3478?transport=tcp"]
    # TURN REST credentials, as coturn's use-auth-secret checks them (a relay through a real
    # coturn: tests/test_smallwebrtc.py)
    expiry, _ = server["username"].split(":")
    assert int(before) + 600 <= int(expiry) <= time.time() + 600
    mac = hmac.new(TURN_SECRET.encode(), server["username"].encode(), hashlib.sha1).digest()
    assert base64.b64decode(server["credential"]) == mac
    assert second["ice_servers"][0]["username"] != server["username"]  # each their own
    # no TURN_HOST: none (one machine, or a LAN); and it is a direct connection's call only
    bare = TestClient(create_app(_settings(transport="smallwebrtc")))
    assert bare.get("/webrtc/ice-servers", headers=AUTH).json()["ice_servers"] == []
    livekit = TestClient(create_app(_settings(turn_host="turn.example", turn_secret=TURN_SECRET)))
    r = livekit.get("/webrtc/ice-servers", headers=AUTH)
    assert r.status_code == 404 and "POST /token" in r.json()["detail"]


def test_committed_openapi_matches_the_code():
    path = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"
    committed = json.loads(path.read_text())
    assert committed == openapi_schema(), "python -m stack.server > docs/openapi.json"


def test_ready_with_a_real_livekit_server_and_a_token_it_accepts(livekit):
    """/ready against a real LiveKit; the token we issue is accepted by that server."""
    from conftest import LIVEKIT_KEY, LIVEKIT_SECRET

    loaded = {"v": False}
    app = create_app(_settings(livekit_url=livekit.url, livekit_api_key=LIVEKIT_KEY,
                               livekit_api_secret=LIVEKIT_SECRET), models_ready=lambda: loaded["v"])
    client = TestClient(app)
    r = client.get("/ready")
    assert r.status_code == 503 and r.json()["livekit_reachable"] is True
    loaded["v"] = True
    assert client.get("/ready").json() == {"ready": True, "models_loaded": True,
                                           "livekit_reachable": True}

    issued = client.post("/token", json=BODY, headers=AUTH).json()
    token = issued["token"]
    import asyncio

    from livekit import rtc

    async def join():
        room = rtc.Room()
        await room.connect(livekit.url, token)
        name = room.name
        identity = room.local_participant.identity
        await room.disconnect()
        return name, identity

    assert asyncio.run(join()) == (issued["room"], issued["identity"])


def test_cors_allows_only_configured_origins():
    client = TestClient(create_app(_settings(cors_origins=["https://intranet.example"])))
    pre = {"Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization"}
    ok = client.options("/token", headers={"Origin": "https://intranet.example", **pre})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://intranet.example"
    bad = client.options("/token", headers={"Origin": "https://evil.example", **pre})
    assert "access-control-allow-origin" not in bad.headers
    # no CORS configured: same-origin only (the web client is served by this server)
    plain = TestClient(create_app(_settings()))
    r = plain.post("/token", json=BODY, headers={**AUTH, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_avatars_listed_and_served_from_the_avatars_dir(tmp_path):
    (tmp_path / "zoe.glb").write_bytes(b"glTF" + b"\0" * 60)
    (tmp_path / "mpfb.glb").write_bytes(b"glTF" + b"\0" * 12)
    (tmp_path / "notes.txt").write_text("not an avatar")
    client = TestClient(create_app(_settings(avatars_dir=tmp_path)))
    r = client.get("/avatars")
    assert r.status_code == 200
    assert r.json() == {"default": "mpfb", "avatars": [
        {"name": "mpfb", "url": "/avatars/mpfb.glb", "bytes": 16},
        {"name": "zoe", "url": "/avatars/zoe.glb", "bytes": 64}]}
    glb = client.get("/avatars/zoe.glb")
    assert glb.status_code == 200 and glb.content.startswith(b"glTF")
    assert glb.headers["content-type"] == "model/gltf-binary"
    for bad in ("notes.txt", "nobody.glb", ".hidden.glb", "..glb"):
        r = client.get(f"/avatars/{bad}")
        assert r.status_code == 404 and "GET /avatars" in r.json()["detail"], bad
    assert client.get("/avatars/..%2F..%2Fetc%2Fpasswd").status_code == 404


def test_voices_are_the_profiles_with_the_configured_default(models_dir):
    def voices(**kw):
        app = create_app(_settings(models_dir=models_dir, model_profile="test", **kw))
        return TestClient(app).get("/voices")

    r = voices()
    assert r.status_code == 200
    assert r.json() == {"voices": ["af_bella", "af_heart", "am_michael", "bf_emma"],
                        "default": "af_heart"}
    assert voices(tts_voice="bf_emma").json()["default"] == "bf_emma"


def test_default_avatar_falls_back_to_the_first_one(tmp_path):
    (tmp_path / "vroid.glb").write_bytes(b"glTF")
    client = TestClient(create_app(_settings(avatars_dir=tmp_path)))
    assert client.get("/avatars").json()["default"] == "vroid"
    empty = TestClient(create_app(_settings(avatars_dir=tmp_path / "none")))
    assert empty.get("/avatars").json() == {"avatars": [], "default": None}


def test_web_client_served_at_root_and_missing_build_explained(tmp_path):
    (tmp_path / "index.html").write_text("<html>avatar</html>")
    client = TestClient(create_app(_settings(web_dir=tmp_path)))
    assert client.get("/").text == "<html>avatar</html>"
    assert client.get("/health").json() == {"status": "ok"}  # API routes win over the files
    bare = TestClient(create_app(_settings(web_dir=tmp_path / "missing")))
    r = bare.get("/")
    assert r.status_code == 404 and "npm --prefix web run build" in r.json()["detail"]


@pytest.mark.parametrize("refusal,code,retry", [
    (AtCapacity(3), "busy", "30"),
    (NotLoaded("models are still loading; retry shortly"), "loading", "10"),
])
def test_no_conversation_to_be_had_is_503_with_a_code_and_retry_after(refusal, code, retry):
    async def refuse(room: str) -> None:
        raise refusal

    client = TestClient(create_app(_settings(), on_conversation=refuse))
    r = client.post("/token", json=BODY, headers=AUTH)
    assert r.status_code == 503 and r.headers["Retry-After"] == retry
    assert r.json() == {"detail": str(refusal), "code": code}
    if code == "busy":
        detail = r.json()["detail"]
        assert "all avatars are busy" in detail and "3 conversations" in detail


# The parts of a browser's offer the API checks (aiortc parses the rest: tests/test_smallwebrtc.py)
OFFER_SDP = ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
             "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel"
             "\r\n")
OFFER = {"sdp": OFFER_SDP, "type": "offer"}


def test_the_page_learns_the_transport_and_each_call_belongs_to_one():
    livekit = TestClient(create_app(_settings()))
    assert livekit.get("/config").json() == {"transport": "livekit"}
    r = livekit.post("/webrtc/offer", json=OFFER, headers=AUTH)
    assert r.status_code == 404 and "POST /token" in r.json()["detail"]

    peer = TestClient(create_app(_settings(transport="smallwebrtc"), models_ready=lambda: True))
    assert peer.get("/config").json() == {"transport": "smallwebrtc"}
    r = peer.post("/token", json=BODY, headers=AUTH)
    assert r.status_code == 404 and "POST /webrtc/offer" in r.json()["detail"]
    # no LiveKit to reach: ready once the models are
    assert peer.get("/ready").json() == {"ready": True, "models_loaded": True,
                                         "livekit_reachable": None}


@pytest.mark.parametrize("body,status,reason", [
    ({**OFFER, "sdp": OFFER_SDP.replace("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", "")}, 422,
     "first media section must be audio"),
    ({**OFFER, "sdp": OFFER_SDP.split("m=application")[0]}, 422, "no data channel"),
    ({**OFFER, "type": "answer"}, 422, "'offer'"),
    ({**OFFER, "pc_id": "someone-elses"}, 422, "Extra inputs"),
    ({"type": "offer"}, 422, "Field required"),
])
def test_a_bad_offer_is_refused_with_a_reason(body, status, reason):
    called = []

    async def answer(sdp: str, kind: str) -> dict:
        called.append(sdp)
        return {"sdp": "v=0", "type": "answer"}

    client = TestClient(create_app(_settings(transport="smallwebrtc"), on_offer=answer))
    r = client.post("/webrtc/offer", json=body, headers=AUTH)
    assert r.status_code == status and reason in r.text, r.text
    assert not called


def test_an_offer_is_guarded_like_a_token_request():
    answers = []

    async def answer(sdp: str, kind: str) -> dict:
        if "refuse" in sdp:
            raise AtCapacity(2)
        if "unparsable" in sdp:
            raise ValueError("no common audio codec")
        answers.append((sdp, kind))
        return {"sdp": "v=0 answer", "type": "answer", "pc_id": "internal"}

    client = TestClient(create_app(_settings(transport="smallwebrtc", rate_limit_per_minute=8),
                                   on_offer=answer))
    assert client.post("/webrtc/offer", json=OFFER).status_code == 401
    assert client.post("/webrtc/offer", json=OFFER,
                       headers={"Authorization": "Bearer wrong"}).status_code == 403
    r = client.post("/webrtc/offer", json=OFFER, headers=AUTH)
    assert r.status_code == 200 and r.json() == {"sdp": "v=0 answer", "type": "answer"}
    assert answers == [(OFFER_SDP, "offer")]
    r = client.post("/webrtc/offer", json={**OFFER, "sdp": OFFER_SDP + "a=unparsable\r\n"},
                    headers=AUTH)
    assert r.status_code == 400 and "no common audio codec" in r.json()["detail"]
    r = client.post("/webrtc/offer", json={**OFFER, "sdp": OFFER_SDP + "a=refuse\r\n"},
                    headers=AUTH)
    assert r.status_code == 503 and r.headers["Retry-After"] == "30"
    assert r.json()["code"] == "busy" and "all avatars are busy" in r.json()["detail"]
    # an offer may be larger than other bodies (its ICE candidates), within bounds: its SDP's
    # length (a 422 that says so), and the body's (413)
    big = {**OFFER, "sdp": OFFER_SDP + "a=x\r\n" * 2000}
    assert len(json.dumps(big)) > 4096
    assert client.post("/webrtc/offer", json=big, headers=AUTH).status_code == 200
    long = {**OFFER, "sdp": OFFER_SDP + "a=x\r\n" * 4000}
    r = client.post("/webrtc/offer", json=long, headers=AUTH)
    assert r.status_code == 422 and "16384 characters" in r.text, r.text
    huge = json.dumps({**OFFER, "sdp": OFFER_SDP + "a=x\r\n" * 20000})
    r = client.post("/webrtc/offer", content=huge,
                    headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 413 and "99328" in r.json()["detail"]
    # the same rate limit per address as /token: 8 a minute here, seven calls above counted (the
    # 413 never reached the API), so one more passes
    codes = [client.post("/webrtc/offer", json=OFFER, headers=AUTH).status_code for _ in range(2)]
    assert codes == [200, 429]


async def test_a_blocked_event_loop_shows_in_its_lag_histogram():
    def observed(above: str | None = None) -> float:
        total = REGISTRY.get_sample_value("avatar_event_loop_lag_seconds_count") or 0.0
        if above is None:
            return total
        return total - REGISTRY.get_sample_value("avatar_event_loop_lag_seconds_bucket",
                                                 {"le": above})

    before = {le: observed(le) for le in (None, "0.05", "0.2", "0.5")}
    watcher = asyncio.create_task(watch_event_loop())
    await asyncio.sleep(0.2)  # timers on time
    time.sleep(0.3)  # a long synchronous step holds the loop
    await asyncio.sleep(0.1)
    watcher.cancel()
    added = {le: observed(le) - n for le, n in before.items()}
    assert added[None] >= 5
    # the one timer the step held is about 0.3 s late (others may be a little late on a busy
    # machine, not that late)
    assert added["0.05"] >= 1 and (added["0.2"], added["0.5"]) == (1, 0), added
