"""The auditor's monthly report (監査証跡 月次報告): who called what, when, and what looks unusual.

Counts only, per caller (SPIFFE ID) and method: no resident's identity, not even a subject hash, appears in
a report. Flags follow SPEC §4.4 — volume, hours, subjects: calls outside office hours, searches whose
results the operator never looked up or provided (a search "for its own sake"), refusals, and callers whose
volume or number of distinct residents stands far above the others of their role.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from server.audit.entries import CHECKPOINTS, JST, PROVISION, read_lines, trail_directories
from server.audit.query import query

SEARCH_SUFFIX = "/Search"
FOLLOW_UP_METHODS = ("/Lookup", "/Provide", "/BatchProvide")  # besides any entry of kind "provision"
UNIDENTIFIED = "(未識別)"
_CALLER_COLUMNS = ("calls", "refused", "off_hours", "provisions", "searches", "distinct_subjects")


@dataclass
class MonthlyReport:
    month: str  # "YYYY-MM"
    office_hours: str
    entries: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    # caller → role, calls, refused, off_hours, provisions, searches, distinct_subjects
    callers: dict[str, dict[str, Any]] = field(default_factory=dict)
    volume: dict[str, dict[str, dict[str, int]]] = field(
        default_factory=dict
    )  # caller → method → outcome → n
    off_hours: dict[str, dict[str, int]] = field(default_factory=dict)  # caller → method → n
    # caller → searches, with_results, unfollowed (results never looked up / provided), empty
    searches: dict[str, dict[str, int]] = field(default_factory=dict)
    refusals: dict[str, dict[str, dict[str, int]]] = field(
        default_factory=dict
    )  # caller → method → outcome → n
    flags: list[dict[str, Any]] = field(default_factory=list)  # caller, reason, count, detail
    # The trail's newest checkpoint when the report was made: keep it, and pass it to verify(known=…).
    checkpoint: dict[str, Any] | None = None
    # The same for each worker trail ("w1", …) when several server processes shared the port.
    worker_checkpoints: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=2, sort_keys=True)

    def to_markdown(self) -> str:
        out = [f"# 監査証跡 月次報告 {self.month}", ""]
        span = f"seq {self.first_seq}–{self.last_seq}" if self.first_seq is not None else "no entries"
        if self.worker_checkpoints:
            span = f"main trail: {span}; worker trails: {', '.join(self.worker_checkpoints)}"
        out += [
            f"- 件数 (entries): {self.entries} ({span})",
            f"- 勤務時間 (office hours): {self.office_hours}",
            "",
        ]
        out += ["## 要注意 (flags)", ""]
        out += _table(
            ["呼出元 (caller)", "理由 (reason)", "件数", "詳細"],
            [[_who(f["caller"]), f["reason"], f["count"], f["detail"]] for f in self.flags],
        )
        out += ["## 呼出元別の件数 (volume by caller)", ""]
        out += _table(
            ["呼出元", "ロール", "件数", "拒否", "時間外", "提供", "検索", "対象者数"],
            [[_who(c), s["role"], *(s[k] for k in _CALLER_COLUMNS)] for c, s in self.callers.items()],
        )
        out += ["### メソッド・結果別 (by method and outcome)", ""]
        out += _table(["呼出元", "メソッド", "結果", "件数"], _flatten3(self.volume))
        out += ["## 時間外の利用 (off-hours activity)", ""]
        out += _table(
            ["呼出元", "メソッド", "件数"],
            [[_who(c), m, n] for c, ms in self.off_hours.items() for m, n in ms.items()],
        )
        out += ["## 照会・提供に続かない検索 (searches not followed by a lookup or provision)", ""]
        out += _table(
            ["呼出元", "検索", "結果あり", "続く照会なし", "結果なし"],
            [
                [_who(c), s["searches"], s["with_results"], s["unfollowed"], s["empty"]]
                for c, s in self.searches.items()
            ],
        )
        out += ["## 拒否 (refusals)", ""]
        out += _table(["呼出元", "メソッド", "結果", "件数"], _flatten3(self.refusals))
        out += ["## 最新チェックポイント (newest checkpoint)", ""]
        if self.checkpoint is None:
            out += ["(none)", ""]
        else:
            cp = self.checkpoint
            out += [
                f"- seq {cp.get('seq')}, {cp.get('kind')}, {cp.get('time')}",
                f"- hash `{cp.get('hash')}`",
            ]
            out += [f"- sig `{cp.get('sig')}`", ""]
        for trail, cp in self.worker_checkpoints.items():
            out += [
                f"- {trail}: seq {cp.get('seq')}, {cp.get('kind')}, {cp.get('time')}",
                f"  hash `{cp.get('hash')}`, sig `{cp.get('sig')}`",
            ]
        if self.worker_checkpoints:
            out.append("")
        return "\n".join(out)


def _who(caller: str) -> str:
    return caller or UNIDENTIFIED


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    if not rows:
        return ["(none)", ""]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return [*lines, ""]


def _flatten3(table: dict[str, dict[str, dict[str, int]]]) -> list[list[Any]]:
    return [[_who(c), m, o, n] for c, ms in table.items() for m, os_ in ms.items() for o, n in os_.items()]


def _sorted3(table: dict[str, dict[str, Counter[str]]]) -> dict[str, dict[str, dict[str, int]]]:
    return {
        c: {m: dict(sorted(os_.items())) for m, os_ in sorted(ms.items())} for c, ms in sorted(table.items())
    }


def _last_checkpoint(directory: Path) -> dict[str, Any] | None:
    last = None
    for _, raw in read_lines(directory / CHECKPOINTS):
        if raw.endswith(b"\n"):
            last = raw
    if last is None:
        return None
    try:
        cp = json.loads(last)
    except ValueError:
        return None
    return cp if isinstance(cp, dict) else None


def _median_outliers(values: dict[str, int], roles: dict[str, str], factor: float) -> dict[str, float]:
    """Callers above `factor` × the median of their role (roles with at least 3 callers): caller → median."""
    by_role: dict[str, list[int]] = defaultdict(list)
    for caller, n in values.items():
        by_role[roles[caller]].append(n)
    out = {}
    for caller, n in values.items():
        peers = by_role[roles[caller]]
        if len(peers) >= 3:
            median = statistics.median(peers)
            if median > 0 and n > factor * median:
                out[caller] = float(median)
    return out


def monthly_report(
    directory: Path,
    month: str,
    *,
    office_hours: tuple[dt.time, dt.time] = (dt.time(8, 30), dt.time(17, 30)),
    holidays: Collection[dt.date] = (),
    unfollowed_threshold: int = 10,
    refusal_threshold: int = 1,
    volume_factor: float = 3.0,
) -> MonthlyReport:
    """The report for one calendar month ("YYYY-MM", JST).

    On hours are weekdays (Mon–Fri, not in `holidays`) from `office_hours[0]` to `office_hours[1]` JST;
    every other call is off hours.
    """
    year, mon = (int(part) for part in month.split("-"))
    start = dt.datetime(year, mon, 1, tzinfo=JST)
    end = dt.datetime(year + mon // 12, mon % 12 + 1, 1, tzinfo=JST)
    opens, closes = office_hours
    report = MonthlyReport(
        month=f"{year:04d}-{mon:02d}",
        office_hours=f"weekdays {opens:%H:%M}–{closes:%H:%M} JST"
        + (f", {len(holidays)} holidays off" if holidays else ""),
    )
    volume: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    refusals: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    off_hours: dict[str, Counter[str]] = defaultdict(Counter)
    callers: dict[str, Counter[str]] = defaultdict(Counter)
    roles: dict[str, str] = {}
    subjects: dict[str, set[str]] = defaultdict(set)
    searches: dict[str, Counter[str]] = defaultdict(Counter)
    search_followed: list[bool] = []
    search_caller: list[str] = []
    pending: dict[tuple[str, str], list[int]] = defaultdict(list)  # (caller, subject) → searches not followed

    for entry in query(directory, since=start, until=end):
        caller, method, outcome = entry["caller"], entry["method"], entry["outcome"]
        report.entries += 1
        if "trail" not in entry:  # seqs count per trail: the span shown is the main trail's
            report.first_seq = entry["seq"] if report.first_seq is None else report.first_seq
            report.last_seq = entry["seq"]
        if "part" in entry:  # a part of a streamed provision: its subjects; the call is its own entry's
            subjects[caller].update(entry["subjects"])
            for subject in entry["subjects"]:
                for index in pending.pop((caller, subject), ()):
                    search_followed[index] = True
            continue
        roles.setdefault(caller, entry["role"])
        stats = callers[caller]
        stats["calls"] += 1
        volume[caller][method][outcome] += 1
        subjects[caller].update(entry["subjects"])
        if outcome != "OK":
            stats["refused"] += 1
            refusals[caller][method][outcome] += 1
        moment = dt.datetime.fromisoformat(entry["time"]).astimezone(JST)
        on_hours = moment.weekday() < 5 and moment.date() not in holidays and opens <= moment.time() < closes
        if not on_hours:
            stats["off_hours"] += 1
            off_hours[caller][method] += 1
        if entry["kind"] == PROVISION:
            stats["provisions"] += 1
        if method.endswith(SEARCH_SUFFIX):
            stats["searches"] += 1
            counts = searches[caller]
            counts["searches"] += 1
            if entry["subjects"]:
                counts["with_results"] += 1
                index = len(search_followed)
                search_followed.append(False)
                search_caller.append(caller)
                for subject in entry["subjects"]:
                    pending[(caller, subject)].append(index)
            else:
                counts["empty"] += 1
        elif entry["kind"] == PROVISION or method.endswith(FOLLOW_UP_METHODS):
            for subject in entry["subjects"]:
                for index in pending.pop((caller, subject), ()):
                    search_followed[index] = True

    for index, followed in enumerate(search_followed):
        if not followed:
            searches[search_caller[index]]["unfollowed"] += 1

    keys = ("calls", "refused", "off_hours", "provisions", "searches")
    report.callers = {
        c: {"role": roles[c], **{k: callers[c][k] for k in keys}, "distinct_subjects": len(subjects[c])}
        for c in sorted(callers)
    }
    report.volume = _sorted3(volume)
    report.refusals = _sorted3(refusals)
    report.off_hours = {c: dict(sorted(ms.items())) for c, ms in sorted(off_hours.items())}
    search_keys = ("searches", "with_results", "unfollowed", "empty")
    report.searches = {c: {k: searches[c][k] for k in search_keys} for c in sorted(searches)}
    report.flags = _flags(report, unfollowed_threshold, refusal_threshold, volume_factor)
    report.checkpoint = _last_checkpoint(directory)
    for worker in trail_directories(directory)[1:]:
        if (cp := _last_checkpoint(worker)) is not None:
            report.worker_checkpoints[worker.name] = cp
    return report


def _flags(report: MonthlyReport, unfollowed: int, refused: int, factor: float) -> list[dict[str, Any]]:
    flags: list[dict[str, Any]] = []
    roles = {c: str(s["role"]) for c, s in report.callers.items()}
    calls = _median_outliers({c: int(s["calls"]) for c, s in report.callers.items()}, roles, factor)
    subjects = _median_outliers(
        {c: int(s["distinct_subjects"]) for c, s in report.callers.items()}, roles, factor
    )
    for caller, s in report.callers.items():
        if s["off_hours"]:
            flags.append(_flag(caller, "off_hours", s["off_hours"], "calls outside office hours"))
        searched = report.searches.get(caller)
        if searched and searched["unfollowed"] >= unfollowed:
            flags.append(
                _flag(
                    caller,
                    "unfollowed_searches",
                    searched["unfollowed"],
                    f"of {searched['with_results']} searches with results, none of the residents found "
                    "was then looked up or provided",
                )
            )
        if s["refused"] >= refused:
            flags.append(_flag(caller, "refusals", s["refused"], "calls refused"))
        if caller in calls:
            flags.append(
                _flag(caller, "volume", s["calls"], f"calls; median of role {s['role']}: {calls[caller]:g}")
            )
        if caller in subjects:
            detail = f"distinct residents; median of role {s['role']}: {subjects[caller]:g}"
            flags.append(_flag(caller, "subjects", s["distinct_subjects"], detail))
    return flags


def _flag(caller: str, reason: str, count: Any, detail: str) -> dict[str, Any]:
    return {"caller": caller, "reason": reason, "count": int(count), "detail": detail}
