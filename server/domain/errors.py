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


class Violations:
    """Collects field violations so a caller learns every bad field at once."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field_path: str, description: str) -> None:
        """One violation per field: the first found (the schema's size and alphabet come first)."""
        if all(item.field != field_path for item in self.items):
            self.items.append(FieldViolation(field_path, description))

    def raise_if_any(self) -> None:
        if self.items:
            raise DomainError(
                ErrorKind.INVALID_ARGUMENT,
                f"{len(self.items)} invalid field(s): " + ", ".join(v.field for v in self.items),
                reason="INVALID_FIELDS",
                violations=list(self.items),
            )


def nobody() -> DomainError:
    """No resident matches what was asked (NOT_FOUND)."""
    return DomainError(ErrorKind.NOT_FOUND, "nobody matches the condition", reason="NO_RECORD")
