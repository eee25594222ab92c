"""A benchmark run's three outputs: the JSON as measured, a Markdown table with the SPEC §8 targets as
ratios, and a PNG latency plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.scenarios import SCENARIOS

FLOOR = "ping"
TABLE_HEAD = (
    "| in flight | scenario | p50 | p90 | p99 | p99.9 | QPS | server CPU (cores) | p50 × floor | QPS × floor "
    "| errors |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
)


def _row(rows: list[dict[str, Any]], scenario: str, level: int) -> dict[str, Any] | None:
    return next((r for r in rows if r["scenario"] == scenario and r["in_flight"] == level), None)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


def _target(name: str, ratio: float | None, limit: float, at_most: bool, how: str) -> dict[str, Any]:
    met = None if ratio is None else (ratio <= limit if at_most else ratio >= limit)
    return {
        "target": name,
        "limit": f"{'≤' if at_most else '≥'} {limit:g}",
        "measured": ratio,
        "met": met,
        "how": how,
    }


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every SPEC §8 target with its ratio from this run (None when the run did not measure it)."""
    rows = result["results"]

    def value(scenario: str, level: int, key: str, source: list[dict[str, Any]] = rows) -> float | None:
        row = _row(source, scenario, level)
        return None if row is None or row.get(key) is None else float(row[key])

    out = [
        _target(
            "Lookup p50 / empty RPC p50 (1 in flight)",
            _ratio(value("lookup_random", 1, "p50_us"), value(FLOOR, 1, "p50_us")),
            1.15,
            True,
            "random 住民票コード keys, same server and transport",
        ),
        _target(
            "Lookup QPS / empty RPC QPS (32 in flight)",
            _ratio(value("lookup_random", 32, "qps"), value(FLOOR, 32, "qps")),
            0.85,
            False,
            f"client processes: {result['options']['client_processes']}",
        ),
    ]
    workers = result.get("workers")
    for level in (32, 128):
        scaled = value("lookup_random", level, "qps", workers["results"]) if workers else None
        n = workers["processes"] if workers else 2
        out.append(
            _target(
                f"Lookup QPS, {n} server processes / 1 ({level} in flight)",
                _ratio(scaled, value("lookup_random", level, "qps")),
                1.6,
                False,
                "SO_REUSEPORT; the clients share the same 2 cores",
            )
        )
    for level in (1, 32):
        out.append(
            _target(
                f"Search p99 / empty RPC p99 ({level} in flight)",
                _ratio(value("search", level, "p99_us"), value(FLOOR, level, "p99_us")),
                3.0,
                True,
                "カナ氏名 + 生年月日 of real residents",
            )
        )
    for level in (1, 32):
        if value("search_address", level, "p99_us") is None:
            continue
        out.append(
            _target(
                f"Search (kana + sex + 市町村) p99 / empty RPC p99 ({level} in flight)",
                _ratio(value("search_address", level, "p99_us"), value(FLOOR, level, "p99_us")),
                3.0,
                True,
                "カナ氏名 + 性別 + 市町村 of real residents",
            )
        )
    for level in (1, 32):
        batch = value("batch_provide", level, "records_per_s")
        if batch is None:
            continue
        out.append(
            _target(
                f"BatchProvide records/s / Lookup QPS ({level} in flight)",
                _ratio(batch, value("lookup_random", level, "qps")),
                10.0,
                False,
                f"issue 18; {SCENARIOS['batch_provide'].conditions:,} conditions a call",
            )
        )
    seeding = result["dataset"]["seed_records_per_s"]
    out.append(
        _target(
            "Seeding, records/s",
            float(seeding),
            50_000,
            False,
            "measured when the dataset was built"
            + (" (cached)" if result["dataset"]["reused_cache"] else ""),
        )
    )
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def markdown(result: dict[str, Any]) -> str:
    m, d = result["machine"], result["dataset"]
    lines = [
        f"# Lookup benchmark — {d['residents']:,} residents",
        "",
        f"Run {result['started']} on {m['cpu']} ({m['cpus']} cores, {m['memory_gib']} GiB), "
        f"Linux {m['kernel']}, "
        f"Python {m['python']}, grpcio {m['grpcio']}, py-lmdb {m['lmdb']}. "
        f"{result['options']['transport']}. Each row: {result['options']['rounds']} rounds of "
        f"{result['options']['duration_s']} s measured after {result['options']['warmup_s']} s warm-up, the "
        "scenarios of a level taking turns; latency over all calls of the rounds (HDR histogram), QPS and "
        "server CPU of the median round. Client processes: "
        f"{result['options']['client_processes']}, {result['options'].get('channels_per_client', 1)} "
        f"connections each{_pinning(result['options'])}. Dataset: {d['residents']:,} residents, "
        f"{d['fuhyo_residents']:,} 附票 records{' (cached)' if d['reused_cache'] else ''}.",
        "",
        "## Targets (SPEC §8)",
        "",
        "| target | limit | measured | met | how |",
        "|---|---|---|---|---|",
    ]
    for t in targets(result):
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        lines.append(f"| {t['target']} | {t['limit']} | {_fmt(t['measured'])} | {met} | {t['how']} |")
    mem = result.get("prefecture_memory_mb", {})
    lines += [
        "",
        f"Prefectural server memory after the run: VmRSS {_fmt(mem.get('VmRSS'))} MB "
        f"(anonymous {_fmt(mem.get('RssAnon'))} MB, file-backed LMDB pages {_fmt(mem.get('RssFile'))} MB).",
        *_store_line(result),
        "",
        "## Latency (µs) and throughput",
        "",
        *TABLE_HEAD,
    ]
    lines += _table(result["results"])
    lines += [
        "",
        "## Storage floor (in-process, no RPC)",
        "",
        "| read | p50 | p90 | p99 | p99.9 | per second |",
    ]
    lines.append("|---|---|---|---|---|---|")
    for r in result["storage_floor"]:
        lines.append(
            f"| {r['scenario']} | {_fmt(r['p50_us'])} | {_fmt(r['p90_us'])} | {_fmt(r['p99_us'])} | "
            f"{_fmt(r['p99.9_us'])} | {_fmt(r['qps'])} |"
        )
    workers = result.get("workers")
    if workers:
        lines += ["", f"## {workers['processes']} server processes on one port (SO_REUSEPORT)", ""]
        lines += TABLE_HEAD
        lines += _table(workers["results"])
    lines += _processes(result["results"], "")
    if workers:
        lines += _processes(workers["results"], f", {workers['processes']} server processes")
    lines += ["", "Scenarios:", ""]
    lines += [f"- `{name}`: {title}" for name, title in result["scenarios"].items()]
    return "\n".join(lines) + "\n"


