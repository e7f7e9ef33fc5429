"""The `torch` TTS backend (kokoro's KModel, the GPU default).

No kokoro-v1_0.pth exists on a package registry, so this exercises the backend's plumbing with a
RANDOMLY INITIALISED KModel of Kokoro-82M's architecture: what it says is noise, but its durations,
audio length and timings must follow the same contract as the real model's."""

import json

import numpy as np
import pytest
import torch

from stack.engines.tts import load_tts
from stack.lipsync import FRAME_SAMPLES

# Kokoro-82M's architecture (its config.json without the vocabulary).
KOKORO_82M = {
    "istftnet": {"upsample_kernel_sizes": [20, 12], "upsample_rates": [10, 6],
                 "gen_istft_hop_size": 5, "gen_istft_n_fft": 20,
                 "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
                 "resblock_kernel_sizes": [3, 7, 11], "upsample_initial_channel": 512},
    "dim_in": 64, "dropout": 0.2, "hidden_dim": 512, "max_conv_dim": 512, "max_dur": 50,
    "multispeaker": True, "n_layer": 3, "n_mels": 80, "n_token": 178, "style_dim": 128,
    "text_encoder_kernel_size": 5,
    "plbert": {"hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 2048,
               "max_position_embeddings": 512, "num_hidden_layers": 12, "dropout": 0.1},
}


@pytest.fixture(scope="module")
def random_torch_tts(models_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("kokoro-random")
    vocab = json.loads((models_dir / "test" / "kokoro-vocab.json").read_text())["vocab"]
    (d / "config.json").write_text(json.dumps({**KOKORO_82M, "vocab": vocab}))
    torch.manual_seed(0)
    torch.save({}, d / "random.pth")  # an empty state dict: KModel keeps its random init
    return load_tts(backend="torch", model_path=d / "random.pth", config_path=d / "config.json",
                    voices_dir=models_dir / "test" / "voices", default_voice="af_heart")


def test_random_init_torch_backend_keeps_the_timing_contract(random_torch_tts):
    assert random_torch_tts.backend.name == "torch"
    chunks = list(random_torch_tts.synthesize("Hello world. This is the torch backend."))
    assert chunks
    for c in chunks:
        assert c.audio.dtype == np.float32
        assert len(c.audio) == sum(c.durations) * FRAME_SAMPLES
        assert all(d >= 1 for d in c.durations)  # KModel clamps durations at one frame
        assert [w.word for w in c.timing.words] == ["Hello", "world", "This", "is", "the",
                                                    "torch", "backend"]
        assert sum(v.duration_ms for v in c.timing.visemes) == pytest.approx(c.timing.duration_ms)


def test_random_init_torch_backend_speed_changes_durations(random_torch_tts):
    slow = next(random_torch_tts.synthesize("Slowly now.", speed=0.5))
    fast = next(random_torch_tts.synthesize("Slowly now.", speed=2.0))
    assert sum(slow.durations) > sum(fast.durations)
