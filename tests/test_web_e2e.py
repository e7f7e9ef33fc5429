"""The web client in real headless Chromium (Debian's, software WebGL) against the real stack:
LiveKit server + ``python -m stack.app`` on the `test` models + the built web client, with a
spoken question (a WAV) as the microphone. One conversation; each test checks one part of it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import jiwer
import numpy as np
import pytest
from conftest import BARGE_IN, LIVEKIT_KEY, LIVEKIT_SECRET
from turn_server import coturn
from web_session import (
    ROOT,
    SHARED_AVATARS,
    WEB,
    BotProcess,
    frame_grids,
    kokoro_reference,
    lip_sync_offsets,
    load_session,
    run_session,
    summarize,
    write_mic_wav,
)

from stack.ice import TURN_PORT
from stack.livekit_server import free_port
from stack.preflight import coturn_config, host_addresses

QUESTION = "Can you tell me a short story about a friendly robot?"
ARTIFACTS = ROOT / "test-artifacts" / "web"


def _bot(settings, livekit, log: Path, **env: str) -> BotProcess:
    """``python -m stack.app`` on the `test` models and the test LiveKit, plus ``env``."""
    return BotProcess({
        "MODEL_PROFILE": "test", "MODELS_DIR": str(settings.models_dir), "DEVICE": "cpu",
        "LIVEKIT_URL": livekit.url, "LIVEKIT_API_KEY": LIVEKIT_KEY,
        "LIVEKIT_API_SECRET": LIVEKIT_SECRET, "AVATARS_DIR": str(SHARED_AVATARS), **env,
    }, free_port(), log)


def _tail(path: Path, n: int) -> list[str]:
    return path.read_text(errors="replace").splitlines()[-n:] if path.is_file() else []


def _question_wav(engines, path: Path) -> Path:
    """QUESTION spoken, as the fake microphone's file (it loops: one question per 30 s)."""
    voice = np.concatenate([c.audio for c in engines.tts.synthesize(QUESTION, voice="am_michael")])
    write_mic_wav(path, voice, 24000, lead_s=0.5, tail_s=25)
    return path


@pytest.fixture(scope="module")
def session(livekit, engines, settings, tmp_path_factory):
    if not (WEB / "out" / "index.html").is_file():
        pytest.fail("the web client is not built: run scripts/test.sh (npm --prefix web run build)")
    if not any(SHARED_AVATARS.glob("*.glb")):
        pytest.fail(f"no test avatars in {SHARED_AVATARS} (the shared data beside the checkout)")
    if not shutil.which("chromium") and not Path("/usr/bin/chromium").exists():
        pytest.fail("Chromium is missing: run scripts/test.sh (apt-get install chromium)")
    tmp = tmp_path_factory.mktemp("web")
    wav = _question_wav(engines, tmp / "question.wav")
    bot = _bot(settings, livekit, tmp / "bot.log", DEV_MODE="true", DEFAULT_AVATAR="brunette-t")
    try:
        bot.wait_ready()
        # a person's own file (not vroid.glb: meshopt-compressed, which TalkingHead 1.7 cannot
        # load)
        mine = tmp / "my-avatar.glb"
        shutil.copy(SHARED_AVATARS / "brunette-t.glb", mine)
        # 60 s of talk: two or three replies, enough bot words for the lip-sync measure
        yield run_session(bot.url, wav, ARTIFACTS, talk_s=60, custom_glb=mine)
    finally:
        bot.stop()


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def test_page_loads_only_from_the_local_origin_and_renders_the_avatar(session):
    r = session.result
    assert "error" not in r, r.get("error")
    assert r["foreignRequests"] == []
    assert r["consoleErrors"] == []
    assert r["avatars"] == ["brunette-t", "vroid"]  # the operator's folder, as the server lists it
    shot = r["screenshot"]  # saved as test-artifacts/web/avatar.png
    assert (session.out / "avatar.png").stat().st_size > 10_000
    assert shot["std"] > 20 and shot["colours"] > 500, shot  # not a blank or flat canvas
    assert r["steps"]["connected"] > r["steps"]["avatar-shown"]


