"""deploy/: Prometheus configuration, alert rules and Grafana dashboard are valid and name only real metrics.

The rules and the scrape configuration are checked by promtool itself (`apt-get install prometheus`); the
metric names are checked against what `server/observability/metrics.py` exports, so renaming a metric
without updating the dashboard and the alerts fails here rather than in the operator's night.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from server.identity.pki import Pki
from server.observability import metrics
from server.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES = PROMETHEUS_DIR / "rules" / "juki.rules.yml"
RULE_TESTS = PROMETHEUS_DIR / "rules" / "juki.rules.test.yml"
DASHBOARD = DEPLOY / "grafana" / "jukinet-dashboard.json"
README = DEPLOY / "README.md"

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian/Ubuntu: apt-get install prometheus)"
)

# What prometheus_client exports for each metric type (counters also export `_created`, never queried).
EXPORTED_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
}
# Added by Prometheus to every target, not by the servers.
SYNTHETIC = frozenset({"up"})


def metric_families() -> dict[str, set[str]]:
    """Each metric of server/observability/metrics.py with the series names it exports."""
    families: dict[str, set[str]] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                families[family.name] = {family.name + s for s in EXPORTED_SUFFIXES[family.type]}
    return families


def exported_names() -> set[str]:
    return set().union(*metric_families().values())


# --- a small PromQL reader: the metric names an expression selects ---------------------------------------
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_VARIABLE = re.compile(r"\$\{?\w+\}?")  # Grafana: $job, ${DS_PROMETHEUS}, $__rate_interval
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_OFFSET = re.compile(r"\boffset\s+-?\w+")
_IDENTIFIER = re.compile(r"[A-Za-z_:][\w:]*")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
)


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers not functions, keywords, labels or numbers."""
    text = _STRING.sub('""', expr)
    text = _VARIABLE.sub("", text)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub(" ", text)
    text = _OFFSET.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        start, end = match.span()
        if start and (text[start - 1].isalnum() or text[start - 1] in "_.:"):
            continue  # the tail of a number or a duration: 1e3, 5m
        if text[end:].lstrip().startswith("(") or match.group() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


def test_the_promql_reader_finds_metrics_and_nothing_else() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (job, le) (rate(grpc_server_handling_seconds_bucket{job=~"$job"}'
        '[$__rate_interval]))) > 0.05 and on (job) juki:x:rate5m offset 5m unless up{le="1e3"} * 1e3'
    )
    assert metric_names(expr) == {"grpc_server_handling_seconds_bucket", "juki:x:rate5m", "up"}


# --- a small reader of the rule files' YAML (the project has no YAML library; promtool checks the syntax) -
def yaml_values(text: str, key: str) -> list[str]:
    """Every value of `key:` in a YAML file: plain, quoted, or a block scalar (`|`, `>`, `>-`, …)."""
    lines = text.splitlines()
    pattern = re.compile(rf"^(\s*)(?:- )?{re.escape(key)}:(?:\s+(.*))?$")
    values = []
    for number, line in enumerate(lines):
        match = pattern.match(line)
        if not match:
            continue
        indent, value = len(match.group(1)), (match.group(2) or "").strip()
        if value[:1] in ("|", ">"):
            block = []
            for following in lines[number + 1 :]:
                if following.strip() and len(following) - len(following.lstrip()) <= indent:
                    break
                block.append(following.strip())
            value = " ".join(block).strip()
        elif len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1].replace("''", "'") if value[0] == "'" else value[1:-1]
        values.append(value)
    return values


def rule_blocks(text: str, kind: str) -> dict[str, str]:
    """`alert` or `record` name → the text of its rule."""
    blocks = re.split(r"^\s*- (?=alert:|record:|name:)", text, flags=re.MULTILINE)
    found = {}
    for block in blocks:
        if block.startswith(f"{kind}:"):
            name = block.split(None, 2)[1]
            assert name not in found, f"{kind} {name} defined twice"
            found[name] = block
    return found


