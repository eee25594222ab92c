"""Percentiles and throughput of one measurement, from its HDR histogram (values in nanoseconds)."""

from __future__ import annotations

from typing import Any

from hdrh.histogram import HdrHistogram

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def summarise(histogram: HdrHistogram, calls: int, seconds: float) -> dict[str, Any]:
    """Latency percentiles in µs and the throughput of one measurement."""
    out: dict[str, Any] = {
        f"p{p:g}_us": round(histogram.get_value_at_percentile(p) / 1000, 2) for p in PERCENTILES
    }
    out["mean_us"] = round(histogram.get_mean_value() / 1000, 2)
    out["max_us"] = round(histogram.get_max_value() / 1000, 2)
    out["calls"] = calls
    out["qps"] = round(calls / seconds, 1) if seconds else 0.0
    return out