def test_a_persons_own_glb_file_replaces_the_avatar(session):
    r = session.result
    assert "custom-avatar-shown" in r["steps"], r.get("error")
    custom = r["customScreenshot"]  # test-artifacts/web/avatar-custom.png
    assert custom["std"] > 20 and custom["colours"] > 500, custom


def test_microphone_speech_is_transcribed_and_the_bot_answers_aloud(session):
    lines = session.result["snapshot"]["lines"]
    first_user = next(line["text"] for line in lines if line["role"] == "user")
    assert jiwer.wer(" ".join(_words(QUESTION)), " ".join(_words(first_user))) <= 0.3, first_user
    bot = [line for line in lines if line["role"] == "bot"]
    assert bot and len(bot[0]["words"]) >= 3, bot
    # its audio played: the page heard the bot's voice on the WebRTC track
    rate = session.result["sampleRate"]
    rms = np.sqrt(np.convolve(session.capture ** 2, np.ones(rate // 10) / (rate // 10), "valid"))
    assert (rms > 0.02).sum() / rate > 1.0, "less than a second of audible bot speech"


def _mouth_follows_the_timings(r: dict) -> None:
    chunks = [c for c in r["chunks"] if c["scheduled"]]
    assert chunks and all(c["msg"]["source"] == "model" for c in chunks)
    spoken = [(c["scheduled"]["start"], c["scheduled"]["end"]) for c in chunks]
    during = [lvl for t, lvl in r["mouth"] if any(a <= t <= b for a, b in spoken)]
    silent = [lvl for t, lvl in r["mouth"] if all(t < a - 500 or t > b + 500 for a, b in spoken)]
    assert during and max(during) > 0.3, "the mouth never opened while the bot spoke"
    assert silent and np.median(silent) < 0.05, "the mouth moves when nobody speaks"


def test_visemes_move_the_mouth_while_the_bot_speaks(session):
    _mouth_follows_the_timings(session.result)


def test_muting_the_microphone_stops_transcription(session):
    r = session.result
    assert len(r["transcriptBeforeMute"]) >= 1
    # what was said before the click may still arrive; after that, 25 s (a whole loop of the
    # microphone file, which repeats the question) bring nothing new
    assert r["afterMute"] == r["afterMuteStart"], r["afterMute"][len(r["afterMuteStart"]):]


def _typed_reply_voices(r: dict) -> set[str]:
    """The voices of the replies begun after the typed question was sent. A typed message
    interrupts the reply being spoken (RTVI send-text, run_immediately): a chunk of that reply
    may still arrive just after Enter (a CI run: the test model's "I'm sorry. I'm sorry. ..." in
    the old voice 33 ms after it), but none once the typed reply has begun."""
    sent = r["typed"]["sentAt"]
    earlier = {c["msg"]["turn_id"] for c in r["chunks"] if c["arrival"] <= sent}
    later = [c for c in r["chunks"] if c["arrival"] > sent]
    replies = [c for c in later if c["msg"]["turn_id"] not in earlier]
    assert replies, "no reply began after the typed question"
    began = min(c["arrival"] for c in replies)
    assert not [c for c in later if c["msg"]["turn_id"] in earlier and c["arrival"] > began], \
        "the reply being spoken went on after the typed question's reply began"
    return {c["msg"]["voice"] for c in replies}


def test_a_typed_message_is_answered_aloud_while_the_microphone_is_muted(session):
    r = session.result
    typed = r.get("typed")
    assert typed, r.get("error")
    # too long: refused in plain words with the numbers, nothing sent, the text left in the box
    limit = typed["maxChars"]
    assert f"{limit + 1} characters" in typed["error"] and f"at most {limit}" in typed["error"]
    assert typed["keptChars"] == limit + 1 and typed["linesAfterRefusal"] == typed["linesBefore"]
    # the question: shown as the person's, answered with the bot's words, the box cleared
    lines = r["snapshot"]["lines"][typed["linesAfterRefusal"]:]
    assert lines[0]["role"] == "user" and lines[0]["text"] == typed["text"]
    reply = next(line for line in lines if line["role"] == "bot")
    assert "paris" in _words(" ".join(reply["words"])), reply
    assert typed["boxAfterSend"] == "" and typed["errorAfterSend"] == 0
    # the voice picked in the page before typing (GET /voices: the profile's) speaks the reply
    assert typed["voices"] == ["af_bella", "af_heart", "am_michael", "bf_emma"]
    assert typed["voice"] and typed["voice"] != "af_heart"
    assert _typed_reply_voices(r) == {typed["voice"]}
    # heard: the bot's voice on the WebRTC track after the message was sent ...
    rate = r["sampleRate"]
    first = next((i for i, t in r["blockTimes"] if t > typed["sentAt"]), None)
    assert first is not None, "nothing was heard after the message was sent"
    after = session.capture[first:]
    rms = np.sqrt(np.convolve(after ** 2, np.ones(rate // 10) / (rate // 10), "valid"))
    assert (rms > 0.02).sum() / rate > 0.5, "less than half a second of audible bot speech"
    # ... with the mouth moving to the reply's timing messages
    spoken = [(c["scheduled"]["start"], c["scheduled"]["end"]) for c in r["chunks"]
              if c["scheduled"] and c["arrival"] > typed["sentAt"]]
    assert spoken and all(c["msg"]["source"] == "model" for c in r["chunks"]
                          if c["arrival"] > typed["sentAt"])
    during = [lvl for t, lvl in r["mouth"] if any(a <= t <= b for a, b in spoken)]
    assert during and max(during) > 0.3, "the mouth never opened for the typed message's reply"
    # the page's response time for it counts from the message, not from the person's last words
    # (heard onset - sending, less the moment the message took to leave; before, it was ~30 s)
    turn = next(c["msg"]["turn_id"] for c in r["chunks"] if c["arrival"] > typed["sentAt"])
    onset = next((a["at"] for a in r["aligns"] if a["turnId"] == turn), None)
    latency = next((x for x in r["snapshot"]["latencies"] if x["turnId"] == turn), None)
    assert onset is not None and latency is not None, (turn, r["aligns"],
                                                       r["snapshot"]["latencies"])
    assert 0 <= onset - typed["sentAt"] - latency["responseMs"] < 500, (latency, onset, typed)


def test_lip_sync_offset_is_measured_against_the_heard_audio(session, engines):
    frames = frame_grids(session)["60 Hz display"]
    offsets = lip_sync_offsets(session, kokoro_reference(engines.tts), frames)
    ours, text = summarize(offsets["ours"]), summarize(offsets["text"])
    # what the page did with each message and each heard onset, for a failure's message
    ours["chunks"] = [(c["msg"]["seq"], c["msg"]["lead_ms"], c["scheduled"] and
                       {k: round(c["scheduled"][k]) for k in ("late", "shift", "drift")})
                      for c in session.result["chunks"]]
    ours["aligns"] = [{k: round(v) if isinstance(v, float) else v for k, v in a.items()
                       if k != "turnId"} for a in session.result.get("aligns", [])]
    assert ours["matched"] >= 10, ours  # bot words located in what the page heard
    # Scheduling on the heard audio is close; a gross error (ignoring lead_ms or the receive
    # delay, a unit mix-up) puts the median hundreds of ms off.
    assert abs(ours["p50"]) < 100, ours
    assert ours["p95_abs"] <= text["p95_abs"], (ours, text)
    # Inside the broadcast window (IS-191) for most words: three `bench.py --web` runs in a row
    # gave 97, 94 and 95 % with the mouth lead and the jitter buffer followed, and 97, 96 and 97 %
    # once late packets were followed too (docs/benchmarks.md); 60-74 % before them. A regression
    # to that fails here; the floor sits below the runs because this session is shorter (fewer
    # words, so one bad chunk weighs more).
    assert ours["in_window"] >= 0.8, ours


def test_the_avatar_is_framed_like_a_person_in_a_video_call(livekit, settings, tmp_path):
    """At desktop and phone sizes: the eyes about a third of the way down the avatar's view and
    about centred across it, the shoulder joints well below them and inside the view
    (web/src/avatar/framing.ts, from the model's bones). Screenshots:
    test-artifacts/web/framing-*.png."""
    bot = _bot(settings, livekit, tmp_path / "bot.log", DEV_MODE="true",
               DEFAULT_AVATAR="brunette-t")
    try:
        bot.wait_ready()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(["node", "e2e/framing.mjs", bot.url, str(ARTIFACTS)], cwd=WEB,
                             check=True, capture_output=True, text=True, timeout=300).stdout
    finally:
        bot.stop()
    framed = json.loads(out.strip().splitlines()[-1])
    for size in ("desktop", "phone"):
        eyes, shoulders = framed[size]["eyes"], framed[size]["shoulders"]
        # about a third, give or take the idle sway and breathing (the median of samples once
        # the camera is at rest; a camera still easing in gave 0.45); TalkingHead's own: ~0.5
        assert 0.28 <= eyes["fromTop"] <= 0.42, (size, framed[size])
        # centred, give or take the avatar's own idle sway (its head moves; the camera does not)
        assert 0.33 <= eyes["fromLeft"] <= 0.67, (size, framed[size])
        assert eyes["fromTop"] + 0.15 <= shoulders["fromTop"] <= 0.95, (size, framed[size])
        assert (ARTIFACTS / f"framing-{size}.png").stat().st_size > 10_000


@pytest.fixture
def audio_output():
    """A PulseAudio server with a null sink, for Firefox: it runs no Web Audio without an audio
    output device (Chromium fakes one), and a CI machine has none. Yields the environment that
    points a browser at it."""
    pulse = shutil.which("pulseaudio")
    if not pulse:
        pytest.fail("PulseAudio is missing: run scripts/test.sh (apt-get install pulseaudio)")
    runtime = Path(tempfile.mkdtemp(prefix="pulse-"))  # short: it holds a unix socket
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    subprocess.run([pulse, "--daemonize=yes", "--exit-idle-time=-1", "-n",
                    "--load=module-null-sink sink_name=null", "--load=module-native-protocol-unix"],
                   env=env, check=True, timeout=30, capture_output=True)
    try:
        yield env
    finally:
        subprocess.run([pulse, "--kill"], env=env, timeout=30)
        shutil.rmtree(runtime, ignore_errors=True)


# Over SmallWebRTC too since 2026-12-07. Firefox's page hangs now and then as the conversation's
# audio starts (3 times in 26 runs, 2026-11-27; 7 of 74 connections in web/e2e/firefox-connects.mjs
# loops, 2026-12-06): a deadlock inside Firefox's audio stack (web/e2e/firefox.mjs says which), met
# by up to two more tries in a fresh Firefox, also when it comes just after connecting (one CI run,
# 2026-12-07: the page stopped answering, so each try may take puppeteer's 180 s protocol timeout
# before the next, hence 720 s in all). The other failure that kept this transport out of CI
# (2 of 4 runs passed, 2026-12-06: only 7 words found by their sound, 10 needed) most likely came
# from the fixed wait after each reply, which could end the recording before the reply did;
# waiting until the reply is over (untilSpoken), 6 runs of 6 passed with 95-110 words each (one
# after a retry). A failure records Firefox's threads and the earlier tries (session.json).
@pytest.mark.parametrize("transport", ["livekit", "smallwebrtc"])
def test_firefox_answers_a_typed_question_aloud_with_the_mouth_moving(
        livekit, settings, engines, audio_output, tmp_path, transport):
    """Debian's Firefox ESR over WebDriver BiDi (web/e2e/firefox.mjs): only local requests, the
    avatar rendered, a conversation connected (through LiveKit, or directly to the bot's aiortc),
    a typed question answered with the bot's voice heard on the WebRTC track and the mouth
    moving to its timing messages, in step with it."""
    firefox = shutil.which("firefox-esr")
    if not firefox or not shutil.which("xvfb-run"):
        pytest.fail("Firefox ESR or Xvfb is missing: run scripts/test.sh "
                    "(apt-get install firefox-esr xvfb)")
    out = ARTIFACTS / f"firefox-{transport}"
    bot = _bot(settings, livekit, tmp_path / "bot.log", DEV_MODE="true",
               DEFAULT_AVATAR="brunette-t", TRANSPORT=transport)
    try:
        bot.wait_ready()
        # a windowed Firefox on a virtual display: headless, it finds no GL driver for WebGL
        subprocess.run(["xvfb-run", "-a", "node", "e2e/firefox.mjs", bot.url, str(out)],
                       cwd=WEB, check=True, timeout=720, env={**audio_output, "FIREFOX": firefox})
    finally:
        bot.stop()
    s = load_session(out)
    r = s.result
    if "error" in r:  # everything that says where it stopped, unabridged (CI keeps no artifacts)
        pytest.fail("\n".join([
            r["error"], json.dumps({k: r.get(k) for k in (
                "notConnected", "consoleErrors", "console", "steps", "threads", "earlierTries")},
                indent=1),
            "bot log (last 40 lines):", *_tail(tmp_path / "bot.log", 40),
            "LiveKit log (last 40 lines):", *_tail(Path(livekit.log.name), 40)]))
    assert r["foreignRequests"] == [] and r["consoleErrors"] == [], r
    assert r["screenshot"]["std"] > 20 and r["screenshot"]["colours"] > 500, r["screenshot"]
    lines = r["snapshot"]["lines"]
    assert [line["role"] for line in lines] == ["user", "bot", "user", "bot"], lines
    assert lines[0]["text"] == "What is the capital of France?"
    assert "paris" in _words(" ".join(lines[1]["words"])), lines[1]
    # heard: at least half a second of the bot's voice on the track after the question ...
    rate = r["sampleRate"]
    assert rate > 0 and len(s.capture), "the page recorded nothing of the bot's track"
    first = next((i for i, t in r["blockTimes"] if t > r["sentAt"][0]), None)
    assert first is not None, "nothing was heard after the message was sent"
    after = s.capture[first:]
    rms = np.sqrt(np.convolve(after ** 2, np.ones(rate // 10) / (rate // 10), "valid"))
    assert (rms > 0.02).sum() / rate > 0.5, "less than half a second of audible bot speech"
    # ... and the mouth moving while the reply's chunks were scheduled
    spoken = [(c["scheduled"]["start"], c["scheduled"]["end"]) for c in r["chunks"]
              if c["scheduled"]]
    during = [lvl for t, lvl in r["mouth"] if any(a <= t <= b for a, b in spoken)]
    assert during and max(during) > 0.3, "the mouth never opened for the reply"
    # in step: the page heard the voice (its onsets corrected the schedule) and the words'
    # mouth shapes sit near their sound. Only a gross error fails here (ignoring lead_ms or the
    # receive delay puts the median hundreds of ms off): Firefox's share inside IS-191 varied
    # from 56 to 100 % in four runs of this test (docs/benchmarks.md), so it is recorded, not
    # held to Chromium's floor.
    assert r["aligns"], "no onset of the bot's voice was heard: the schedule was never corrected"
    ours = summarize(lip_sync_offsets(s, kokoro_reference(engines.tts),
                                      frame_grids(s)["60 Hz display"])["ours"])
    (out / "lipsync.json").write_text(json.dumps(ours))
    assert ours["matched"] >= 10 and abs(ours["p50"]) < 100, ours


@pytest.mark.parametrize("transport", ["livekit", "smallwebrtc"])
def test_errors_are_shown_in_plain_words(livekit, settings, tmp_path, transport):
    """A server with an access key that holds one conversation: no key, a wrong key, a refused
    microphone, every avatar busy, no server; through either transport."""
    key = "correct horse battery staple"
    bot = _bot(settings, livekit, tmp_path / "bot.log", ACCESS_KEY=key, MAX_CONVERSATIONS="1",
               TRANSPORT=transport)
    try:
        bot.wait_ready()
        out = subprocess.run(["node", "e2e/errors.mjs", bot.url, key], cwd=WEB, check=True,
                             capture_output=True, text=True, timeout=300).stdout
    finally:
        bot.stop()
    shown = json.loads(out.strip().splitlines()[-1])
    assert "error" not in shown, shown["error"]
    assert "needs an access key" in shown["noKey"]
    assert "Access refused" in shown["wrongKey"]
    assert "Microphone access was denied" in shown["micDenied"]
    assert "All avatars are busy" in shown["busy"] and "30 seconds" in shown["busy"]
    assert "server cannot be reached" in shown["unreachable"]


def test_a_failed_answer_is_spoken_as_an_apology_and_explained_in_the_page(
        livekit, settings, engines, tmp_path):
    """Every generation fails (a context window too small for the system prompt: an operator's
    mistake): the person hears the apology and the page says what went wrong."""
    wav = _question_wav(engines, tmp_path / "question.wav")
    bot = _bot(settings, livekit, tmp_path / "bot.log", DEV_MODE="true",
               DEFAULT_AVATAR="brunette-t", LLM_CONTEXT_TOKENS="280", LLM_MAX_TOKENS="256")
    try:
        bot.wait_ready()
        r = subprocess.run(["node", "e2e/page.mjs", bot.url, "", str(tmp_path / "avatar.png"),
                            str(wav), "120"], cwd=WEB, capture_output=True, text=True,
                           timeout=300)
    finally:
        bot.stop()
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert "error" not in result, result["error"]
    notice = result["notices"][0]
    assert "problem with that turn" in notice and "LLM_CONTEXT_TOKENS" in notice, notice
    assert _words(" ".join(result["botWords"]))[:4] == ["sorry", "i", "lost", "my"]


# --- TRANSPORT=smallwebrtc: the page's own RTCPeerConnection straight to the bot, no LiveKit ---

BARGE_IN_AT_S = 15.0  # into each loop of the microphone file: the story's reply is playing then
LOOP_S = 30.0


@pytest.fixture(scope="module")
def peer_session(engines, settings, tmp_path_factory):
    """One conversation over SmallWebRTC. The microphone file asks for the story, then, while
    the reply plays, says BARGE_IN (a previous session's replies began 5-9 s into the loop and
    lasted 17 s); it loops every 30 s."""
    tmp = tmp_path_factory.mktemp("peer")

    def say(text):
        return np.concatenate([c.audio for c in engines.tts.synthesize(text, voice="am_michael")])

    question, stop = say(QUESTION), say(BARGE_IN)
    gap = np.zeros(int(24000 * (BARGE_IN_AT_S - 0.5)) - len(question))
    wav = tmp / "barge-in.wav"
    write_mic_wav(wav, np.concatenate([question, gap, stop]), 24000, lead_s=0.5,
                  tail_s=LOOP_S - BARGE_IN_AT_S - len(stop) / 24000)
    # the stack's TURN relay (coturn as the preflight configures it, on its port): the page
    # asks for it and gathers relayed candidates too (ICE then picks the direct pair here)
    addresses = host_addresses(settings)
    turn = settings.model_copy(update=dict(turn_host=addresses[0], turn_secret="r" * 40))
    bot = BotProcess({
        "MODEL_PROFILE": "test", "MODELS_DIR": str(settings.models_dir), "DEVICE": "cpu",
        "TRANSPORT": "smallwebrtc", "DEV_MODE": "true", "AVATARS_DIR": str(SHARED_AVATARS),
        "DEFAULT_AVATAR": "brunette-t", "TURN_HOST": turn.turn_host,
        "TURN_SECRET": turn.turn_secret,
        # nothing of LiveKit: the page must not need it
        "LIVEKIT_URL": "ws://127.0.0.1:9"}, free_port(), tmp / "bot.log")
    out = ARTIFACTS / "smallwebrtc"
    try:
        with coturn(coturn_config(turn, addresses), tmp, TURN_PORT) as turn_log:
            bot.wait_ready()
            session = run_session(bot.url, wav, out, talk_s=45)
        shutil.copy(turn_log, out / "turn.log")
        yield session
    finally:
        bot.stop()


def test_direct_connection_loads_nothing_foreign_and_converses(peer_session):
    r = peer_session.result
    assert "error" not in r, r.get("error")
    assert r["foreignRequests"] == [] and r["consoleErrors"] == []
    lines = r["snapshot"]["lines"]
    first_user = next(line["text"] for line in lines if line["role"] == "user")
    assert jiwer.wer(" ".join(_words(QUESTION)), " ".join(_words(first_user))) <= 0.3, first_user
    bot = [line for line in lines if line["role"] == "bot"]
    assert bot and len(bot[0]["words"]) >= 3, bot
    rate = r["sampleRate"]
    rms = np.sqrt(np.convolve(peer_session.capture ** 2, np.ones(rate // 10) / (rate // 10),
                              "valid"))
    assert (rms > 0.02).sum() / rate > 1.0, "less than a second of audible bot speech"
    # the data channel carries the page's messages too: a typed question answered aloud
    typed = r["typed"]
    after = lines[typed["linesAfterRefusal"]:]
    assert after[0]["role"] == "user" and after[0]["text"] == typed["text"], after
    # answered aloud, in the voice picked over the same channel. Not "Paris": after the story
    # the person cut short, the test's 135M model goes on with the story whatever the wording
    # (two CI runs); the LiveKit session and tests/test_smallwebrtc.py check the answer itself.
    reply = next(line for line in after if line["role"] == "bot")
    assert len(reply["words"]) >= 3, reply
    assert _typed_reply_voices(r) == {typed["voice"]}
    # and muting (the track disabled: silence goes to the bot) stops transcription
    assert r["afterMute"] == r["afterMuteStart"], r["afterMute"][len(r["afterMuteStart"]):]


def test_direct_connection_gathers_through_the_turn_relay_with_the_apis_credentials(peer_session):
    # Chromium took the ICE servers of GET /webrtc/ice-servers and coturn granted it a relay
    # with their credentials (a browser that reaches only the relay converses through it:
    # tests/test_smallwebrtc.py)
    log = (peer_session.out / "turn.log").read_text()
    assert re.search(r"username=<\d+:[0-9a-f]+>.*\n.*ALLOCATE processed, success", log), log[-3000:]


def test_direct_connection_mouth_moves_with_the_timings(peer_session):
    _mouth_follows_the_timings(peer_session.result)


def test_direct_connection_barge_in_stops_voice_and_mouth(peer_session):
    r, session = peer_session.result, peer_session
    lines = r["snapshot"]["lines"]
    assert any(_words(BARGE_IN)[:2] == _words(line["text"])[:2] for line in lines
               if line["role"] == "user"), [line["text"] for line in lines]
    stops = [s for s in r["stops"] if s["msg"]["reason"] == "interrupted"]
    assert stops, f"the bot was never interrupted: {[s['msg'] for s in r['stops']]}"
    rate = r["sampleRate"]
    checked = 0
    for stop in stops:
        # What the bot sent before the interruption is still on its way when the stop arrives:
        # about the page's receive delay, 0.3-0.7 s of voice heard after it in most runs here,
        # over a second in one CI run (a loaded machine: the bot's event loop sends in bursts,
        # the browser's jitter buffer grows). Two seconds later voice and mouth have stopped.
        # Quiet from then for a second, or until shortly before the next reply is scheduled
        # (the mouth leads its voice a little: one CI run, 60 ms); no check when that leaves
        # less than half a second, or when another reply sounds in between.
        at = stop["arrival"]
        others = [c["scheduled"] for c in r["chunks"] if c["scheduled"]
                  and c["scheduled"]["end"] > at and c["msg"]["turn_id"] != stop["msg"]["turn_id"]]
        quiet = (2000, min([3000] + [o["start"] - at - 250 for o in others]))
        if quiet[1] - quiet[0] < 500:
            continue
        checked += 1
        delay = [c["receiveDelay"] for c in r["chunks"] if c["arrival"] <= at][-1:]
        # Until then the mouth goes on with that voice (the stop's sent_ms on the turn's clock),
        # and closes with it. It used to close when the stop came; one run here: voice heard
        # 190, 290, 170 ms after the stops, the mouth closed 206, 228, 82 ms after them. Voice
        # that goes quiet sooner where the mouth still had words closes it then (one CI run:
        # voice heard until 290 ms after the stop, the mouth closed at 614 ms).
        voice_end, close_at = _last_voice(session, at, at + quiet[0]), stop["closeAt"]
        placed = [{k: c["scheduled"].get(k) for k in ("seq", "aligned", "shift", "drift")}
                  | {"correction": c.get("delayCorrection")}
                  for c in r["chunks"] if c["msg"]["turn_id"] == stop["msg"]["turn_id"]
                  and c["scheduled"]][-2:]
        seen = (f"voice heard until {voice_end - at:.0f} ms after the stop, the mouth closed "
                f"{close_at - at:.0f} ms after it, receive delay {delay} ms, the turn's last "
                f"chunks placed {placed}")
        if voice_end - at > 150:
            assert (voice_end - at) / 3 < close_at - at and close_at < voice_end + 250, \
                (seen, stop)
        a, b = int(session.sample_at(at + quiet[0])), int(session.sample_at(at + quiet[1]))
        heard = session.capture[a:b]
        # a recording that ends early would make any quiet window look silent
        assert len(heard) >= 0.9 * (b - a) > rate * 0.4, \
            f"the page's recording covers {len(heard) / rate:.2f} s of a {(b - a) / rate:.2f} s " \
            "quiet window"
        assert np.sqrt(np.mean(heard ** 2)) < 0.01, \
            f"the interrupted reply is still heard {quiet[0]} ms after its stop ({seen})"
        mouth = [lvl for t, lvl in r["mouth"] if at + quiet[0] <= t <= at + quiet[1]]
        assert mouth and max(mouth) < 0.1, f"the mouth still moves after the stop ({seen})"
    assert checked, "every interruption was followed at once by another reply: nothing to check"


def _last_voice(session, start: float, end: float, level: float = 0.01) -> float:
    """Page time of the last 10 ms of heard voice between ``start`` and ``end`` (``start``
    when there is none)."""
    rate = session.result["sampleRate"]
    a, b = int(session.sample_at(start)), int(session.sample_at(end))
    win = rate // 100
    loud = [i for i in range(a, b - win, win)
            if np.sqrt(np.mean(session.capture[i:i + win] ** 2)) > level]
    return float(session.heard_time(loud[-1] + win)) if loud else start


def test_direct_connection_lip_sync_is_measured_against_the_heard_audio(peer_session, engines):
    frames = frame_grids(peer_session)["60 Hz display"]
    offsets = lip_sync_offsets(peer_session, kokoro_reference(engines.tts), frames)
    ours, text = summarize(offsets["ours"]), summarize(offsets["text"])
    assert ours["matched"] >= 10, ours
    assert abs(ours["p50"]) < 100, ours
    assert ours["p95_abs"] <= text["p95_abs"], (ours, text)
    # The same scheduler as LiveKit's path, on a path whose voice comes in bursts when the bot's
    # event loop is busy (docs/benchmarks.md): this session gave 63, 79 and 87 % inside IS-191,
    # `bench.py --web --transport smallwebrtc` 99 and 81 %; the measure's near-silence bug
    # (fixed) put it at 16 %.
    assert ours["in_window"] >= 0.5, ours
