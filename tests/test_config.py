"""Configuration: one place, defaults that work, every setting named in .env.example."""

import re
from pathlib import Path

import pytest

from stack.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_in_env_example():
    names = set(re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert {f.upper() for f in Settings.model_fields} <= names
    assert names <= {f.upper() for f in Settings.model_fields}  # and nothing stale


def test_every_setting_is_in_the_readme_configuration_table():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Configuration"):readme.index("## Security")]
    rows = set(re.findall(r"`([A-Z_]+)`", "\n".join(
        line.split("|")[1] for line in table.splitlines() if line.startswith("| `"))))
    assert rows == {f.upper() for f in Settings.model_fields}


def test_env_example_values_load(monkeypatch):
    for line in (ROOT / ".env.example").read_text().splitlines():
        if re.match(r"^[A-Z_]+=", line):
            key, value = line.split("=", 1)
            monkeypatch.setenv(key, value.strip('"'))
    s = Settings(_env_file=None)
    assert s.model_profile == "gpu" and s.llm_temperature is None and s.tts_voice is None
    assert s.profile.name == "gpu"


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model profile 'big'.*cpu.*gpu.*test"):
        _ = Settings(model_profile="big", _env_file=None).profile


def test_thread_budget_adds_up_to_the_cores_unless_set(monkeypatch):
    from stack.config import Settings

    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert Settings(_env_file=None).thread_budget == {"stt": 2, "llm": 4, "tts": 2}
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert Settings(_env_file=None).thread_budget == {"stt": 1, "llm": 1, "tts": 1}
    assert Settings(stt_threads=3, _env_file=None).thread_budget["stt"] == 3


def test_whisper_workers_follow_the_profile_unless_set():
    from stack.config import Settings

    assert Settings(model_profile="gpu", _env_file=None).whisper_workers == 4
    assert Settings(model_profile="test", _env_file=None).whisper_workers == 2
    assert Settings(model_profile="cpu", stt_workers=1, _env_file=None).whisper_workers == 1


def test_each_engine_runs_where_its_device_setting_says_else_where_device_says(monkeypatch):
    from types import SimpleNamespace

    from stack.engines import device as device_module
    from stack.engines.load import describe_devices, load_stt

    s = Settings(device="cpu", stt_device="cuda", _env_file=None)
    assert s.engine_device("stt") == ("cuda", "STT_DEVICE")
    assert s.engine_device("llm") == s.engine_device("tts") == ("cpu", "DEVICE")
    # no GPU here: the error names the setting that asked for one
    monkeypatch.setattr(device_module, "cuda_available", lambda: False)
    with pytest.raises(RuntimeError, match="STT_DEVICE=cuda but no CUDA device is visible"):
        load_stt(s)
    on = [SimpleNamespace(device=d) for d in ("cpu", "cuda", "cpu")]
    assert describe_devices(*on) == "stt cpu, llm cuda, tts cpu"
    assert describe_devices(*[SimpleNamespace(device="cuda")] * 3) == "cuda"
