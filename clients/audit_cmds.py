"""`juki audit …`: the auditor's tools. They read the trail files with the auditor's keys (public key and
subject key) and never touch record data."""

from __future__ import annotations

import datetime as dt
import json
import sys
from dataclasses import asdict
from pathlib import Path

import click

from server.audit import AuditorKeys, monthly_report, query, verify
from server.audit.entries import trail_directories
from server.settings import Settings

SERVERS = ("prefecture", "national")


def _where(
    settings: Settings, server: str, directory: Path | None, keys: Path | None
) -> tuple[Path, AuditorKeys]:
    if server == "national":
        default_dir, default_keys = settings.national_audit_dir, settings.national_auditor_keys_file
    else:
        default_dir, default_keys = settings.audit_dir, settings.auditor_keys_file
    return directory or settings.path(default_dir), AuditorKeys.load(keys or settings.path(default_keys))


_server = click.option("--server", type=click.Choice(SERVERS), default="prefecture", show_default=True)
_dir = click.option(
    "--dir", "directory", type=click.Path(file_okay=False, path_type=Path), help="trail directory"
)
_keys = click.option("--keys", type=click.Path(dir_okay=False, path_type=Path), help="auditor keys file")


@click.group()
def audit() -> None:
    """Verify, query and report on the audit trail (auditor)."""


@audit.command("verify")
@_server
@_dir
@_keys
@click.option("--json", "as_json", is_flag=True, help="print the full report as JSON")
@click.pass_obj
def verify_cmd(
    settings: Settings, server: str, directory: Path | None, keys: Path | None, as_json: bool
) -> None:
    """Check the hash chain and the signed checkpoints; exit 1 and name every problem found.

    The worker trails inside the directory (`w1`, …: one per extra server process on the port) are checked
    too, each as its own chain.
    """
    where, auditor = _where(settings, server, directory, keys)
    trails = trail_directories(where)
    reports = {d: verify(d, auditor.public_key) for d in trails}
    if as_json:
        if len(trails) == 1:
            click.echo(reports[where].to_json())
        else:
            by_name = {("." if d == where else d.name): asdict(r) for d, r in reports.items()}
            click.echo(json.dumps(by_name, ensure_ascii=False, indent=2, sort_keys=True))
    else:
        for d, report in reports.items():
            worker = "" if d == where else d.name
            for p in report.problems:
                where_in = f"{worker}/{p.segment}" if worker else p.segment
                click.echo(f"{p.kind}: {where_in} line {p.line} seq {p.seq}: {p.detail}")
            state = "OK" if report.ok else "FAILED"
            click.echo(
                f"{state}: {worker + ': ' if worker else ''}{report.entries} entries in "
                f"{len(report.segments)} segment(s), last seq {report.last_seq}"
            )
    sys.exit(0 if all(r.ok for r in reports.values()) else 1)


def _moment(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    moment = dt.datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone(dt.timedelta(hours=9)))


@audit.command("query")
@_server
@_dir
@_keys
@click.option("--operator", help="operator id (spiffe://…/operator/<id>)")
@click.option("--caller", help="any caller's SPIFFE ID")
@click.option("--subject", help="a 住民票コード: hashed here with the auditor's key, never written anywhere")
@click.option("--purpose")
@click.option("--method", help="full method, e.g. /juki.v1.Prefecture/Lookup")
@click.option("--outcome", help="status name, e.g. PERMISSION_DENIED")
@click.option("--since", help="ISO date or time (JST when no offset)")
@click.option("--until", help="ISO date or time, exclusive")
@click.pass_obj
def query_cmd(
    settings: Settings,
    server: str,
    directory: Path | None,
    keys: Path | None,
    operator: str | None,
    caller: str | None,
    subject: str | None,
    purpose: str | None,
    method: str | None,
    outcome: str | None,
    since: str | None,
    until: str | None,
) -> None:
    """Entries matching every filter, as JSON lines, oldest first."""
    where, auditor = _where(settings, server, directory, keys)
    if operator:
        caller = f"spiffe://{settings.trust_domain}/operator/{operator}"
    hashed = auditor.subject_hash(subject) if subject else None
    found = query(
        where, caller=caller, subject=hashed, purpose=purpose, method=method, outcome=outcome,
        since=_moment(since), until=_moment(until),
    )  # fmt: skip
    count = 0
    for entry in found:
        click.echo(json.dumps(entry, ensure_ascii=False, sort_keys=True))
        count += 1
    click.echo(f"{count} entr{'y' if count == 1 else 'ies'}", err=True)


@audit.command("report")
@_server
@_dir
@click.option("--month", required=True, help="YYYY-MM")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Markdown report (default stdout)"
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="also JSON here")
@click.pass_obj
def report_cmd(
    settings: Settings,
    server: str,
    directory: Path | None,
    month: str,
    out: Path | None,
    json_out: Path | None,
) -> None:
    """The monthly analysis: volume per caller, off-hours activity, searches without a following
    provision, refusals."""
    where = directory or settings.path(
        settings.national_audit_dir if server == "national" else settings.audit_dir
    )
    report = monthly_report(where, month)
    if out:
        out.write_text(report.to_markdown(), encoding="utf-8")
    else:
        click.echo(report.to_markdown())
    if json_out:
        json_out.write_text(report.to_json(), encoding="utf-8")
