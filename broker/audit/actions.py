"""Which admin commands are recorded, as what action, with which parameters.

The one place that reads a command for the audit trail: parameters are names, hashes and ids,
never a key (a created key is recorded by its hash) and never request content. Read-only
commands (status, lists, a breaker's ``status``) are not recorded, nor are commands naming no
known action (they change nothing: the broker answers 400).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from schemas import audit, subjects

if TYPE_CHECKING:
    from broker.config import Config

__all__ = ["MAX_PARAM_CHARS", "config_summary", "describe", "failure_detail"]

_BREAKER = {"open": audit.BREAKER_OPEN, "close": audit.BREAKER_CLOSE, "reset": audit.BREAKER_RESET}
#: Longest text kept of a parameter (a command may carry anything).
MAX_PARAM_CHARS = 200


def describe(
    subject: str, command: dict[str, Any], result: Any = None
) -> tuple[str, dict[str, Any]] | None:
    """The audit action and parameters of an admin command; ``None`` when it is not recorded.

    Args:
        subject: where the command was sent.
        command: its body.
        result: what it answered (when it succeeded), for what the command itself does not
            carry (the hash of a key created).
    """
    read = _READERS.get(subject)
    return None if read is None else read(command, result)


def _breaker(command: dict[str, Any], result: Any) -> tuple[str, dict[str, Any]] | None:
    action = _BREAKER.get(str(command.get("action", "status")))
    return None if action is None else (action, _texts(command, "deployment"))


def _purge(command: dict[str, Any], result: Any) -> tuple[str, dict[str, Any]]:
    if command.get("all") is True:
        return audit.CACHE_PURGE, {"all": True}
    return audit.CACHE_PURGE, _texts(command, "namespace", "tenant", "key")


#: What a key's grant may set (recorded with its create and update).
_GRANT_FIELDS = ("models", "rpm", "tpm", "budget_usd", "budget_period", "priority")


def _keys(command: dict[str, Any], result: Any) -> tuple[str, dict[str, Any]] | None:
    action = command.get("action", "list")
    if action == "create":
        params = _texts(command, "tenant", *_GRANT_FIELDS)
        if isinstance(result, dict) and isinstance(result.get("hash"), str):
            params["hash"] = result["hash"]  # never result["key"]
        return audit.KEY_CREATE, params
    if action == "update":
        return audit.KEY_UPDATE, _texts(command, "hash", *_GRANT_FIELDS)
    if action == "revoke":
        return audit.KEY_REVOKE, _texts(command, "hash")
    return None


def _reload(command: dict[str, Any], result: Any) -> tuple[str, dict[str, Any]]:
    return audit.KEYS_RELOAD, {}


def _cancel(command: dict[str, Any], result: Any) -> tuple[str, dict[str, Any]]:
    return audit.BATCH_CANCEL, _texts(command, "id")


_Reader = Callable[[dict[str, Any], Any], "tuple[str, dict[str, Any]] | None"]
_READERS: dict[str, _Reader] = {
    subjects.BREAKER_ADMIN: _breaker,
    subjects.CACHE_PURGE: _purge,
    subjects.ADMIN_KEYS: _keys,
    subjects.ADMIN_KEYS_RELOAD: _reload,
    subjects.ADMIN_BATCH_CANCEL: _cancel,
}


def failure_detail(reply: object) -> str:
    """The message of an error envelope (encoded or not), bounded; ``""`` when it has none."""
    if isinstance(reply, bytes):
        try:
            reply = msgspec.json.decode(reply)
        except msgspec.MsgspecError:
            return ""
    error = reply.get("error") if isinstance(reply, dict) else None
    return str(error.get("message", ""))[:MAX_PARAM_CHARS] if isinstance(error, dict) else ""


def _texts(command: dict[str, Any], *names: str) -> dict[str, Any]:
    """The named fields present in ``command``, as bounded text."""
    return {n: str(command[n])[:MAX_PARAM_CHARS] for n in names if command.get(n) is not None}


def config_summary(config: Config) -> dict[str, Any]:
    """What a ``config.loaded`` record keeps of a configuration: each tenant's budget, limits
    and admin flag (budgets change only through the file: consecutive records show each
    change), how many console keys and models, the replicas. Never key hashes."""
    tenants = {
        name: {
            "admin": tenant.admin,
            "budget_usd": tenant.budget_usd,
            "budget_period": tenant.budget_period,
            "rpm": tenant.rpm,
            "tpm": tenant.tpm,
        }
        for name, tenant in sorted(config.tenants.items())
    }
    return {
        "tenants": tenants,
        "console_keys": len(config.console.keys),
        "auth_required": config.auth_required,
        "models": len(config.models),
        "replicas": config.nats.replicas,
    }