def promtool(*args: str, cwd: Path) -> str:
    assert PROMTOOL is not None
    result = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


# --- Prometheus configuration ------------------------------------------------------------------------------
def scrape_jobs() -> dict[str, str]:
    """job_name → the text of its scrape config."""
    blocks = re.split(r"^\s*- job_name:\s*", CONFIG.read_text(), flags=re.MULTILINE)[1:]
    return {block.split()[0]: block for block in blocks}


def test_the_scrape_jobs_use_the_servers_metrics_ports_over_https() -> None:
    settings = Settings(home=ROOT)
    jobs = scrape_jobs()
    assert set(jobs) == {"juki-prefecture", "juki-fuhyo", "juki-national"}
    for job, port in (
        ("juki-prefecture", settings.prefecture_metrics_port),
        ("juki-fuhyo", settings.fuhyo_metrics_port),
        ("juki-national", settings.national_metrics_port),
    ):
        assert f'"{settings.host}:{port}"' in jobs[job]
        assert re.search(r"^\s*scheme: https$", jobs[job], re.MULTILINE)
    assert re.search(r"^\s*scrape_interval: 15s$", CONFIG.read_text(), re.MULTILINE)
    assert re.search(r"^rule_files:\n\s+- rules/juki\.rules\.yml$", CONFIG.read_text(), re.MULTILINE)


def test_the_scrape_jobs_present_the_monitor_certificate_of_the_dev_pki() -> None:
    pki = Pki(Settings(home=ROOT).pki_path)
    cert, key = pki.cert_paths("monitor", "monitor-01")
    expected = {"ca_file": pki.ca_cert_path, "cert_file": cert, "key_file": key}
    for job, block in scrape_jobs().items():
        files = dict(re.findall(r"^\s*(ca_file|cert_file|key_file):\s*(\S+)$", block, re.MULTILINE))
        assert files.keys() == expected.keys(), job
        for name, path in files.items():
            # Relative paths in a Prometheus configuration are relative to the file.
            assert (CONFIG.parent / path).resolve() == expected[name].resolve(), (job, name)


def repository_copy(tmp_path: Path, pki_dir: Path | None) -> Path:
    """deploy/prometheus/ next to certs/dev/ as in the repository, so the relative paths are checked as is."""
    shutil.copytree(PROMETHEUS_DIR, tmp_path / "deploy" / "prometheus")
    if pki_dir is not None:
        (tmp_path / "certs").mkdir()
        (tmp_path / "certs" / "dev").symlink_to(pki_dir, target_is_directory=True)
    return tmp_path / "deploy" / "prometheus" / "prometheus.yml"


@needs_promtool
def test_promtool_accepts_the_config_with_a_dev_pki(tmp_path: Path, pki_dir: Path) -> None:
    output = promtool("check", "config", str(repository_copy(tmp_path, pki_dir)), cwd=tmp_path)
    assert "1 rule files found" in output and "SUCCESS" in output


