"""`juki audit …`: the auditor's tools. They read the trail files with the auditor's keys (public key and
subject key) and never touch record data; `verify` checks the trail against the checkpoint the witness
cosigned (fetched over mTLS as the auditor, or from a file), `prove` writes proofs and `check-proof`
verifies one with the public key alone."""

from __future__ import annotations

import datetime as dt
import json
import sys
from dataclasses import asdict
from pathlib import Path

import click
import grpc
from juki.v1 import witness_pb2, witness_pb2_grpc

from clients.channel import secure_channel
from server.audit import AuditorKeys, monthly_report, query, verify
from server.audit.entries import jst_now, trail_directories
from server.audit.keys import load_public_key, load_witness_public
from server.audit.merkle import ProofError
from server.audit.note import NoteError
from server.audit.proof_check import check, consistency_json, inclusion_json
from server.audit.proofs import NoProof, consistency, inclusion
from server.audit.verify import UNWITNESSED, VerifyReport, Witnessed
from server.identity.pki import Pki
from server.services.witness import log_origin
from server.settings import Settings

SERVERS = ("prefecture", "fuhyo", "national")


def _defaults(settings: Settings, server: str) -> tuple[Path, Path]:
    if server == "national":
        return settings.national_audit_dir, settings.national_auditor_keys_file
    if server == "fuhyo":
        return settings.fuhyo_audit_dir, settings.fuhyo_auditor_keys_file
    return settings.audit_dir, settings.auditor_keys_file


def _where(
    settings: Settings, server: str, directory: Path | None, keys: Path | None
) -> tuple[Path, AuditorKeys]:
    default_dir, default_keys = _defaults(settings, server)
    return directory or settings.path(default_dir), AuditorKeys.load(keys or settings.path(default_keys))


_server = click.option("--server", type=click.Choice(SERVERS), default="prefecture", show_default=True)
_dir = click.option(
    "--dir", "directory", type=click.Path(file_okay=False, path_type=Path), help="trail directory"
)
_keys = click.option("--keys", type=click.Path(dir_okay=False, path_type=Path), help="auditor keys file")


@click.group()
def audit() -> None:
    """Verify, query and report on the audit trail (auditor)."""


def _fetch_witnessed(settings: Settings, identity: str, target: str, origin: str) -> str | None:
    channel = secure_channel(Pki(settings.pki_path), identity, target)
    try:
        stub = witness_pb2_grpc.WitnessStub(channel)  # type: ignore[no-untyped-call]
        reply = stub.GetCheckpoint(witness_pb2.GetCheckpointRequest(origin=origin), timeout=10)
        return str(reply.checkpoint)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise click.ClickException(f"the witness at {target} did not answer: {error.code().name}") from None
    finally:
        channel.close()


def _recent(report: VerifyReport, window: float) -> bool:
    """Whether every unwitnessed entry was written within the last `window` seconds (a live trail's tail)."""
    if not report.first_unwitnessed_time:
        return True
    since = dt.datetime.fromisoformat(report.first_unwitnessed_time)
    return (dt.datetime.now(dt.UTC) - since).total_seconds() <= window


@audit.command("verify")
@_server
@_dir
@_keys
@click.option("--json", "as_json", is_flag=True, help="print the full report as JSON")
@click.option(
    "--checkpoint",
    "checkpoint_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="a witnessed checkpoint (signed note) of the main trail to check against, instead of asking the "
    "witness (worker trails are then checked without one)",
)
@click.option("--no-witness", is_flag=True, help="check the directory alone (cannot see a cut tail)")
@click.option("--witness", "witness_target", help="host:port of the witness (default: the national server)")
@click.option(
    "--witness-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="the witness's public key file (default: witness_public_file of the settings)",
)
@click.option("--as", "identity", default="auditor/auditor-01", show_default=True, help="auditor certificate")
@click.option(
    "--live",
    is_flag=True,
    help="the server is running: entries after the witnessed checkpoint written within two checkpoint "
    "intervals are not a failure",
)
@click.pass_obj
def verify_cmd(
    settings: Settings,
    server: str,
    directory: Path | None,
    keys: Path | None,
    as_json: bool,
    checkpoint_file: Path | None,
    no_witness: bool,
    witness_target: str | None,
    witness_key: Path | None,
    identity: str,
    live: bool,
) -> None:
    """Check the hash chain, the signed checkpoints and the Merkle tree, and that the trail holds exactly
    what the witness cosigned (no entry missing, altered or added); exit 1 and name every problem found.

    The worker trails inside the directory (`w1`, …: one per extra server process on the port) are checked
    too, each as its own log against its own witnessed checkpoint.
    """
    where, auditor = _where(settings, server, directory, keys)
    trails = trail_directories(where)
    witness_file = witness_key or settings.path(settings.witness_public_file)
    cosigner = load_witness_public(witness_file) if witness_file.exists() else None
    if cosigner is None and not no_witness:
        click.echo(f"warning: no witness key ({witness_file}): the cosignature is not checked", err=True)
    reports: dict[Path, VerifyReport] = {}
    for d in trails:
        held: Witnessed | None = None
        if checkpoint_file is not None and d == where:
            held = Witnessed(checkpoint_file.read_text(encoding="utf-8"), *(cosigner or ("", None)))
        elif not no_witness and checkpoint_file is None:
            origin = log_origin(settings.trust_domain, server, 0 if d == where else int(d.name[1:]))
            note = _fetch_witnessed(settings, identity, witness_target or settings.national_target, origin)
            if note is None:
                raise click.ClickException(f"the witness holds no checkpoint of {origin}")
            held = Witnessed(note, *(cosigner or ("", None)))
        report = verify(d, auditor.public_key, witnessed=held)
        if live and _recent(report, 2 * settings.audit_checkpoint_interval + 1):
            report.problems = [p for p in report.problems if p.kind != UNWITNESSED]
            report.ok = not report.problems
        reports[d] = report
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
            witnessed = (
                f", witnessed size {report.witnessed_size}"
                if report.witnessed_size is not None
                else ", not witnessed"
            )
            click.echo(
                f"{state}: {worker + ': ' if worker else ''}{report.entries} entries in "
                f"{len(report.segments)} segment(s), last seq {report.last_seq}{witnessed}"
            )
    sys.exit(0 if all(r.ok for r in reports.values()) else 1)


