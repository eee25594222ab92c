"""Reading the trail (監査証跡の検索): by caller, subject, purpose, method, outcome, period.

The segments are scanned (a month of entries reads in well under a second); a cheap substring test on each
raw line skips most lines before any JSON is parsed. Nothing here is an index, so nothing can drift from the
log. Lines that are not well-formed entries are skipped: `verify()` is where they are reported.

The worker trails inside the directory (`w1`, `w2`, …: one per extra server process on the port) are read
too and merged by time; their entries carry `"trail": "w<k>"` (the main trail's carry no such key).
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections.abc import Iterator
from json.encoder import encode_basestring as _json_str
from pathlib import Path
from typing import Any

from server.audit.entries import (
    PROVISION,
    list_segments,
    month_end,
    month_start,
    parse_entry,
    parse_time,
    read_lines,
    segment_month,
    trail_directories,
)

# Entries of a month can sit in the next segment when the clock stepped back across the month's end.
_CLOCK_SLACK = dt.timedelta(days=1)


def _segments_for(directory: Path, since: dt.datetime | None, until: dt.datetime | None) -> list[str]:
    chosen = []
    for name in list_segments(directory):
        key = segment_month(name)
        assert key is not None
        if since is not None and month_end(key) <= since:
            continue  # a segment never holds entries later than its month
        if until is not None and month_start(key) - _CLOCK_SLACK >= until:
            continue
        chosen.append(name)
    return chosen


def query(
    directory: Path,
    *,
    caller: str | None = None,
    role: str | None = None,
    subject: str | None = None,
    purpose: str | None = None,
    method: str | None = None,
    outcome: str | None = None,
    kind: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> Iterator[dict[str, Any]]:
    """Entries matching every filter given, oldest first, from the trail in `directory` and its worker
    trails.

    `subject` is a subject hash (`AuditKeys.subject_hash(resident_code)`); `since` is inclusive and `until`
    exclusive, both timezone-aware.
    """
    given = {
        "caller": caller,
        "role": role,
        "purpose": purpose,
        "method": method,
        "outcome": outcome,
        "kind": kind,
    }
    exact = {k: v for k, v in given.items() if v is not None}
    needles = [f'"{k}":{_json_str(v)}'.encode() for k, v in exact.items()]
    if subject is not None:
        needles.append(_json_str(subject).encode())
    trails = trail_directories(directory)
    if len(trails) == 1:
        yield from _matching(directory, needles, exact, subject, since, until)
        return
    streams = [
        _matching(d, needles, exact, subject, since, until, trail=d.name if i else None)
        for i, d in enumerate(trails)
    ]
    # entry times are JST ISO strings of one fixed form: they sort as strings
    yield from heapq.merge(*streams, key=lambda entry: str(entry["time"]))


def _matching(
    directory: Path,
    needles: list[bytes],
    exact: dict[str, str],
    subject: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    *,
    trail: str | None = None,
) -> Iterator[dict[str, Any]]:
    for name in _segments_for(directory, since, until):
        for _, raw in read_lines(directory / name):
            if not all(n in raw for n in needles) or not raw.endswith(b"\n"):
                continue
            entry = parse_entry(raw)
            if entry is None or any(entry[k] != v for k, v in exact.items()):
                continue
            if subject is not None and subject not in entry["subjects"]:
                continue
            if since is not None or until is not None:
                try:
                    moment = parse_time(entry["time"])
                except ValueError:
                    continue
                if (since is not None and moment < since) or (until is not None and moment >= until):
                    continue
            if trail is not None:
                entry["trail"] = trail
            yield entry


def provisions_of(directory: Path, subject_hash: str) -> list[dict[str, Any]]:
    """Every provision (提供 / 移転) entry concerning one resident, allowed or refused, oldest first.

    What the resident's disclosure (開示) is built from: when, to which body (caller), for which purpose.
    """
    return list(query(directory, subject=subject_hash, kind=PROVISION))
