"""Pick where the models run: ``cuda`` when a GPU is visible (and asked for or ``auto``)."""

from __future__ import annotations

from functools import lru_cache


@lru_cache
def cuda_available() -> bool:
    try:
        import ctranslate2

        return ctranslate2.get_cuda_device_count() > 0
    except ImportError:  # a machine with only some engines installed (an engine benchmark)
        pass
    except Exception:  # no CUDA runtime at all
        return False
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def resolve_device(requested: str = "auto", setting: str = "DEVICE") -> str:
    """``setting``: the variable that asked, named in the error."""
    if requested == "cuda" and not cuda_available():
        raise RuntimeError(f"{setting}=cuda but no CUDA device is visible (check the NVIDIA "
                           "driver and the container's GPU reservation)")
    if requested == "auto":
        return "cuda" if cuda_available() else "cpu"
    return requested