def _store_line(result: dict[str, Any]) -> list[str]:
    size = result.get("prefecture_store_bytes")
    if not size:
        return []
    per_resident = size / result["dataset"]["residents"]
    return ["", f"Prefectural store on disk: {size / 2**20:,.0f} MiB, {per_resident:,.0f} bytes a resident."]


def _pinning(options: dict[str, Any]) -> str:
    server, client = options.get("server_cpus"), options.get("client_cpus")
    if not server and not client:
        return ""
    return f"; servers pinned to CPU {server or 'any'}, client processes to CPU {client or 'any'}"


def _processes(rows: list[dict[str, Any]], label: str) -> list[str]:
    """Per process: what each client process achieved and used, and the CPU of each server process."""
    measured = [r for r in rows if "processes" in r]
    if not measured:
        return []
    out = [
        "",
        f"## Processes (median round{label})",
        "",
        "| in flight | scenario | QPS (bulk: records/s) per client process | client CPU (cores) "
        "| server CPU per process (cores) | QPS (bulk: records/s) per server core | records/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in measured:
        p = r["processes"]
        per_core = r.get("records_per_s", r["qps"]) / r["server_cpu"] if r["server_cpu"] else None
        clients = ", ".join(_fmt(q) for q in p["client_qps"])
        client_cpu = ", ".join(_fmt(c) for c in p["client_cpu"])
        server_cpu = ", ".join(_fmt(c) for c in p["server_cpu"])
        out.append(
            f"| {r['in_flight']} | {r['scenario']} | {clients} | {client_cpu} | {server_cpu} | "
            f"{_fmt(per_core)} | {_fmt(r.get('records_per_s'))} |"
        )
    return out


def _table(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in rows:
        floor = _row(rows, FLOOR, r["in_flight"])
        p50x = _ratio(r["p50_us"], floor["p50_us"]) if floor else None
        qpsx = _ratio(r["qps"], floor["qps"]) if floor else None
        errors = ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "0"
        out.append(
            f"| {r['in_flight']} | {r['scenario']} | {_fmt(r['p50_us'])} | {_fmt(r['p90_us'])} | "
            f"{_fmt(r['p99_us'])} | {_fmt(r['p99.9_us'])} | {_fmt(r['qps'])} | {_fmt(r['server_cpu'])} | "
            f"{_fmt(p50x)} | {_fmt(qpsx)} | {errors} |"
        )
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["results"]
    names = list(dict.fromkeys(r["scenario"] for r in rows))
    fig, (lat, thr) = plt.subplots(1, 2, figsize=(13, 5.5))
    for name in names:
        mine = sorted((r for r in rows if r["scenario"] == name), key=lambda r: r["in_flight"])
        levels = [r["in_flight"] for r in mine]
        style = {"linewidth": 2.5} if name == FLOOR else {}
        p50, p99 = [_nan(r["p50_us"]) for r in mine], [_nan(r["p99_us"]) for r in mine]
        (line,) = lat.plot(levels, p50, marker="o", label=f"{name} p50", **style)
        lat.plot(levels, p99, marker="x", linestyle="--", color=line.get_color())
        thr.plot(levels, [r["qps"] for r in mine], marker="o", label=name, color=line.get_color(), **style)
    for r in result["storage_floor"]:
        lat.axhline(r["p50_us"], color="grey", linestyle=":", linewidth=1)
        lat.annotate(f"{r['scenario']} p50", (1, r["p50_us"]), fontsize=7, color="grey")
    lat.set(
        xscale="log", yscale="log", xlabel="calls in flight", ylabel="latency (µs); solid p50, dashed p99"
    )
    thr.set(xscale="log", xlabel="calls in flight", ylabel="calls per second")
    for ax in (lat, thr):
        ax.set_xticks(result["options"]["in_flight"], [str(x) for x in result["options"]["in_flight"]])
        ax.set_xticks([], minor=True)
        ax.grid(True, which="both", alpha=0.3)
    lat.legend(fontsize=7)
    thr.legend(fontsize=7)
    fig.suptitle(f"jukinet lookup benchmark, {result['dataset']['residents']:,} residents, mTLS on loopback")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(result: dict[str, Any], out_dir: Path, name: str) -> dict[str, Path]:
    """`<name>.json`, `<name>.md` and `<name>.png` in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {**result, "targets": targets(result)}
    paths = {kind: out_dir / f"{name}.{kind}" for kind in ("json", "md", "png")}
    paths["json"].write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    paths["md"].write_text(markdown(result))
    plot(result, paths["png"])
    return paths
