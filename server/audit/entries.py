"""The audit entry (監査証跡の1件), its one canonical form, and the files it lives in.

An entry is one line of canonical JSON (sorted keys, compact separators, UTF-8 as is) ending in `\\n`.
`hash` is the hex SHA-256 of the canonical JSON of the entry without `hash`; `prev` is the `hash` of the
entry before it (for seq 1: the trail's genesis hash, named by the signed genesis checkpoint). Segments are
`trail-YYYYMM.log`, one per calendar month (JST) of the entry time; `checkpoints.log` holds the signed
checkpoints. Nothing here knows about gRPC: the server hands over an `AuditEvent`.

A trail has one writer. When several prefectural server processes share a port, worker k > 0 writes its own
trail in the subdirectory `w<k>` of the configured trail directory (worker 0 writes the directory itself);
the readers (`query`, the monthly report, `juki audit verify`) cover those trails too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring as _json_str  # what json.dumps uses with ensure_ascii=False
from pathlib import Path
from typing import Any

JST = dt.timezone(dt.timedelta(hours=9), "JST")

CHECKPOINTS = "checkpoints.log"
CHECKPOINT_GENESIS_PREV = "0" * 64  # `prev` of the first checkpoint line
LOCK_FILE = ".lock"
_BACK_CHUNK = 64 * 1024
WITNESSED_FILE = (
    "witnessed.note"  # the newest checkpoint a witness cosigned, kept by the server (a convenience)
)
SEGMENT_RE = re.compile(r"^trail-(\d{4})(0[1-9]|1[0-2])\.log$")
WORKER_TRAIL_RE = re.compile(r"^w([1-9]\d*)$")  # a worker's own trail, inside the main trail directory
PROVISION = "provision"  # AuditEvent.kind of 提供 / 移転

# Every key of an entry line, and the type of its value.
ENTRY_TYPES: dict[str, type] = {
    "caller": str,
    "count": int,
    "hash": str,
    "items": list,
    "kind": str,
    "method": str,
    "outcome": str,
    "prev": str,
    "purpose": str,
    "request_id": str,
    "role": str,
    "seq": int,
    "source": str,
    "subjects": list,
    "time": str,
}
# Keys an entry carries only when set (older entries, and most entries, have none of them): on whose behalf
# a server called, and a refused certificate's claimed identity and its serial (hex), recorded with caller
# "" since the claim was never authenticated; and which part of a streamed provision an entry is (a
# BatchProvide chunk's provision: its subjects, items and count; the call's own entry, without `part`,
# follows with the call's outcome and count of every result, and the subjects no part named).
OPTIONAL_TYPES: dict[str, type] = {
    "requester": str,  # SPIFFE ID on whose behalf a server called (FetchMyNumber, National.Query)
    "claimed": str,
    "serial": str,
    "part": int,  # 1, 2, …: one part (a chunk) of a streamed provision, written before the chunk was sent
}


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """What the server says about one call; the trail adds `seq`, `time`, `prev` and `hash`."""

    caller: str  # SPIFFE ID, "" when the peer could not be identified
    role: str
    method: str  # full gRPC method name, "/juki.v1.Prefecture/Lookup"
    purpose: str
    outcome: str  # gRPC status name: "OK", "PERMISSION_DENIED", …
    subjects: tuple[str, ...] = ()  # subject_hash() of the residents concerned, never resident codes
    items: tuple[str, ...] = ()  # names of the items returned ("resident_code", "name", …, "my_number")
    request_id: str = ""
    source: str = ""  # "LOCAL" / "NATIONAL" for forwarded answers
    count: int = 0  # records returned (or notices applied)
    kind: str = ""  # "provision" (提供 / 移転), "intent" (a writing call, before it writes), or ""
    requester: str = ""  # on whose behalf a server called; written only when set
    claimed: str = ""  # refused for its certificate: the SPIFFE ID it claims (caller stays "")
    serial: str = ""  # … and the certificate's serial, lowercase hex
    part: int = 0  # n ≥ 1: the n-th part entry of a streamed provision (written only when set)


def jst_now() -> dt.datetime:
    return dt.datetime.now(JST)


def canonical(obj: Mapping[str, Any]) -> str:
    """The one serialisation that is hashed, signed and written."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def format_time(moment: dt.datetime) -> str:
    """RFC 3339 in JST with microseconds, e.g. 2025-04-01T09:00:00.000000+09:00."""
    if moment.tzinfo is None:
        raise ValueError("audit times must be timezone-aware")
    return moment.astimezone(JST).isoformat(timespec="microseconds")


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _str_list(values: tuple[str, ...]) -> str:
    return "[" + ",".join(map(_json_str, values)) + "]"


def encode_entry(event: AuditEvent, seq: int, time: str, prev: str) -> tuple[str, str]:
    """(hash, line) of one entry, built by hand in canonical key order: json.dumps costs 3× as much.

    `time` and `prev` are produced by the trail itself (ASCII, nothing to escape). The result is
    byte-identical to `canonical()` of the same dict (checked by the tests on awkward strings).
    """
    claimed = f',"claimed":{_json_str(event.claimed)}' if event.claimed else ""
    serial = f',"serial":{_json_str(event.serial)}' if event.serial else ""
    part = f',"part":{int(event.part)}' if event.part else ""
    head = f'{{"caller":{_json_str(event.caller)}{claimed},"count":{int(event.count)}'
    tail = (
        f',"items":{_str_list(event.items)},"kind":{_json_str(event.kind)}'
        f',"method":{_json_str(event.method)},"outcome":{_json_str(event.outcome)}'
        f'{part},"prev":"{prev}"'
        f',"purpose":{_json_str(event.purpose)},"request_id":{_json_str(event.request_id)}'
        f"{_optional('requester', event.requester)}"
        f',"role":{_json_str(event.role)},"seq":{seq}{serial},"source":{_json_str(event.source)}'
        f',"subjects":{_str_list(event.subjects)},"time":"{time}"}}'
    )
    digest = hashlib.sha256((head + tail).encode()).hexdigest()
    return digest, f'{head},"hash":"{digest}"{tail}\n'