@needs_promtool
def test_promtool_refuses_the_config_without_the_monitor_certificate(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    config = repository_copy(tmp_path, None)
    result = subprocess.run([PROMTOOL, "check", "config", str(config)], capture_output=True, text=True)
    assert result.returncode != 0 and "monitor-01" in result.stdout + result.stderr


# --- rules -------------------------------------------------------------------------------------------------
@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    output = promtool("check", "rules", str(RULES), cwd=RULES.parent)
    assert "SUCCESS" in output


@needs_promtool
def test_the_rule_unit_tests_pass() -> None:
    """Among them: any audit write failure and an outbox change older than 5 minutes fire their alerts."""
    output = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert "SUCCESS" in output


def test_the_rule_unit_tests_cover_the_audit_and_outbox_alerts() -> None:
    tested = set(yaml_values(RULE_TESTS.read_text(), "alertname"))
    assert {"JukiAuditWriteFailure", "JukiOutboxOldestChangeStale"} <= tested
    assert tested <= set(rule_blocks(RULES.read_text(), "alert"))


REQUIRED_ALERTS = {
    "JukiTargetDown",
    "JukiOutboxOldestChangeStale",
    "JukiOutboxBacklogGrowing",
    "JukiRelayFailing",
    "JukiAuditWriteFailure",
    "JukiHighErrorRatio",
    "JukiLookupLatencyHigh",
    "JukiAuthorizationRefusalsSpike",
    "JukiCertificateExpiringSoon",
    "JukiLmdbMapNearlyFull",
    "JukiTempstoreEntriesLingering",
}


def test_every_alert_has_a_severity_a_summary_a_description_and_a_runbook_entry() -> None:
    alerts = rule_blocks(RULES.read_text(), "alert")
    assert alerts.keys() >= REQUIRED_ALERTS
    headings = set(re.findall(r"^### (\w+)$", README.read_text(), re.MULTILINE))
    for name, block in alerts.items():
        assert re.search(r"^\s*severity: (warning|critical)$", block, re.MULTILINE), name
        for annotation in ("summary", "description"):
            assert yaml_values(block, annotation) and all(yaml_values(block, annotation)), (name, annotation)
        (runbook,) = yaml_values(block, "runbook")
        anchor = runbook.removeprefix("deploy/README.md#")
        assert any(heading.lower() == anchor for heading in headings), f"{name}: no runbook entry {runbook}"
    assert "critical" in yaml_values(alerts["JukiAuditWriteFailure"], "severity")


def test_the_rules_name_only_exported_metrics() -> None:
    text = RULES.read_text()
    recorded = set(rule_blocks(text, "record"))
    known = exported_names() | SYNTHETIC
    used: set[str] = set()
    for expr in yaml_values(text, "expr"):
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= known | recorded, f"unknown metric(s) {sorted(names - known - recorded)} in {expr!r}"
        used |= names
    for series in yaml_values(RULE_TESTS.read_text(), "series"):
        assert metric_names(series) <= known, f"the unit tests feed an unknown metric: {series}"
    assert {
        "juki_audit_write_failures_total",
        "juki_outbox_oldest_age_seconds",
        "juki_outbox_depth",
        "juki_relay_failures_total",
        "grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket",
        "juki_authorization_refusals_total",
        "juki_certificate_expiry_timestamp_seconds",
        "juki_lmdb_map_used_bytes",
        "juki_lmdb_map_size_bytes",
        "juki_tempstore_entries",
        "up",
    } <= used


# --- Grafana dashboard -------------------------------------------------------------------------------------
def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def test_the_dashboard_has_a_datasource_variable_and_job_and_instance_variables() -> None:
    dashboard = load_dashboard()
    assert 36 <= dashboard["schemaVersion"] <= 41 and dashboard["title"] and dashboard["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    known = exported_names() | SYNTHETIC
    for name in ("job", "instance"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"]["uid"] == "${DS_PROMETHEUS}"
        selector = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variables[name]["definition"])
        assert selector and selector.group(2) == name
        assert metric_names(selector.group(1)) <= known


def test_every_dashboard_panel_has_a_title_and_a_promql_target() -> None:
    panels = list(all_panels(load_dashboard()["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    known = exported_names() | SYNTHETIC
    for panel in panels:
        assert panel.get("title"), panel
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        targets = panel.get("targets", [])
        assert targets, f"{panel['title']}: no query"
        for target in targets:
            expr = target.get("expr", "")
            names = metric_names(expr)
            assert names, f"{panel['title']}: no PromQL metric in {expr!r}"
            # The dashboard works without the recording rules: raw metrics only.
            assert names <= known, f"{panel['title']}: unknown metric(s) {sorted(names - known)}"


def test_the_dashboard_shows_every_metric_the_servers_export() -> None:
    shown: set[str] = set()
    for panel in all_panels(load_dashboard()["panels"]):
        for target in panel.get("targets", []):
            shown |= metric_names(target["expr"])
    missing = sorted(family for family, names in metric_families().items() if not names & shown)
    assert not missing, f"metrics with no dashboard panel: {missing}"
