"""Kokoro-82M on onnxruntime (the CPU default), with the model's own per-token durations.

The registry int8 graph outputs only audio, but it computes the rounded per-token durations
inside (``/encoder/Clip_output_0``, frames of 600 samples). ``add_duration_output`` exposes that
tensor as a second graph output, once, after download (scripts/download_models.py calls it).

Its 87 convolutions (``ConvInteger``, two thirds of a synthesis on a CPU) multiply unsigned by
unsigned 8-bit numbers, for which onnxruntime has no fast kernel. On a CPU with VNNI
(``cpu_has_vnni``), ``convs_as_matmuls`` rewrites them, when the engine loads, into products
of unsigned activations and signed weights (``MatMulInteger``), which onnxruntime runs with
VNNI's multiply-accumulate: the same integer sums, so the same audio bit for bit, ~1.4x sooner
on one thread (docs/benchmarks.md). The rewritten graph is kept beside the downloaded one
(``vnni_graph``), so later starts load it as it is instead of rewriting it again."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DURATION_TENSOR = "/encoder/Clip_output_0"
VNNI_REWRITE = 4  # bump when convs_as_matmuls writes another graph: the kept ones are remade
OUTPUT_BLOCK_ROWS = 512  # a convolution's output steps per block on the way back to channel-major
_MIN_OUT_CHANNELS = 8  # Kokoro's four convolutions to one channel cost nothing: left as they are


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


def cpu_has_vnni(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this x86 CPU multiplies unsigned by signed bytes into 32-bit sums (AVX512-VNNI or
    AVX-VNNI). Without VNNI, onnxruntime's u8 x s8 kernel adds pairs of products in 16 bits,
    which can saturate: the rewrite would no longer be exact there."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:  # not Linux: keep the registry graph
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    return "avx512_vnni" in flags or "avx_vnni" in flags


def convs_as_matmuls(model, *, output_blocks: bool = True) -> int:
    """Rewrite, in place, each 1-D ``ConvInteger`` with constant u8 weights (one zero point,
    one group) of an ONNX model into time-major im2col and an u8 x s8 ``MatMulInteger``:

        x [1, C, T] -> Transpose -> Pad (with x's zero point) -> Gather of the K taps of every
        output step -> [1, T', K*C] x W' [K*C, Cout] -> Transpose -> y [1, Cout, T'] (int32)

    W' is W - 128 as int8 with its zero point moved by the same 128, so every product
    (x - x_zp)(w - w_zp) and every sum is unchanged. ``output_blocks``: the last Transpose in
    blocks of ``OUTPUT_BLOCK_ROWS`` steps (T' padded up to whole blocks, the extra steps cut off
    after it), which makes a synthesis on one onnxruntime thread 1.09x sooner; with more threads
    onnxruntime parallelizes the one Transpose, and the blocks gain nothing (docs/benchmarks.md).
    Returns how many were rewritten."""
    from onnx import numpy_helper

    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    nodes, added, replaced, count = [], [], set(), 0
    for node in graph.node:
        conv = _rewritable(node, weights)
        if conv is None:
            nodes.append(node)
            continue
        new_nodes, consts = _conv_as_matmul(node, *conv, output_blocks)
        nodes += new_nodes
        added += [numpy_helper.from_array(value, name) for name, value in consts.items()]
        replaced.update((node.input[1], node.input[3]))
        count += 1

    used = {i for n in nodes for i in n.input}
    kept = [i for i in graph.initializer if i.name not in replaced or i.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + added)
    return count


def _rewritable(node, weights: dict):
    """(weights, their zero point, attributes) of a ``ConvInteger`` ``convs_as_matmuls`` can
    rewrite, else None."""
    from onnx import helper, numpy_helper

    if node.op_type != "ConvInteger" or len(node.input) != 4 \
            or node.input[1] not in weights or node.input[3] not in weights:
        return None
    w = numpy_helper.to_array(weights[node.input[1]])
    w_zp = numpy_helper.to_array(weights[node.input[3]])
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if (w.dtype != np.uint8 or w.ndim != 3 or w_zp.shape != () or attrs.get("group", 1) != 1
            or attrs.get("auto_pad", b"NOTSET") != b"NOTSET" or w.shape[0] < _MIN_OUT_CHANNELS):
        return None
    return w, w_zp, attrs


def _conv_as_matmul(node, w: np.ndarray, w_zp: np.ndarray, attrs: dict, output_blocks: bool):
    """One ``ConvInteger`` as the nodes of ``convs_as_matmuls``, and the constants they read."""
    from onnx import helper

    c_out, c_in, k = w.shape
    dil, stride = attrs.get("dilations", [1])[0], attrs.get("strides", [1])[0]
    pad0, pad1 = attrs.get("pads", [0, 0])
    prefix, x, x_zp = node.name or node.output[0], node.input[0], node.input[2]
    nodes, consts = [], {}

    def const(suffix: str, value) -> str:
        consts[f"{prefix}/{suffix}"] = np.asarray(value, np.int64) \
            if isinstance(value, (int, list)) else value
        return f"{prefix}/{suffix}"

    def add(op: str, inputs: list[str], suffix: str, **kw) -> str:
        out = f"{prefix}/{suffix}"
        nodes.append(helper.make_node(op, inputs, [out], name=out, **kw))
        return out

    src = add("Transpose", [x], "time_major", perm=[0, 2, 1])  # [1, T, C]
    if output_blocks:
        # The output's T' steps are made in nb blocks of B rows (nb = ceil(T' / OUTPUT_BLOCK_ROWS),
        # B = ceil(T' / nb)): the rows past T' (fewer than nb) come from extra padding at the end
        # and are cut off at the end. Shape arithmetic at run time, on a few numbers.
        length = add("Shape", [src], "length", start=1, end=2)
        room = add("Sub", [length, const("span", [(k - 1) * dil - pad0 - pad1])], "room")
        steps = add("Div", [add("Add", [room, const("stride_less_1", [stride - 1])], "room_up"),
                            const("stride", [stride])], "steps")  # T'
        blocks = add("Div", [add("Add", [steps, const("block_less_1", [OUTPUT_BLOCK_ROWS - 1])],
                                 "steps_up"), const("block", [OUTPUT_BLOCK_ROWS])], "blocks")
        rows = add("Div", [add("Sub", [add("Add", [steps, blocks], "steps_blocks"),
                                       const("one", [1])], "steps_blocks_less_1"), blocks],
                   "block_rows")  # B
        total = add("Mul", [blocks, rows], "rows_total")  # nb * B: T' and fewer than nb more
        extra = add("Mul", [add("Sub", [total, steps], "extra_steps"),
                            const("stride", [stride])], "extra")
        pads = add("Concat", [const("pads_start", [0, pad0, 0, 0]),
                              add("Add", [extra, const("pad_end", [pad1])], "pad_end_total"),
                              const("pads_channels", [0])], "pads", axis=0)
        src = add("Pad", [src, pads, x_zp], "padded")  # x's zero point: the padding counts as 0
    elif pad0 or pad1:
        src = add("Pad", [src, const("pads", [0, pad0, 0, 0, pad1, 0]), x_zp], "padded")
    col = src
    if k > 1 or stride > 1:
        # im2col as one Gather: for output step i, rows i * stride + tap * dil of the padded input,
        # the K taps then side by side. One copy of the data, where K strided Slices and a Concat
        # made two: a synthesis 1.14x sooner on a Xeon, no change on an EPYC (docs/benchmarks.md).
        starts_end = add("Mul", [total, const("stride", [stride])], "starts_end_1d") \
            if output_blocks else add("Sub", [add("Shape", [src], "length", start=1, end=2),
                                              const("span", [(k - 1) * dil])], "room")
        starts = add("Range", [const("zero", np.array(0, np.int64)),
                               add("Squeeze", [starts_end], "starts_end"),
                               const("stride_0d", np.array(stride, np.int64))], "starts")
        taps = add("Add", [add("Unsqueeze", [starts, const("axis1", [1])], "starts_column"),
                           const("tap_offsets", np.arange(k, dtype=np.int64)[None, :] * dil)],
                   "taps_rows")
        gathered = add("Gather", [src, taps], "taps", axis=1)  # [1, T', K, C]
        col = add("Reshape", [gathered, const("im2col_shape", [1, -1, k * c_in])], "im2col")
    # rows in the order of im2col's columns: (tap, input channel)
    w_s8 = (w.astype(np.int16) - 128).astype(np.int8).transpose(2, 1, 0).reshape(k * c_in, c_out)
    y = add("MatMulInteger", [col, const("w_s8", w_s8), x_zp,
                              const("w_zp_s8", np.array(np.int8(int(w_zp) - 128)))], "matmul")
    if not output_blocks:
        nodes.append(helper.make_node("Transpose", [y], [node.output[0]], perm=[0, 2, 1],
                                      name=f"{prefix}/channel_major"))
        return nodes, consts
    # Back to channel-major in two moves: each block on its own (it fits a core's cache), then
    # the blocks' rows of B side by side. onnxruntime's one Transpose of all T' rows at once
    # reads each cache line of the int32 sums C_out times from memory on one thread: 15 % of
    # a synthesis (docs/benchmarks.md). The Reshapes keep onnxruntime from merging the two.
    y = add("Reshape", [y, add("Concat", [blocks, rows, const("c_out", [c_out])],
                               "blocks_of_rows", axis=0)], "in_blocks")  # [nb, B, C_out]
    y = add("Transpose", [y], "blocks_channel_major", perm=[0, 2, 1])  # [nb, C_out, B]
    y = add("Reshape", [y, add("Concat", [blocks, const("c_out", [c_out]), rows],
                               "blocks_of_columns", axis=0)], "blocks_kept")
    y = add("Transpose", [y], "channel_major", perm=[1, 0, 2])  # [C_out, nb, B]
    y = add("Reshape", [y, add("Concat", [const("one_c_out", [1, c_out]), total],
                               "flat_shape", axis=0)], "flat")
    nodes.append(helper.make_node("Slice", [y, const("zero_1d", [0]), steps, const("axis2", [2])],
                                  [node.output[0]], name=f"{prefix}/trimmed"))
    return nodes, consts


def squares_as_products(model) -> int:
    """``Pow(x, 2)`` as ``Mul(x, x)``, in place: the same numbers (both exact to the float), a
    multiplication cheaper than onnxruntime's power (Kokoro's 50 Snake activations square a
    sine). Returns how many were rewritten."""
    from onnx import numpy_helper

    constants = {i.name: i for i in model.graph.initializer}
    count = 0
    for node in model.graph.node:
        exponent = constants.get(node.input[1]) if node.op_type == "Pow" else None
        if exponent is not None and numpy_helper.to_array(exponent).size == 1 \
                and float(numpy_helper.to_array(exponent)) == 2.0:
            node.op_type = "Mul"
            node.input[1] = node.input[0]
            count += 1
    return count


def blocks_pay(threads: int | None) -> bool:
    """Whether ``output_blocks`` makes a synthesis on ``threads`` sooner: on one thread (the
    budget's on fewer than 8 cores). With more, onnxruntime splits the one Transpose between
    them and the blocks gain nothing."""
    return threads == 1


def vnni_graph(model_path: Path, *, reuse: bool = True,
               output_blocks: bool = True) -> tuple[str | bytes, int]:
    """``model_path``'s graph with its convolutions as VNNI matrix products (the graph, as a path
    or as bytes, and how many were rewritten; ``output_blocks`` as in ``convs_as_matmuls``, and
    its squares as products). Rewriting takes ~0.6-0.8 s of a start on a 2-core
    machine, so the result is kept beside the model (``<name>.vnni.onnx`` and a ``.json`` that
    says which file it was made from) and loaded from there while that file is unchanged. A
    read-only models directory (the Compose bot's) keeps nothing: the download, which may
    write there, makes it first (stack/download.py)."""
    import onnx

    graph_path = model_path.with_name(f"{model_path.stem}.vnni.onnx")
    note_path = graph_path.with_suffix(".json")
    stat = model_path.stat()
    source = {"rewrite": VNNI_REWRITE, "source": model_path.name, "bytes": stat.st_size,
              "mtime_ns": stat.st_mtime_ns, "output_blocks": output_blocks}
    try:
        note = json.loads(note_path.read_text())
        if reuse and graph_path.is_file() and note.get("made_from") == source:
            return str(graph_path), int(note["convs_rewritten"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # none kept, or from another file: made again below
    model = onnx.load(str(model_path))
    count = convs_as_matmuls(model, output_blocks=output_blocks)
    squares_as_products(model)
    graph = model.SerializeToString()
    del model
    try:
        _write_atomically(graph_path, graph)
        _write_atomically(note_path, json.dumps(
            {"made_from": source, "convs_rewritten": count}).encode())
    except OSError as e:  # read-only or full: this start has it in memory all the same
        log.debug("Kokoro's VNNI graph not kept at %s: %s", graph_path, e)
    return graph, count


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class KokoroOnnxBackend:
    """Runs a duration-exposing Kokoro ONNX graph. ``infer`` returns (audio, durations).

    ``vnni_matmul``: on a CPU with VNNI, run the convolutions as int8 matrix products
    (``convs_as_matmuls``); ``self.convs_rewritten`` says how many were. ``output_blocks``: their
    outputs back to channel-major in blocks (None: on one thread, where it pays)."""

    name = "onnx"

    def __init__(self, model_path: Path, *, threads: int | None = None, device: str = "cpu",
                 spin: bool = True, vnni_matmul: bool = True, output_blocks: bool | None = None):
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
        graph: str | bytes = str(model_path)
        self.convs_rewritten = 0
        blocks = blocks_pay(threads) if output_blocks is None else output_blocks
        if vnni_matmul and providers == ["CPUExecutionProvider"] and cpu_has_vnni():
            graph, self.convs_rewritten = vnni_graph(Path(model_path), output_blocks=blocks)
        try:
            self.session = ort.InferenceSession(graph, opts, providers=providers)
        except Exception:
            if not isinstance(graph, str) or graph == str(model_path):
                raise
            log.warning("Kokoro's kept VNNI graph %s did not load; rewriting it", graph)
            graph, self.convs_rewritten = vnni_graph(Path(model_path), reuse=False,
                                                     output_blocks=blocks)
            self.session = ort.InferenceSession(graph, opts, providers=providers)
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