def _optional(key: str, value: str) -> str:
    return f',"{key}":{_json_str(value)}' if value else ""


def parse_entry(raw: bytes) -> dict[str, Any] | None:
    """The entry a line holds, or None when the line is not an audit entry at all."""
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(obj, dict) or obj.keys() - OPTIONAL_TYPES.keys() != ENTRY_TYPES.keys():
        return None
    if len(obj) > len(ENTRY_TYPES) and not obj.keys() - ENTRY_TYPES.keys() <= OPTIONAL_TYPES.keys():
        return None
    for key, value in obj.items():
        kind = ENTRY_TYPES.get(key) or OPTIONAL_TYPES[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return None
    for key, kind in OPTIONAL_TYPES.items():
        if key in obj and (not isinstance(obj[key], kind) or not obj[key]):
            return None
    if not all(isinstance(v, str) for v in obj["items"]) or not all(
        isinstance(v, str) for v in obj["subjects"]
    ):
        return None
    return obj


def entry_hash(raw: bytes, entry: Mapping[str, Any]) -> tuple[bool, str]:
    """(is the line canonical, SHA-256 of the entry without `hash`) for a parsed entry line."""
    line = canonical(entry).encode() + b"\n"
    if line == raw:
        # In a canonical line the hash member is this exact byte string (quotes in values are escaped).
        body = raw[:-1].replace(b',"hash":"' + entry["hash"].encode() + b'"', b"", 1)
        return True, sha256_hex(body)
    without = {k: v for k, v in entry.items() if k != "hash"}
    return False, sha256_hex(canonical(without).encode())


def segment_name(month_key: int) -> str:
    """`trail-YYYYMM.log` for a month key year*100+month."""
    return f"trail-{month_key // 100:04d}{month_key % 100:02d}.log"


def segment_month(name: str) -> int | None:
    """The month key (year*100+month) of a segment file name, None for any other name."""
    m = SEGMENT_RE.match(name)
    return int(m.group(1)) * 100 + int(m.group(2)) if m else None


def month_key(moment: dt.datetime) -> int:
    local = moment.astimezone(JST)
    return local.year * 100 + local.month


def month_start(key: int) -> dt.datetime:
    return dt.datetime(key // 100, key % 100, 1, tzinfo=JST)


def month_end(key: int) -> dt.datetime:
    """The first instant after the month (00:00 JST on the 1st of the next month)."""
    year, month = divmod(key, 100)
    return dt.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=JST)


def list_segments(directory: Path) -> list[str]:
    """Segment file names, oldest first (the names sort by month)."""
    try:
        names = [p.name for p in directory.iterdir()]
    except FileNotFoundError:
        return []
    return sorted(n for n in names if SEGMENT_RE.match(n))


def worker_trail_dir(directory: Path, worker: int) -> Path:
    """The trail directory of server process `worker` (0: the configured directory itself)."""
    return directory if worker == 0 else directory / f"w{worker}"


def trail_directories(directory: Path) -> list[Path]:
    """The trail in `directory` and the worker trails inside it (`w1`, `w2`, … by number)."""
    try:
        subdirs = [p for p in directory.iterdir() if WORKER_TRAIL_RE.match(p.name) and p.is_dir()]
    except (FileNotFoundError, NotADirectoryError):
        return [directory]
    subdirs.sort(key=lambda p: int(p.name[1:]))
    return [directory, *subdirs]


def read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, raw line with its `\\n`) of a file; a torn last line comes without `\\n`."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return
    with f:
        yield from enumerate(f, start=1)


def lines_backwards(fd: int, size: int) -> Iterator[bytes]:
    """Complete lines of a file, last first, reading it from the end in chunks."""
    pending = b""
    end = size
    while end > 0:
        start = max(0, end - _BACK_CHUNK)
        pending = os.pread(fd, end - start, start) + pending
        end = start
        parts = pending.split(b"\n")
        pending = parts[0]
        for part in reversed(parts[1:]):
            if part:
                yield part + b"\n"
    if pending:
        yield pending + b"\n"


def segments_from(directory: Path, seq: int) -> list[str]:
    """The segments that can hold entries from `seq` on: from the newest one whose first entry is at or
    before `seq` (all of them when none is), oldest first."""
    segments = list_segments(directory)
    for i in reversed(range(len(segments))):
        first = next((e for _, raw in read_lines(directory / segments[i]) if (e := parse_entry(raw))), None)
        if first is not None and first["seq"] <= seq:
            return segments[i:]
    return segments


def iter_entries(directory: Path, segments: list[str] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(segment, entry) of every well-formed, complete entry line, in file order; others are skipped.

    For readers (query, report): verification is `verify()`'s business.
    """
    for name in list_segments(directory) if segments is None else segments:
        for _, raw in read_lines(directory / name):
            if raw.endswith(b"\n"):
                entry = parse_entry(raw)
                if entry is not None:
                    yield name, entry