@audit.group("prove")
def prove() -> None:
    """Write an inclusion or consistency proof (JSON, with the signed checkpoints) from the trail files."""


def _prove_dir(settings: Settings, server: str, directory: Path | None, trail: str) -> tuple[Path, str]:
    where = directory or settings.path(_defaults(settings, server)[0])
    worker = int(trail[1:]) if trail else 0
    return (where / trail if trail else where), log_origin(settings.trust_domain, server, worker)


_trail_opt = click.option("--trail", default="", help='a worker\'s trail ("w1", …); default the main one')
_out = click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="proof file (default stdout)"
)


def _emit(text: str, out: Path | None) -> None:
    if out is None:
        click.echo(text)
    else:
        out.write_text(text + "\n", encoding="utf-8")


@prove.command("inclusion")
@_server
@_dir
@_trail_opt
@click.option("--seq", type=click.IntRange(min=1), required=True, help="the entry")
@click.option(
    "--size", type=click.IntRange(min=0), default=0, help="a checkpointed size (default the newest)"
)
@_out
@click.pass_obj
def prove_inclusion(
    settings: Settings, server: str, directory: Path | None, trail: str, seq: int, size: int, out: Path | None
) -> None:
    """That entry SEQ is in the tree of a signed checkpoint."""
    where, origin = _prove_dir(settings, server, directory, trail)
    try:
        _emit(inclusion_json(origin, inclusion(where, seq, size)), out)
    except NoProof as e:
        raise click.ClickException(str(e)) from None


@prove.command("consistency")
@_server
@_dir
@_trail_opt
@click.option("--first", type=click.IntRange(min=0), required=True, help="the older checkpointed size")
@click.option("--second", type=click.IntRange(min=0), default=0, help="the newer one (default the newest)")
@_out
@click.pass_obj
def prove_consistency(
    settings: Settings,
    server: str,
    directory: Path | None,
    trail: str,
    first: int,
    second: int,
    out: Path | None,
) -> None:
    """That the tree of a newer checkpoint extends the tree of an older one."""
    where, origin = _prove_dir(settings, server, directory, trail)
    try:
        _emit(consistency_json(origin, consistency(where, first, second)), out)
    except NoProof as e:
        raise click.ClickException(str(e)) from None


@audit.command("check-proof")
@click.argument("proof", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="the log's public key: a PEM file, or an auditor key file",
)
@click.option(
    "--witness-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="also require the witness's cosignature on the checkpoints",
)
def check_proof(proof: Path, key: Path, witness_key: Path | None) -> None:
    """Verify a proof file with the public key alone (no trail): exit 1 and say why when it fails."""
    text = key.read_text(encoding="utf-8")
    public = AuditorKeys.load(key).public_key if text.lstrip().startswith("{") else load_public_key(key)
    witness = load_witness_public(witness_key) if witness_key else None
    try:
        click.echo("OK: " + check(proof.read_text(encoding="utf-8"), public, witness=witness))
    except (ProofError, NoteError) as e:
        click.echo(f"FAILED: {e}")
        sys.exit(1)


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
@click.option("--month", help="YYYY-MM (JST; default the current month)")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Markdown report (default stdout)"
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="also JSON here")
@click.pass_obj
def report_cmd(
    settings: Settings,
    server: str,
    directory: Path | None,
    month: str | None,
    out: Path | None,
    json_out: Path | None,
) -> None:
    """The monthly analysis: volume per caller, off-hours activity, searches without a following
    provision, refusals."""
    where = directory or settings.path(_defaults(settings, server)[0])
    report = monthly_report(where, month or jst_now().strftime("%Y-%m"))
    if out:
        out.write_text(report.to_markdown(), encoding="utf-8")
    else:
        click.echo(report.to_markdown())
    if json_out:
        json_out.write_text(report.to_json(), encoding="utf-8")
