"""Kokoro-82M on onnxruntime (the CPU default), with the model's own per-token durations.

The registry int8 graph outputs only audio, but it computes the rounded per-token durations
inside (``/encoder/Clip_output_0``, frames of 600 samples). ``add_duration_output`` exposes that
tensor as a second graph output, once, after download (scripts/download_models.py calls it)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

DURATION_TENSOR = "/encoder/Clip_output_0"


def add_duration_output(src: Path, dst: Path) -> None:
    import onnx

    model = onnx.load(str(src))
    if DURATION_TENSOR not in {n for node in model.graph.node for n in node.output}:
        raise ValueError(f"{src}: no tensor {DURATION_TENSOR}; not a Kokoro v1.0 ONNX graph")
    if DURATION_TENSOR not in {o.name for o in model.graph.output}:
        model.graph.output.append(
            onnx.helper.make_tensor_value_info(DURATION_TENSOR, onnx.TensorProto.FLOAT, None))
    tmp = Path(str(dst) + ".tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, dst)


class KokoroOnnxBackend:
    """Runs a duration-exposing Kokoro ONNX graph. ``infer`` returns (audio, durations)."""

    name = "onnx"

    def __init__(self, model_path: Path, *, threads: int | None = None, device: str = "cpu",
                 spin: bool = True):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        if not spin:  # idle threads sleep instead of spinning: the cores go to the other models
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(model_path), opts, providers=providers)
        # where it really runs: onnxruntime without its CUDA provider stays on the CPU
        self.device = "cuda" if "CUDAExecutionProvider" in self.session.get_providers() else "cpu"
        outputs = [o.name for o in self.session.get_outputs()]
        if DURATION_TENSOR not in outputs:
            raise ValueError(f"{model_path} does not output durations; re-run the model download")
        self._outputs = ["audio", DURATION_TENSOR]

    def infer(self, token_ids: list[int], style: np.ndarray,
              speed: float) -> tuple[np.ndarray, np.ndarray]:
        audio, durations = self.session.run(self._outputs, {
            "tokens": np.asarray([token_ids], dtype=np.int64),
            "style": np.asarray(style, dtype=np.float32).reshape(1, 256),
            "speed": np.asarray([speed], dtype=np.float32),
        })
        return audio.reshape(-1).astype(np.float32), durations.reshape(-1).astype(np.int64)
