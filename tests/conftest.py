"""Shared fixtures: the `test` model profile (real, small models from PyPI and npm), loaded once."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stack.config import Settings
from stack.download import Downloader
from stack.manifest import TEST
from stack.memory import limit_arenas

limit_arenas()  # as `python -m stack.app` does, before any model starts a thread

# Outside the checkout so a fresh clone reuses what an earlier run fetched.
MODELS_DIR = Path(os.environ.get("TEST_MODELS_DIR",
                                  Path.home() / ".cache" / "avatar-stack" / "models"))
BECKETT = TEST.sample_text


@pytest.fixture(scope="session")
def models_dir() -> Path:
    Downloader(MODELS_DIR, TEST, progress=False).run()  # verifies; fetches only what is missing
    return MODELS_DIR


@pytest.fixture(scope="session")
def settings(models_dir) -> Settings:
    return Settings(models_dir=models_dir, model_profile="test", device="cpu", _env_file=None)


@pytest.fixture(scope="session")
def engines(settings):
    from stack.engines.load import load_engines

    return load_engines(settings)


# A barge-in said without a pause the VAD would end a turn on (the longest, 130 ms, is shorter
# than its 200 ms stop) and for ~4.9 s: the quiet the barge-in tests check after the bot's stop
# falls while the person still talks, so no reply to the barge-in can sound in it. Shorter ones
# ("Ever tried. Ever failed.", "Wait, please stop there.") ended or paused before those windows,
# and once Kokoro got faster the reply to them was heard there (one CI run, two tests).
BARGE_IN = "Hold on now I would much rather hear about something completely different."


def speech(engines, text: str) -> np.ndarray:
    """A person saying ``text`` at 16 kHz, made with the TTS (another voice than the bot's)."""
    from stack.engines.stt import resample

    audio = np.concatenate([c.audio for c in engines.tts.synthesize(text, voice="am_michael")])
    return resample(audio, 24000, 16000)


@pytest.fixture(scope="session")
def barge_in(engines) -> np.ndarray:
    """BARGE_IN, said at 16 kHz."""
    return speech(engines, BARGE_IN)


@pytest.fixture(scope="session")
def beckett(models_dir) -> np.ndarray:
    audio, sr = sf.read(models_dir / TEST.sample_wav, dtype="float32")
    assert sr == 16_000
    return audio



LIVEKIT_KEY, LIVEKIT_SECRET = "APItest", "t" * 40


@pytest.fixture(scope="session")
def livekit(tmp_path_factory):
    """A real LiveKit server on loopback (scripts/test.sh builds it from its Go module)."""
    from stack.livekit_server import LiveKitServer, find_binary

    binary = find_binary()
    if binary is None:
        pytest.fail("livekit-server not found: run scripts/test.sh, which builds it "
                    "(go install github.com/livekit/livekit-server/cmd/server@v1.13.5)")
    server = LiveKitServer(binary, tmp_path_factory.mktemp("livekit"), LIVEKIT_KEY, LIVEKIT_SECRET)
    yield server
    server.stop()
