"""The Responses API tests' stack: a recording fake of OpenAI itself (it takes the Responses
API) and the models ``mock`` (the mock worker), ``compat`` (an OpenAI-compatible upstream that
only speaks chat completions) and ``gpt`` (OpenAI, passed through)."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator

import pytest

from broker.config import Config
from tests.support.upstream import FakeOpenAI, running_fake

__all__ = ["openai_upstream", "responses_config"]


@pytest.fixture
async def openai_upstream() -> AsyncIterator[FakeOpenAI]:
    """A recording fake of OpenAI itself (it takes the Responses API)."""
    async with running_fake() as fake:
        yield fake


def responses_config(compat_url: str, openai_url: str, sections: str) -> Config:
    """``sections`` (indented TOML: ``[cache]``, ``[tenants.*]`` ...), then the providers
    ``mock``, ``compat`` (at ``compat_url``) and ``oai`` (OpenAI at ``openai_url``) behind the
    models ``mock``, ``compat`` (served as ``served-compat``) and ``gpt`` (``gpt-4.1``)."""
    return Config.from_toml(
        textwrap.dedent(sections)
        + f"""
[providers.mock]
kind = "mock"
[providers.compat]
kind = "openai_compatible"
base_url = "{compat_url}"
[providers.oai]
kind = "openai"
base_url = "{openai_url}"

[models.mock]
deployments = [{{ provider = "mock" }}]
[models.compat]
deployments = [{{ provider = "compat", model = "served-compat" }}]
[models.gpt]
deployments = [{{ provider = "oai", model = "gpt-4.1" }}]
"""
    )
