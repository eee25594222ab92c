"""Per-identity rate limits (SPEC §4.2): a token bucket for each caller, sized by its role.

Checked in the chain right after authorization (identity, role, purpose), before the handler: a caller
past its limit gets RESOURCE_EXHAUSTED with google.rpc.RetryInfo (when a token will be there) and no
payload, and the refusal is audited like any other. A stream takes one token when it opens.

Limits come from the settings (`rate_limits`): `role=rate/burst` items, comma-separated, e.g.
`agency=1000/2000,operator=100/200` — `rate` calls per second refill a bucket of `burst` calls. A role not
named is not limited (the servers' own roles: their peers are limited by their own callers). Buckets are
per process: with N prefectural workers sharing a port a caller may get up to N times its rate.

Cheap by construction (the chain is the hot path): one dict lookup, one clock read, a few float
operations per call; buckets of callers idle long enough to be full again are dropped when the table
grows past `max_callers`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from server.identity.pki import SpiffeId

RATE_LIMITED_MESSAGE = "too many calls from this caller; retry after the delay in the error's RetryInfo"


@dataclass(frozen=True)
class Rate:
    per_second: float
    burst: float


def parse_rates(text: str) -> dict[str, Rate]:
    """`role=rate/burst,...` → the rate of each role; ValueError naming the item that is not one."""
    rates: dict[str, Rate] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        role, _, spec = item.partition("=")
        per_second, _, burst = spec.partition("/")
        try:
            rate = Rate(float(per_second), float(burst or per_second))
        except ValueError:
            raise ValueError(f"rate_limits: {item!r} is not role=rate/burst") from None
        if not role.strip() or rate.per_second <= 0 or rate.burst < 1:
            raise ValueError(f"rate_limits: {item!r}: a role, rate > 0 and burst >= 1")
        rates[role.strip()] = rate
    return rates


class RateLimiter:
    def __init__(
        self,
        rates: dict[str, Rate],
        *,
        clock: Callable[[], float] = time.monotonic,
        max_callers: int = 10_000,
    ) -> None:
        self._rates = rates
        self._clock = clock
        self._max = max_callers
        self._buckets: dict[SpiffeId, list[float]] = {}  # caller → [tokens, when counted]

    def take(self, caller: SpiffeId) -> float | None:
        """Take a token for one call: None when allowed, else the seconds until one is there."""
        rate = self._rates.get(caller.role)
        if rate is None:
            return None
        now = self._clock()
        bucket = self._buckets.get(caller)
        if bucket is None:
            if len(self._buckets) >= self._max:
                self._forget_full(now)
            bucket = self._buckets[caller] = [rate.burst, now]
        tokens = min(rate.burst, bucket[0] + (now - bucket[1]) * rate.per_second)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return None
        bucket[0] = tokens
        return (1.0 - tokens) / rate.per_second

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have refilled (forgetting them changes nothing)."""
        for caller, (tokens, then) in list(self._buckets.items()):
            rate = self._rates[caller.role]
            if tokens + (now - then) * rate.per_second >= rate.burst:
                del self._buckets[caller]
        if len(self._buckets) >= self._max:  # all busy: start afresh rather than grow without bound
            self._buckets.clear()


def rate_limited_metadata(retry_after: float) -> tuple[tuple[str, bytes], ...]:
    """Trailing metadata of a rate-limited call: google.rpc.Status with RetryInfo and ErrorInfo."""
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(max(retry_after, 0.001) * 1e9))
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=RATE_LIMITED_MESSAGE)
    for detail in (
        error_details_pb2.RetryInfo(retry_delay=delay),
        error_details_pb2.ErrorInfo(reason="RATE_LIMITED", domain="juki.v1"),
    ):
        packed = status.details.add()
        packed.Pack(detail)
    return (("grpc-status-details-bin", status.SerializeToString()),)
