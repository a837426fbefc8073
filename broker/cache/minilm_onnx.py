"""all-MiniLM-L6-v2 run by ONNX Runtime: the semantic tier's embedder.

The graph is written at load time from the same ``model.safetensors`` tensors the NumPy
reference (:class:`broker.cache.embed.MiniLM`) reads, with the ``onnx`` package's helpers;
nothing is downloaded and no exported model is shipped. It is the same computation: six BERT
layers (fused QKV projection, 12-head attention, exact-erf GELU, layer norms), mean pooling.
The input embeddings (rows of the word and position tables) and the L2 normalisation are done
here in NumPy, which keeps the 47 MB word table out of the graph and its copies.

Why: one short question spends ~90% of its time in the 24 matrix products, each a thin
``(tokens x 384) @ (384 x 1152|384|1536)`` that OpenBLAS serves poorly (it repacks the weight
on every call); ONNX Runtime packs the weights once and runs the graph in one call that
releases the GIL. With ``quantized`` (the default) the projections are ``MatMulNBits``: int8
weights in blocks of 32 along the input with a float scale each, activations quantized per
block of 32 on the fly (int8 dot products): 4x fewer weight bytes to stream per embedding.
Vectors stay within cosine 0.9995 of the float model's (figures in the README).

The session runs on the calling thread only (no intra-op pool, no spinning): the broker calls
it from a worker thread and its event loop keeps the other core.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from broker.cache.embed import MAX_TOKENS, Vector

__all__ = ["BLOCK", "OnnxMiniLM", "build_graph", "input_embeddings"]

#: Quantization block along a projection's input (rows of the weight's transpose).
BLOCK = 32
_HEADS = 12
_LAYERS = 6
_EPS = 1e-12


class _Graph:
    """Nodes and initializers of the graph being written."""

    def __init__(self, quantized: bool) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.quantized = quantized

    def const(self, name: str, value: npt.NDArray[Any]) -> str:
        from onnx import numpy_helper  # noqa: PLC0415

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, *inputs: str, domain: str = "", **attrs: Any) -> str:
        from onnx import helper  # noqa: PLC0415

        out = f"{op_type.lower()}{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], domain=domain, **attrs))
        return out

    def linear(self, x: str, weight: npt.NDArray[Any], bias: npt.NDArray[Any], name: str) -> str:
        """``x @ weight.T + bias`` for a ``(out, in)`` weight, int8 blocks when quantized."""
        if not self.quantized:
            product = self.op("MatMul", x, self.const(name, weight.T))
            return self.op("Add", product, self.const(name + ".b", bias))
        n, k = weight.shape
        blocks = weight.reshape(n, k // BLOCK, BLOCK)
        scale = np.abs(blocks).max(-1) / 127.0
        scale[scale == 0] = 1.0
        # unsigned storage around the default zero point (128) of 8-bit MatMulNBits
        q = np.clip(np.rint(blocks / scale[..., None]), -128, 127) + 128
        product = self.op(
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
        return self.op("Add", product, self.const(name + ".b", bias))

    def dense(self, x: str, w: dict[str, npt.NDArray[Any]], prefix: str) -> str:
        return self.linear(x, w[prefix + ".weight"], w[prefix + ".bias"], prefix)

    def norm(self, x: str, w: dict[str, npt.NDArray[Any]], prefix: str) -> str:
        gamma = self.const(prefix + ".weight", w[prefix + ".weight"])
        beta = self.const(prefix + ".bias", w[prefix + ".bias"])
        return self.op("LayerNormalization", x, gamma, beta, axis=-1, epsilon=_EPS)


def _attention(g: _Graph, x: str, w: dict[str, npt.NDArray[Any]], p: str) -> str:
    d = w[p + "query.weight"].shape[0]
    hd = d // _HEADS
    scale = 1.0 / math.sqrt(hd)  # folded into the query projection
    qkv_w = np.concatenate(
        [w[p + "query.weight"] * scale, w[p + "key.weight"], w[p + "value.weight"]]
    )
    qkv_b = np.concatenate([w[p + "query.bias"] * scale, w[p + "key.bias"], w[p + "value.bias"]])
    qkv = g.linear(x, qkv_w, qkv_b, p + "qkv")
    heads = g.const(p + "heads", np.array([0, _HEADS, hd], np.int64))  # (tokens, heads, hd)
    q, k, v = (g.op("Reshape", g.op("Slice", qkv, *_columns(g, p, i, d)), heads) for i in range(3))
    scores = g.op(
        "MatMul",
        g.op("Transpose", q, perm=[1, 0, 2]),  # (heads, tokens, hd)
        g.op("Transpose", k, perm=[1, 2, 0]),  # (heads, hd, tokens)
    )
    context = g.op("MatMul", g.op("Softmax", scores, axis=-1), g.op("Transpose", v, perm=[1, 0, 2]))
    flat = g.const(p + "flat", np.array([0, d], np.int64))
    return g.op("Reshape", g.op("Transpose", context, perm=[1, 0, 2]), flat)


def _columns(g: _Graph, p: str, i: int, d: int) -> tuple[str, str, str]:
    start = g.const(f"{p}start{i}", np.array([i * d], np.int64))
    end = g.const(f"{p}end{i}", np.array([(i + 1) * d], np.int64))
    axis = g.const(f"{p}axis{i}", np.array([1], np.int64))
    return start, end, axis


def input_embeddings(
    weights: dict[str, npt.NDArray[Any]],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The word table with segment 0's embedding folded in (the only segment), and the
    position table: a token's input embedding is ``words[id] + positions[at]``."""
    w = {k.removeprefix("bert."): v for k, v in weights.items()}
    words = w["embeddings.word_embeddings.weight"] + w["embeddings.token_type_embeddings.weight"][0]
    positions = w["embeddings.position_embeddings.weight"][:MAX_TOKENS]
    return words.astype(np.float32), np.ascontiguousarray(positions, np.float32)


