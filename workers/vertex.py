"""Vertex AI (``kind = "vertex"``): Gemini (:mod:`workers.gemini`, with Vertex AI's URL)
and Claude (:mod:`workers.vertex_claude`) with a service account's OAuth token
(:mod:`workers.gcp_auth`) instead of an API key. One provider serves both publishers: a
deployment's model that starts with ``claude`` goes to Anthropic's, any other to Google's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from schemas import ChatCompletionChunk
from workers.base import ProviderRequest
from workers.config import GOOGLE_CREDENTIALS_ENV, ProviderConfig
from workers.gcp_auth import DEFAULT_TOKEN_URI, ServiceAccountTokens, load_service_account
from workers.gemini import GeminiProvider
from workers.h1 import UpstreamClient
from workers.upstream_http import proxy_for
from workers.vertex_claude import VertexClaude

__all__ = ["VertexProvider", "vertex_base_url", "vertex_provider"]


def vertex_base_url(region: str) -> str:
    """Vertex AI's API root for ``region`` (``global`` has no regional host)."""
    if region == "global":
        return "https://aiplatform.googleapis.com/v1"
    return f"https://{region}-aiplatform.googleapis.com/v1"


class VertexProvider:
    """Gemini and Claude on Vertex AI, chosen by the upstream model's name."""

    def __init__(self, gemini: GeminiProvider, claude: VertexClaude) -> None:
        self.name = gemini.name
        self._gemini = gemini
        self._claude = claude

    def _for(self, request: ProviderRequest) -> GeminiProvider | VertexClaude:
        return self._claude if request.upstream_model.startswith("claude") else self._gemini

    async def complete(self, request: ProviderRequest) -> bytes:
        """A whole completion from the model's publisher."""
        return await self._for(request).complete(request)

    def stream(self, request: ProviderRequest) -> AsyncIterator[ChatCompletionChunk]:
        """A streamed completion from the model's publisher."""
        return self._for(request).stream(request)

    async def aclose(self) -> None:
        """The client belongs to the caller."""


def vertex_provider(
    config: ProviderConfig, environ: Mapping[str, str], client: UpstreamClient
) -> VertexProvider:
    """The adapter for a ``vertex`` provider; reads its key file once, here.

    Raises:
        ValueError: no key file, an unreadable one, or no project anywhere.
    """
    path = config.credentials_file or environ.get(GOOGLE_CREDENTIALS_ENV, "")
    if not path:
        raise ValueError(
            f"provider {config.name}: set credentials_file or {GOOGLE_CREDENTIALS_ENV} "
            "to a service-account key file"
        )
    info = load_service_account(path)
    project = config.project or str(info.get("project_id") or "")
    if not project:
        raise ValueError(f"provider {config.name}: no project (set project)")
    base_url = config.base_url or vertex_base_url(config.region)
    publishers = f"{base_url}/projects/{project}/locations/{config.region}/publishers"
    token_uri = str(info.get("token_uri") or DEFAULT_TOKEN_URI)
    tokens = ServiceAccountTokens(config.name, info, client, proxy=proxy_for(token_uri, environ))
    proxy = proxy_for(base_url, environ)
    return VertexProvider(
        GeminiProvider(config, client, f"{publishers}/google/models", tokens, proxy),
        VertexClaude(config, client, f"{publishers}/anthropic/models", tokens, proxy),
    )
