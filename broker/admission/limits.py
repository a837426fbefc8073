"""A deployment's provider limits as pool sizes: calls in flight, requests and tokens.

``rpm`` becomes a pool of ``P`` request permits each held for ``60 * P / rpm`` seconds (and
:data:`RATE_MARGIN` more), with ``P`` about one second's allowance (at least 4 permits where
the limit allows): any minute then holds at most ``rpm`` requests, and the minute's allowance
is spent evenly instead of in its first second (a provider that refills continuously, as
OpenAI's do, is never asked for more than it has). The margin keeps the spacing of two uses
of one permit over a whole hold when they reach the provider: the hop from a broker to the
provider takes a varying few milliseconds, and without it two requests a hold apart here
could arrive less than a hold apart there. ``tpm`` becomes a pool of ``tpm`` tokens each held
for a minute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from broker.admission.pool import Pool

__all__ = ["Limits", "request_window"]

#: The fewest request permits a window holds, where the limit allows it.
MIN_REQUEST_PERMITS = 4
#: How long a token stays counted.
TOKEN_WINDOW_S = 60.0
#: Request permits are held this much longer than the limit needs (10 %: up to 100 ms of
#: varying delay between a broker and the provider on a one-second hold).
RATE_MARGIN = 0.1


def request_window(rpm: int) -> tuple[int, float]:
    """``(permits, hold_s)`` of a requests-per-minute limit."""
    permits = max(min(MIN_REQUEST_PERMITS, rpm), math.ceil(rpm / 60))
    return permits, 60.0 * permits / rpm * (1 + RATE_MARGIN)


@dataclass(frozen=True, slots=True)
class Limits:
    """A deployment's limits across the mesh (``None``: none)."""

    calls: int | None = None
    rpm: int | None = None
    tpm: int | None = None

    @property
    def any(self) -> bool:
        """Whether there is a limit at all."""
        return bool(self.calls or self.rpm or self.tpm)

    def sizes(self) -> tuple[int, int, int]:
        """Each pool's whole size across the mesh (0: no such pool)."""
        requests = request_window(self.rpm)[0] if self.rpm else 0
        return self.calls or 0, requests, self.tpm or 0

    def pools(self, sizes: tuple[int, int, int]) -> tuple[Pool | None, Pool | None, Pool | None]:
        """Pools of these limits, of ``sizes`` permits each (this broker's shares)."""
        return (
            Pool(sizes[0]) if self.calls else None,
            Pool(sizes[1], request_window(self.rpm)[1]) if self.rpm else None,
            Pool(sizes[2], TOKEN_WINDOW_S) if self.tpm else None,
        )

    def merged(self, learned_rpm: int | None, learned_tpm: int | None) -> Limits:
        """These limits, with what the provider said filling those the configuration left
        out (a configured limit is the operator's word and stays)."""
        return Limits(self.calls, self.rpm or learned_rpm, self.tpm or learned_tpm)