def build_graph(weights: dict[str, npt.NDArray[Any]], *, quantized: bool = True) -> bytes:
    """The serialized ONNX model: the tokens' summed input embeddings (``embeddings``, tokens x
    384 floats: :func:`input_embeddings`) to the mean of the last layer's token vectors
    (``pooled``, 384 floats, not normalised). The word table (47 MB) stays out of the graph."""
    from onnx import TensorProto, helper  # noqa: PLC0415

    w = {k.removeprefix("bert."): v for k, v in weights.items()}
    g = _Graph(quantized)
    x = "embeddings"
    x = g.norm(x, w, "embeddings.LayerNorm")
    for i in range(_LAYERS):
        p = f"encoder.layer.{i}."
        context = _attention(g, x, w, p + "attention.self.")
        x = g.op("Add", x, g.dense(context, w, p + "attention.output.dense"))
        x = g.norm(x, w, p + "attention.output.LayerNorm")
        up = g.op("Gelu", g.dense(x, w, p + "intermediate.dense"))
        x = g.op("Add", x, g.dense(up, w, p + "output.dense"))
        x = g.norm(x, w, p + "output.LayerNorm")
    axes = g.const("axes", np.array([0], np.int64))
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
        quantized: int8 projections (the default) or float32 throughout.
    """

    dim = 384

    def __init__(
        self, weights: dict[str, npt.NDArray[Any]], tokenizer: Any, *, quantized: bool = True
    ) -> None:
        import onnxruntime as ort  # noqa: PLC0415

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # no warnings about the CPU-only provider list
        self._session = ort.InferenceSession(
            build_graph(weights, quantized=quantized), options, providers=["CPUExecutionProvider"]
        )
        self._words, self._positions = input_embeddings(weights)
        self._tokenizer = tokenizer
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.no_padding()

    def embed(self, text: str) -> Vector:
        """The unit-length sentence embedding of ``text`` (its first 128 tokens)."""
        ids = self._tokenizer.encode(text).ids
        embeddings = self._words[ids] + self._positions[: len(ids)]
        pooled = self._session.run(None, {"embeddings": embeddings})[0]
        out: Vector = (pooled / max(float(np.linalg.norm(pooled)), 1e-12)).astype(np.float32)
        return out
