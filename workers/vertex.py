"""Gemini on Vertex AI (``kind = "vertex"``): the Gemini adapter with Vertex AI's URL and a
service account's OAuth token (:mod:`workers.gcp_auth`) instead of an API key."""

from __future__ import annotations

from collections.abc import Mapping

from workers.config import GOOGLE_CREDENTIALS_ENV, ProviderConfig
from workers.gcp_auth import DEFAULT_TOKEN_URI, ServiceAccountTokens, load_service_account
from workers.gemini import GeminiProvider
from workers.h1 import UpstreamClient
from workers.upstream_http import proxy_for

__all__ = ["vertex_base_url", "vertex_provider"]


def vertex_base_url(region: str) -> str:
    """Vertex AI's API root for ``region`` (``global`` has no regional host)."""
    if region == "global":
        return "https://aiplatform.googleapis.com/v1"
    return f"https://{region}-aiplatform.googleapis.com/v1"


def vertex_provider(
    config: ProviderConfig, environ: Mapping[str, str], client: UpstreamClient
) -> GeminiProvider:
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
    models_url = f"{base_url}/projects/{project}/locations/{config.region}/publishers/google/models"
    token_uri = str(info.get("token_uri") or DEFAULT_TOKEN_URI)
    tokens = ServiceAccountTokens(config.name, info, client, proxy=proxy_for(token_uri, environ))
    return GeminiProvider(config, client, models_url, tokens, proxy_for(base_url, environ))
