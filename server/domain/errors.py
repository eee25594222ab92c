"""Errors of the domain, independent of gRPC; the service layer maps each kind to a status code.

Messages never carry personal data: they name fields and rules, not values.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class ErrorKind(enum.Enum):
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAVAILABLE = "UNAVAILABLE"
    UNIMPLEMENTED = "UNIMPLEMENTED"


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


@dataclass
class DomainError(Exception):
    """A request refused by a rule. `reason` is a stable machine-readable name (ErrorInfo.reason)."""

    kind: ErrorKind
    message: str
    reason: str = ""
    violations: list[FieldViolation] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message


MAX_VIOLATIONS = 20  # named per answer: its trailers stay far below gRPC's 8 KiB metadata limit
_NAMED_IN_MESSAGE = 10


class Violations:
    """Collects field violations so a caller learns every bad field at once (up to MAX_VIOLATIONS of them;
    the message counts the rest)."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []
        self.more = 0

    def add(self, field_path: str, description: str) -> None:
        """One violation per field: the first found (the schema's size and alphabet come first)."""
        if any(item.field == field_path for item in self.items):
            return
        if len(self.items) >= MAX_VIOLATIONS:
            self.more += 1
            return
        self.items.append(FieldViolation(field_path, description))

    def raise_if_any(self) -> None:
        if self.items:
            named = ", ".join(v.field for v in self.items[:_NAMED_IN_MESSAGE])
            rest = len(self.items) - _NAMED_IN_MESSAGE + self.more
            raise DomainError(
                ErrorKind.INVALID_ARGUMENT,
                f"{len(self.items) + self.more} invalid field(s): {named}"
                + (f" and {rest} more" if rest > 0 else ""),
                reason="INVALID_FIELDS",
                violations=list(self.items),
            )


def nobody() -> DomainError:
    """No resident matches what was asked (NOT_FOUND)."""
    return DomainError(ErrorKind.NOT_FOUND, "nobody matches the condition", reason="NO_RECORD")
