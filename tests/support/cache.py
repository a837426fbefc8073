"""The cache tests' configuration: one model, ``m``, served by an OpenAI-compatible upstream."""

from __future__ import annotations

from tests.support import stack

__all__ = ["chat", "config"]


def config(upstream: str, l2: str = "redis", extra: str = "") -> str:
    return f"""
        [cache]
        l2 = "{l2}"
        l2_timeout_s = 0.2
        {extra}

        [providers.up]
        kind = "openai_compatible"
        base_url = "{upstream}"

        [models.m]
        aliases = ["m-alias"]
        deployments = [{{ provider = "up", model = "upstream-m" }}]
    """


def chat(content: str, model: str = "m", **extra: object) -> bytes:
    """An ``llm.chat`` request body for :func:`config`'s model."""
    return stack.chat(content, model, **extra)
