"""The Batch API's refusals: a status, a code and a message, sent as an error envelope."""

from __future__ import annotations

__all__ = ["ApiError"]


class ApiError(Exception):
    """A Batch API failure with its status, code and param."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param
