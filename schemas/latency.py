"""The latency histogram brokers send the operator console, and its percentiles.

Brokers count answers per bucket; the console adds the counts of every broker bucket by
bucket, then reads percentiles off the sum (percentiles of different brokers cannot be
averaged, bucket counts can be added). The bounds follow the R10 series (ten per decade,
each about 26 % above the last) from 1 ms to 800 s; interpolating inside a bucket keeps a
percentile within a few per cent of the true value for latencies that spread over a bucket.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["LATENCY_BUCKETS_S", "percentile"]

_R10 = (1.0, 1.25, 1.6, 2.0, 2.5, 3.15, 4.0, 5.0, 6.3, 8.0)
#: Upper bounds of the buckets in seconds, ascending; the last is ``inf``.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    *(round(m * 10.0**exponent, 6) for exponent in range(-3, 3) for m in _R10),
    math.inf,
)


def percentile(buckets: Sequence[int], q: float) -> float | None:
    """The latency under which a fraction ``q`` of the counted answers fall (seconds).

    Interpolates linearly inside the bucket the rank falls in; past the last finite bound
    the answer is that bound. ``None`` when nothing was counted.
    """
    total = sum(buckets)
    if total <= 0:
        return None
    rank = min(max(q, 0.0), 1.0) * total
    below = 0
    for i, count in enumerate(buckets[: len(LATENCY_BUCKETS_S)]):
        if count and below + count >= rank:
            upper = LATENCY_BUCKETS_S[i]
            lower = LATENCY_BUCKETS_S[i - 1] if i else 0.0
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * max(0.0, rank - below) / count
        below += count
    return LATENCY_BUCKETS_S[-2]
