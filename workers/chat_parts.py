"""A chat message's content parts as the translations to other APIs read them: texts, and
images given by URL or inline as a base64 ``data:`` URL. Pure functions: no I/O.

Gemini and Bedrock Converse take the same content shape (a list of ``{"text": ...}`` and
image blocks); each says only how an image becomes one of its blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["Content", "content_blocks", "data_url", "image_url", "joined_text"]

JSON = dict[str, Any]
#: A chat message's ``content``: a string, a list of parts, or none.
Content = str | list[JSON] | None

_BASE64 = ";base64,"


def image_url(part: JSON) -> str:
    """The URL of an ``image_url`` part (``""`` when it has none)."""
    return str((part.get("image_url") or {}).get("url", ""))


def data_url(url: str) -> tuple[str, str] | None:
    """A base64 ``data:`` URL's media type and (still base64) data; ``None`` for any other
    URL."""
    if not (url.startswith("data:") and _BASE64 in url):
        return None
    media_type, data = url[5:].split(_BASE64, 1)
    return media_type, data


def content_blocks(content: Content, image: Callable[[JSON], JSON]) -> list[JSON]:
    """The content as ``{"text": ...}`` blocks and ``image(part)`` for each image part; empty
    texts and other parts are left out (Converse refuses a blank text block).

    Raises:
        ValueError: as ``image`` does, for an image the API cannot take.
    """
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    out: list[JSON] = []
    for part in content:
        if part.get("type") == "text" and part.get("text"):
            out.append({"text": str(part["text"])})
        elif part.get("type") == "image_url":
            out.append(image(part))
    return out


def joined_text(content: Content) -> str:
    """The content's texts, one a line (images and other parts left out)."""
    if isinstance(content, str):
        return content
    return "\n".join(str(p.get("text", "")) for p in content or () if p.get("type") == "text")
