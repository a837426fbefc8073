"""all-MiniLM-L6-v2 run by ONNX Runtime: the semantic tier's embedder.

The graph is written at load time from the same ``model.safetensors`` tensors the NumPy
reference (:class:`broker.cache.embed.MiniLM`) reads, with the ``onnx`` package's helpers;
nothing is downloaded and no exported model is shipped. It is the same computation: six BERT
layers (one QKV projection, 12-head attention in ONNX Runtime's fused ``MultiHeadAttention``
kernel, exact-erf GELU, layer norms), mean pooling.
The input embeddings (rows of the word and position tables) and the L2 normalisation are done
here in NumPy, which keeps the 47 MB word table out of the graph and its copies.

Why: one short question spends most of its time in the 24 projections, each a thin
``(tokens x 384) @ (384 x 1152|384|1536)``. The projections (``projections``):

- ``"int8"`` (the default): ``DynamicQuantizeMatMul``, int8 weights with a scale per output
  column, the input quantized to uint8 per call, run by ONNX Runtime's integer GEMM (VNNI or
  AMX where the CPU has them). One scale for a whole input would drown the small channels
  under BERT's few large ones, so each channel's range is first shared with the weights
  (SmoothQuant, ``alpha`` 0.8: ``x @ W == (x / s) @ (s * W)``, ``s`` from the channel ranges
  :mod:`broker.cache.calibration` measures at load time).
- ``"int8-blocks"``: ``MatMulNBits``, int8 weights in blocks of 32 along the input, the
  input quantized per block: closer to float32, 2-3x slower here (the earlier default).
- ``"float32"``: plain ``MatMul``.

Figures (time, and agreement with the float32 reference) in docs/semantic-cache.md.

The session runs on the calling thread only (no intra-op pool, no spinning): the broker calls
it from a worker thread and its event loop keeps the other core.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from broker.cache.embed import MAX_TOKENS, Vector

__all__ = [
    "BLOCK",
    "SMOOTHING",
    "WEIGHT_LIMIT",
    "OnnxMiniLM",
    "Projections",
    "build_graph",
    "input_embeddings",
]

#: Quantization block along a projection's input (rows of the weight's transpose), int8-blocks.
BLOCK = 32
#: The largest int8 weight magnitude (7 bits, as ONNX Runtime's ``reduce_range``): CPUs without
#: VNNI multiply uint8 inputs by int8 weights with ``vpmaddubsw``, which adds two products
#: into a saturating int16; at 7 bits no pair can saturate (2 x 255 x 63 = 32,130 < 32,767),
#: so the integer GEMM is exact, and the same, on AVX2, AVX-512 and VNNI machines alike.
WEIGHT_LIMIT = 63
#: SmoothQuant's migration strength: the share of a channel's range moved into the weights.
SMOOTHING = 0.8
_HEADS = 12
_LAYERS = 6
_EPS = 1e-12
Projections = Literal["int8", "int8-blocks", "float32"]


class _Graph:
    """Nodes and initializers of the graph being written."""

    def __init__(self, projections: Projections, ranges: dict[str, Vector] | None) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.projections = projections
        self.ranges = ranges or {}

    def const(self, name: str, value: npt.NDArray[Any]) -> str:
        from onnx import numpy_helper  # noqa: PLC0415

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, *inputs: str, domain: str = "", **attrs: Any) -> str:
        from onnx import helper  # noqa: PLC0415

        out = f"{op_type.lower()}{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], domain=domain, **attrs))
        return out

    def linear(
        self,
        x: str,
        weight: npt.NDArray[Any],
        bias: npt.NDArray[Any],
        name: str,
        *,
        prescaled: bool = False,
    ) -> str:
        """``x @ weight.T + bias`` for an ``(out, in)`` weight. ``prescaled``: ``x`` arrives
        already divided by the projection's :meth:`smoothing` factors (folded upstream)."""
        if self.projections == "int8":
            w = weight.T
            factors = self.smoothing(name, w)
            if factors is not None:
                if not prescaled:
                    x = self.op("Mul", x, self.const(name + ".smooth", 1 / factors))
                w = w * factors[:, None]  # x @ w == (x / s) @ (s * w)
            return self._int8(x, w, bias, name)
        if self.projections == "int8-blocks":
            product = self._blocks(x, weight, name)
        else:
            product = self.op("MatMul", x, self.const(name, weight.T))
        return self.op("Add", product, self.const(name + ".b", bias))

    def smoothing(self, name: str, w: npt.NDArray[Any]) -> npt.NDArray[Any] | None:
        """SmoothQuant's per-input-channel factors for the ``(in, out)`` weight ``w`` of the
        projection ``name``: ``None`` unless int8 with measured ranges."""
        largest = self.ranges.get(name) if self.projections == "int8" else None
        if largest is None:
            return None
        weight_largest = np.maximum(np.abs(w).max(1), 1e-5)
        factors: npt.NDArray[Any] = (
            np.maximum(largest, 1e-5) ** SMOOTHING / weight_largest ** (1 - SMOOTHING)
        ).astype(np.float32)
        return factors

    def _int8(self, x: str, w: npt.NDArray[Any], bias: npt.NDArray[Any], name: str) -> str:
        """``DynamicQuantizeMatMul`` of ``x`` by the ``(in, out)`` weight ``w``."""
        scale = np.abs(w).max(0) / WEIGHT_LIMIT
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(w / scale), -WEIGHT_LIMIT, WEIGHT_LIMIT).astype(np.int8)
        return self.op(
            "DynamicQuantizeMatMul",
            x,
            self.const(name, q),
            self.const(name + ".s", scale.astype(np.float32)),
            self.const(name + ".z", np.zeros(scale.shape, np.int8)),
            self.const(name + ".b", bias.astype(np.float32)),
            domain="com.microsoft",
        )

    def _blocks(self, x: str, weight: npt.NDArray[Any], name: str) -> str:
        n, k = weight.shape
        blocks = weight.reshape(n, k // BLOCK, BLOCK)
        scale = np.abs(blocks).max(-1) / 127.0
        scale[scale == 0] = 1.0
        # unsigned storage around the default zero point (128) of 8-bit MatMulNBits
        q = np.clip(np.rint(blocks / scale[..., None]), -128, 127) + 128
        return self.op(
            "MatMulNBits",
            x,
            self.const(name, q.astype(np.uint8)),
            self.const(name + ".s", scale.astype(np.float32).reshape(-1)),
            domain="com.microsoft",
            K=k,
            N=n,
            bits=8,
            block_size=BLOCK,
            accuracy_level=4,  # int8 dot products on the quantized activations
        )

    def split(self, x: str, parts: int) -> list[str]:
        """``x``'s last axis cut into ``parts`` equal pieces."""
        from onnx import helper  # noqa: PLC0415

        outs = [f"split{len(self.nodes)}_{i}" for i in range(parts)]
        self.nodes.append(helper.make_node("Split", [x], outs, axis=-1, num_outputs=parts))
        return outs

    def dense(self, x: str, w: dict[str, npt.NDArray[Any]], prefix: str) -> str:
        return self.linear(x, w[prefix + ".weight"], w[prefix + ".bias"], prefix)

    def norm(self, x: str, w: dict[str, npt.NDArray[Any]], prefix: str) -> str:
        gamma = self.const(prefix + ".weight", w[prefix + ".weight"])
        beta = self.const(prefix + ".bias", w[prefix + ".bias"])
        return self.op("LayerNormalization", x, gamma, beta, axis=-1, epsilon=_EPS)


def _attention(
    g: _Graph,
    x: str,
    w: dict[str, npt.NDArray[Any]],
    p: str,
    value_scale: npt.NDArray[Any] | float = 1.0,
) -> str:
    """The 12 heads' context (tokens x 384). ``value_scale`` multiplies the value projection's
    outputs, so the context's channels (each a mix of one value channel) come out scaled."""
    d = w[p + "query.weight"].shape[0]
    hd = d // _HEADS
    scale = 1.0 / math.sqrt(hd)  # folded into the query projection
    value_scale = np.asarray(value_scale, np.float32)
    value_w = w[p + "value.weight"] * value_scale.reshape(-1, 1)
    value_b = w[p + "value.bias"] * value_scale
    qkv_w = np.concatenate([w[p + "query.weight"] * scale, w[p + "key.weight"], value_w])
    qkv_b = np.concatenate([w[p + "query.bias"] * scale, w[p + "key.bias"], value_b])
    qkv = g.linear(x, qkv_w, qkv_b, p + "qkv")
    q, k, v = g.split(qkv, 3)
    # one fused kernel for the 12 heads' scores, softmax and mix (the scale is in the query)
    return g.op("MultiHeadAttention", q, k, v, domain="com.microsoft", num_heads=_HEADS, scale=1.0)


def input_embeddings(
    weights: dict[str, npt.NDArray[Any]],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The word table with segment 0's embedding folded in (the only segment), and the
    position table: a token's input embedding is ``words[id] + positions[at]``."""
    w = {k.removeprefix("bert."): v for k, v in weights.items()}
    words = w["embeddings.word_embeddings.weight"] + w["embeddings.token_type_embeddings.weight"][0]
    positions = w["embeddings.position_embeddings.weight"][:MAX_TOKENS]
    return words.astype(np.float32), np.ascontiguousarray(positions, np.float32)


def build_graph(
    weights: dict[str, npt.NDArray[Any]],
    *,
    projections: Projections = "int8",
    ranges: dict[str, Vector] | None = None,
) -> bytes:
    """The serialized ONNX model: the tokens' summed input embeddings (``embeddings``, tokens x
    384 floats: :func:`input_embeddings`) to the mean of the last layer's token vectors
    (``pooled``, 384 floats, not normalised). The word table (47 MB) stays out of the graph.
    ``ranges`` are the projections' input ranges by name (``int8`` only; without them no
    smoothing)."""
    from onnx import TensorProto, helper  # noqa: PLC0415

    w = {k.removeprefix("bert."): v for k, v in weights.items()}
    g = _Graph(projections, ranges)
    # a batch of one (tokens x 384 -> 1 x tokens x 384): the fused attention's layout
    x = g.op("Unsqueeze", "embeddings", g.const("batch", np.array([0], np.int64)))
    x = g.norm(x, w, "embeddings.LayerNorm")
    for i in range(_LAYERS):
        p = f"encoder.layer.{i}."
        out = p + "attention.output.dense"
        # the output projection's smoothing is folded into the value projection: no Mul
        s = g.smoothing(out, w[out + ".weight"].T)
        context = _attention(g, x, w, p + "attention.self.", 1.0 if s is None else 1 / s)
        attended = g.linear(
            context, w[out + ".weight"], w[out + ".bias"], out, prescaled=s is not None
        )
        x = g.norm(g.op("Add", x, attended), w, p + "attention.output.LayerNorm")
        up = g.op("Gelu", g.dense(x, w, p + "intermediate.dense"))
        x = g.norm(g.op("Add", x, g.dense(up, w, p + "output.dense")), w, p + "output.LayerNorm")
    axes = g.const("axes", np.array([0, 1], np.int64))
    g.nodes.append(helper.make_node("ReduceMean", [x, axes], ["pooled"], keepdims=0))
    graph = helper.make_graph(
        g.nodes,
        "all-MiniLM-L6-v2",
        [
            helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["tokens", None]),
        ],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, [None])],
        g.inits,
    )
    opsets = [helper.make_opsetid("", 20), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=10)
    blob: bytes = model.SerializeToString()
    return blob


