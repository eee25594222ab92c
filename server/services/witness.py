"""The `Witness` servicer over `server.audit.witness.Witness`, and the servers' side: `Submitter` hands every
checkpoint of a trail to a witness, with the consistency proof from the size the witness holds.

A refusal is counted (`juki_audit_witness_refusals_total{reason}`, alert JukiAuditCheckpointRefused) and
logged, never skipped in silence; an unreachable witness is counted too and the next checkpoint is proven
from the same size, so nothing is lost while it is away.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.rpc import error_details_pb2, status_pb2
from juki.v1 import witness_pb2, witness_pb2_grpc

from server.audit.entries import WITNESSED_FILE
from server.audit.keys import AuditorKeys, WitnessKey
from server.audit.merkle import ProofError
from server.audit.note import Note, NoteError
from server.audit.proofs import consistency
from server.audit.witness import MALFORMED, OLD_SIZE_MISMATCH, ROLLBACK, LogKeys, Refused, Witness
from server.domain.errors import DomainError, ErrorKind, FieldViolation
from server.observability import metrics
from server.settings import Settings

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
_MAX_PROOF = 128


class WitnessService(witness_pb2_grpc.WitnessServicer):
    def __init__(self, witness: Witness) -> None:
        self._witness = witness

    async def AddCheckpoint(
        self, request: witness_pb2.AddCheckpointRequest, context: Context
    ) -> witness_pb2.AddCheckpointResponse:
        violations = []
        try:
            Note.parse(request.checkpoint).checkpoint()
        except NoteError as e:
            violations.append(FieldViolation("checkpoint", f"a C2SP signed checkpoint note: {e}"))
        proof = list(request.consistency_proof)
        if len(proof) > _MAX_PROOF or any(len(h) != 32 for h in proof):
            violations.append(FieldViolation("consistency_proof", "at most 128 hashes of 32 bytes"))
        if violations:
            raise DomainError(
                ErrorKind.INVALID_ARGUMENT, "invalid witness request", "INVALID_FIELDS", violations
            )
        try:
            signature = await asyncio.to_thread(
                self._witness.add_checkpoint, request.old_size, proof, request.checkpoint
            )
        except Refused as r:
            metadata = {"witness_size": str(r.size)} if r.size is not None else {}
            raise DomainError(ErrorKind.FAILED_PRECONDITION, str(r), r.reason, metadata=metadata) from None
        return witness_pb2.AddCheckpointResponse(cosignature=signature.line(), witness=self._witness.name)

    async def GetCheckpoint(
        self, request: witness_pb2.GetCheckpointRequest, context: Context
    ) -> witness_pb2.GetCheckpointResponse:
        held = self._witness.held(request.origin)
        if held is None:
            raise DomainError(
                ErrorKind.NOT_FOUND, "the witness holds no checkpoint of this log", "UNKNOWN_LOG"
            )
        return witness_pb2.GetCheckpointResponse(checkpoint=held.note, witness=self._witness.name)


# ---- the servers' side ------------------------------------------------------------------------------

Add = Callable[[int, Sequence[bytes], str], Awaitable[str]]  # (old size, proof, note) -> cosignature line


class Unreachable(Exception):
    """The witness did not answer (down, overloaded, a network problem)."""


def _refusal(err: grpc.aio.AioRpcError) -> Refused:
    reason, size = MALFORMED, None
    for key, value in err.trailing_metadata() or ():
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        status = status_pb2.Status()
        status.ParseFromString(value)
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                reason = info.reason or reason
                if info.metadata.get("witness_size", "").isdigit():
                    size = int(info.metadata["witness_size"])
    return Refused(reason, err.details() or reason, size)


def remote(
    channel: Callable[[], grpc.aio.Channel], *, timeout: float
) -> tuple[Add, Callable[[], Awaitable[None]]]:
    """An `Add` over gRPC to a witness (the channel opened at first use), and its closer."""
    opened: list[grpc.aio.Channel] = []

    async def add(old_size: int, proof: Sequence[bytes], note: str) -> str:
        if not opened:
            opened.append(channel())
        stub = witness_pb2_grpc.WitnessStub(opened[0])  # type: ignore[no-untyped-call]
        request = witness_pb2.AddCheckpointRequest(
            old_size=old_size, consistency_proof=proof, checkpoint=note
        )
        try:
            response = await stub.AddCheckpoint(request, timeout=timeout)
        except grpc.aio.AioRpcError as err:
            if err.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT):
                raise _refusal(err) from None
            raise Unreachable(err.code().name) from None
        return str(response.cosignature)

    async def close() -> None:
        for c in opened:
            await c.close()

    return add, close


def local(witness: Witness) -> Add:
    """An `Add` to a witness in this process (the national server's own trail)."""

    async def add(old_size: int, proof: Sequence[bytes], note: str) -> str:
        return (await asyncio.to_thread(witness.add_checkpoint, old_size, proof, note)).line()

    return add


class Submitter:
    """Hands a trail's checkpoints to one witness, in order; remembers the size the witness holds."""

    def __init__(
        self,
        directory: Path,
        add: Add,
        *,
        target: str = "witness",
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.directory = directory
        self._add = add
        self._target = target
        self._close = close
        self.witnessed: int | None = None  # unknown until the witness first answers
        self.refusals = 0
        self._pending: tuple[str, int] | None = None
        self._task: asyncio.Task[None] | None = None

    def offer(self, note: str, size: int) -> None:
        """Submit in the background (never holding up the flushes); a newer checkpoint offered while one
        is under way replaces any still waiting (the witness needs only the newest, proven from its own)."""
        self._pending = (note, size)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="audit-witness")

    async def _drain(self) -> None:
        while self._pending is not None:
            note, size = self._pending
            self._pending = None
            try:
                await self.submit(note, size)
            except Exception as exc:  # never quietly: logged and counted like any background failure
                metrics.BACKGROUND_FAILURES.labels(task="audit-witness").inc()
                log.error(
                    "background task failed; the next checkpoint is submitted again",
                    extra={"task": "audit-witness", "error": type(exc).__name__},
                )

    async def close(self) -> None:
        if self._close is not None:
            await self._close()

    async def drain(self, timeout: float) -> None:
        """Wait (at most `timeout` s) for what was offered to be submitted."""
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                log.warning(
                    "audit checkpoint still being submitted at shutdown", extra={"witness": self._target}
                )

    async def submit(self, note: str, size: int) -> bool:
        """True when the witness cosigned the checkpoint `note` (of `size` entries)."""
        for _ in range(2):  # a second try after learning the witness's size
            old = self.witnessed or 0
            try:
                if old > size:
                    raise Refused(ROLLBACK, f"the witness holds size {old}: this trail was rolled back", old)
                proof = (
                    (await asyncio.to_thread(consistency, self.directory, old, size)).hashes if old else []
                )
                cosignature = await self._add(old, proof, note)
            except Refused as r:
                if r.reason == OLD_SIZE_MISMATCH and r.size is not None and r.size != self.witnessed:
                    self.witnessed = r.size
                    continue
                self.refusals += 1
                metrics.AUDIT_WITNESS_REFUSALS.labels(reason=_bounded(r.reason)).inc()
                log.error(
                    "audit checkpoint refused by the witness",
                    extra={"reason": r.reason, "size": size, "witness_size": r.size, "witness": self._target},
                )
                return False
            except (Unreachable, LookupError, ProofError, OSError) as e:  # LookupError: NoProof, short files
                metrics.AUDIT_WITNESS_UNREACHABLE.inc()
                log.warning(
                    "audit checkpoint not witnessed (witness unreachable); the next one will be",
                    extra={"error": type(e).__name__, "size": size, "witness": self._target},
                )
                return False
            self.witnessed = size
            metrics.AUDIT_CHECKPOINTS_WITNESSED.inc()
            await asyncio.to_thread(_keep, self.directory, note, cosignature)
            return True
        return False


_REASONS = frozenset(
    {"UNKNOWN_LOG", "BAD_SIGNATURE", "OLD_SIZE_MISMATCH", "ROLLBACK", "INCONSISTENT", MALFORMED}
)


def _bounded(reason: str) -> str:
    return reason if reason in _REASONS else "OTHER"


def _keep(directory: Path, note: str, cosignature: str) -> None:
    tmp = directory / f".{WITNESSED_FILE}.tmp"
    tmp.write_text(note + cosignature, encoding="utf-8")
    os.replace(tmp, directory / WITNESSED_FILE)


# ---- names and keys of the deployment's logs ----------------------------------------------------------


def log_origin(trust_domain: str, server: str, worker: int = 0) -> str:
    """The origin (log name) of a server's trail: `<trust domain>/audit/<server>[/w<k>]`."""
    return f"{trust_domain}/audit/{server}" + (f"/w{worker}" if worker else "")


def deployment_logs(trust_domain: str, auditor_files: dict[str, Path]) -> LogKeys:
    """The witness's log keys: the origin of each server's trail (and its workers') -> the public key in
    that server's auditor key file (read when first asked, so a server started later is known too)."""
    cache: dict[str, Ed25519PublicKey] = {}

    def key(origin: str) -> Ed25519PublicKey | None:
        prefix = f"{trust_domain}/audit/"
        if not origin.startswith(prefix):
            return None
        server, _, worker = origin[len(prefix) :].partition("/")
        if server not in auditor_files or (worker and not (worker[:1] == "w" and worker[1:].isdigit())):
            return None
        if server not in cache:
            try:
                cache[server] = AuditorKeys.load(auditor_files[server]).public_key
            except (OSError, ValueError, KeyError):
                return None
        return cache[server]

    return key


def open_witness(settings: Settings, directory: Path | None = None, key_file: Path | None = None) -> Witness:
    """A witness of the deployment's logs (their keys from the auditor key files), its key created once:
    the national server's (the settings' files), or a standalone one's (`directory`, `key_file`)."""
    name = "national" if key_file is None else "standalone"
    key = WitnessKey.load_or_create(
        settings.path(key_file or settings.witness_key_file), f"{settings.trust_domain}/witness/{name}"
    )
    key.write_public(
        settings.path(settings.witness_public_file) if key_file is None else key_file.with_suffix(".pub.json")
    )
    files = {
        "prefecture": settings.auditor_keys_file,
        "fuhyo": settings.fuhyo_auditor_keys_file,
        "national": settings.national_auditor_keys_file,
    }
    logs = deployment_logs(settings.trust_domain, {k: settings.path(v) for k, v in files.items()})
    return Witness(key.name, key.signing_key, settings.path(directory or settings.witness_dir), logs)


def submitters(
    settings: Settings,
    directory: Path,
    channel: Callable[[str], grpc.aio.Channel],
    own: Witness | None = None,
) -> list[Submitter]:
    """Who the checkpoints of the trail in `directory` go to: the national server's witness (or `own`, in
    this process) and the extra witness of the settings; `channel(target)` opens an mTLS channel."""
    if not settings.witness_enabled:
        return []
    targets = [] if own is not None else [settings.national_target]
    if settings.audit_extra_witness:
        targets.append(settings.audit_extra_witness)
    out = [Submitter(directory, local(own), target="local")] if own is not None else []
    for target in targets:

        def opener(target: str = target) -> grpc.aio.Channel:
            return channel(target)

        add, close = remote(opener, timeout=settings.national_timeout)
        out.append(Submitter(directory, add, target=target, close=close))
    return out
