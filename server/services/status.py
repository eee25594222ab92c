"""Domain errors → gRPC status with google.rpc error details (BadRequest, ErrorInfo)."""

from __future__ import annotations

from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from server.domain.errors import DomainError, ErrorKind, FieldViolation

ERROR_DOMAIN = "juki.v1"
INTERNAL_MESSAGE = "internal error; the server log has the details under this call's error id"

CODES: dict[ErrorKind, grpc.StatusCode] = {
    ErrorKind.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    ErrorKind.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.UNIMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
}


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def status_metadata(
    code: grpc.StatusCode, message: str, err: DomainError | None = None
) -> tuple[tuple[str, bytes], ...]:
    """Trailing metadata carrying a google.rpc.Status with the error's details."""
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message)
    if err is not None:
        violations = err.violations
        if not violations and code == grpc.StatusCode.INVALID_ARGUMENT:  # never one without a BadRequest
            violations = [FieldViolation("request", err.message)]
        if violations:
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in violations
                ]
            )
            status.details.append(_pack(bad))
        if err.reason:
            info = error_details_pb2.ErrorInfo(reason=err.reason, domain=ERROR_DOMAIN, metadata=err.metadata)
            status.details.append(_pack(info))
    return (("grpc-status-details-bin", status.SerializeToString()),)


def internal_metadata(
    error_id: str, code: grpc.StatusCode = grpc.StatusCode.INTERNAL, message: str = INTERNAL_MESSAGE
) -> tuple[tuple[str, bytes], ...]:
    """An unexpected failure (or a failing store, UNAVAILABLE): a google.rpc.Status whose ErrorInfo carries
    only the error id (the server log line of the failure carries it too), never what failed or where."""
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message)
    info = error_details_pb2.ErrorInfo(reason=code.name, domain=ERROR_DOMAIN, metadata={"error_id": error_id})
    status.details.append(_pack(info))
    return (("grpc-status-details-bin", status.SerializeToString()),)


async def answer(context: grpc.aio.ServicerContext[object, object], err: DomainError) -> NoReturn:
    """Send `err` as the call's status (grpc's abort: the status goes out at once)."""
    code = CODES[err.kind]
    await context.abort(code, err.message, status_metadata(code, err.message, err))
    raise AssertionError("unreachable: context.abort raises")