class OnnxMiniLM:
    """all-MiniLM-L6-v2 in an ONNX Runtime session on the calling thread.

    Args:
        weights: the tensors by their Hugging Face names.
        tokenizer: a ``tokenizers.Tokenizer`` for the model's vocabulary.
        projections: ``"int8"`` (the default), ``"int8-blocks"`` or ``"float32"``.
    """

    dim = 384

    def __init__(
        self,
        weights: dict[str, npt.NDArray[Any]],
        tokenizer: Any,
        *,
        projections: Projections = "int8",
    ) -> None:
        import onnxruntime as ort  # noqa: PLC0415

        from broker.cache.calibration import activation_ranges  # noqa: PLC0415

        ranges = activation_ranges(weights, tokenizer) if projections == "int8" else None

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # no warnings about the CPU-only provider list
        self._session = ort.InferenceSession(
            build_graph(weights, projections=projections, ranges=ranges),
            options,
            providers=["CPUExecutionProvider"],
            # its fused residual-and-norm kernel is ~2x slower than the Add and the
            # LayerNormalization it replaces at a question's few tokens (profiled)
            disabled_optimizers=["SkipLayerNormFusion"],
        )
        self._words, self._positions = input_embeddings(weights)
        self._tokenizer = tokenizer
        #: The vocabulary's whole words (the verifier tells typos from words by it).
        self.words = frozenset(w for w in tokenizer.get_vocab() if w.isalpha())
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.no_padding()

    def embed(self, text: str) -> Vector:
        """The unit-length sentence embedding of ``text`` (its first 128 tokens)."""
        ids = self._tokenizer.encode(text).ids
        embeddings = self._words[ids] + self._positions[: len(ids)]
        pooled = self._session.run(None, {"embeddings": embeddings})[0]
        out: Vector = (pooled / max(float(np.linalg.norm(pooled)), 1e-12)).astype(np.float32)
        return out
