"""What every request meets before and after its body is decoded, whatever its API: its
headers' sizes, who sent it, its body's size (:func:`caller_of`), then the model it names,
which must exist and be allowed to its caller (:func:`allowed_model`).

The chat preparer (:mod:`broker.prepare`) and the embeddings preparer
(:mod:`broker.embeddings.prepare`) make the same checks in the same order, so a request is
refused for the same reason whichever API it speaks.
"""

from __future__ import annotations

from broker.config import Config, ModelConfig
from broker.errors import HeaderTooLarge, ModelNotFound, RequestTooLarge
from broker.tenancy.grants import EVERY_MODEL
from broker.tenancy.tenants import Caller, KeyRing
from schemas import headers

__all__ = ["allowed_model", "caller_of"]


def caller_of(
    data: bytes, hdrs: dict[str, str], caller: Caller | None, keys: KeyRing, max_body: int
) -> Caller:
    """Who sent a request: ``caller`` when it is already known (a tenant-bound subject, a
    batch line, a token verified after a key refresh), else the ``Authorization`` header's
    (an API key or a JWT).

    Raises:
        HeaderTooLarge: a header over its bound (checked first: nothing reads it before).
        KeysNeeded: a JWT whose issuer key is not held yet (the pipeline fetches it and asks
            again).
        RequestTooLarge: the body is over ``max_body`` bytes (checked once the caller is
            known).
    """
    too_long = headers.oversized(hdrs)
    if too_long is not None:
        raise HeaderTooLarge(
            f"{too_long} is over {headers.MAX_VALUE_BYTES[too_long]} bytes", param=too_long
        )
    if caller is None:
        caller = keys.identify(hdrs.get(headers.AUTHORIZATION))
    if len(data) > max_body:
        raise RequestTooLarge(f"request body is {len(data)} bytes; the limit is {max_body}")
    return caller


def allowed_model(config: Config, caller: Caller, asked: str) -> ModelConfig:
    """The configured model a request names, allowed to its caller.

    Raises:
        ModelNotAllowed: outside the tenant's or the key's list (checked before whether the
            model exists).
        ModelNotFound: no such model or alias.
    """
    model = config.resolve(asked)
    if caller.grant is not None or caller.tenant.models is not EVERY_MODEL:
        names = (model.name, *model.aliases) if model is not None else (asked,)
        caller.check_model(asked, names)
    if model is None:
        raise ModelNotFound(
            f"The model `{asked}` does not exist or is not configured.", param="model"
        )
    return model
