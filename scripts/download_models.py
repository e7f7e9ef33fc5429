#!/usr/bin/env python3
"""Fetch (or with --check, verify) a model profile into the models directory.

    python scripts/download_models.py --profile gpu            # what the Compose stack uses
    python scripts/download_models.py --profile test --check   # verify only, fetch nothing
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stack.config import get_settings  # noqa: E402
from stack.download import Downloader, DownloadError, check_profile, missing_report  # noqa: E402
from stack.manifest import PROFILES, get_profile  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--profile", default=settings.model_profile, choices=sorted(PROFILES),
                    help="model set (default: MODEL_PROFILE, %(default)s)")
    ap.add_argument("--models-dir", type=Path, default=settings.models_dir,
                    help="where the files go (default: MODELS_DIR, %(default)s)")
    ap.add_argument("--check", action="store_true",
                    help="verify the files without downloading; exit 1 naming each missing or "
                    "corrupt file")
    ap.add_argument("--list", action="store_true", help="print each file, its size and source")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    profile = get_profile(args.profile)

    if args.list:
        for mf in profile.files:
            print(f"{mf.path}\t{mf.size}\t{mf.sha256}\t{mf.source.describe()}")
        for rel, src in profile.derived:
            print(f"{rel}\t-\t-\tmade from {src} after download")
        return 0

    if args.check:
        statuses = check_profile(args.models_dir, profile)
        bad = [s for s in statuses if s.state != "ok"]
        if bad:
            print(missing_report(bad, profile, args.models_dir), file=sys.stderr)
            fetch = [s for s in bad if s.file is not None]  # not the ones made after download
            known = sum(s.file.size for s in fetch)
            print(f"{len(fetch)} file(s) to fetch ({known / 1e9:.2f} GB known; nothing fetched "
                  "now)",
                  file=sys.stderr)
            return 1
        print(f"profile {profile.name}: all {len(statuses)} files verified in {args.models_dir}")
        return 0

    try:
        fetched = Downloader(args.models_dir, profile, progress=not args.quiet,
                             tts_threads=settings.thread_budget["tts"]).run()
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"profile {profile.name}: {len(fetched)} file(s) fetched, "
          f"{len(profile.files) + len(profile.derived) - len(fetched)} already verified, "
          f"in {args.models_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
