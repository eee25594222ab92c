"""The authorization policy (SPEC §4.2): roles → methods → purposes, default deny.

Loaded from one TOML file; compiled into a dictionary keyed by (role, full method name) so the check on
every call is a couple of lookups.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from server.identity.pki import ROLES, SpiffeId

PACKAGE = "juki.v1"
ANY = "*"


@dataclass(frozen=True)
class Purpose:
    """A purpose (事務) a caller may state; `my_number` says whether 番号法 lets it receive a My Number."""

    id: str
    title: str
    my_number: bool


@dataclass(frozen=True)
class Grant:
    ids: frozenset[str] | None  # None: every id of the role
    purposes: frozenset[str]
    my_number: bool = True  # False: answers under this grant never carry a My Number, whatever the purpose


class Decision:
    ALLOW = "allow"
    NO_METHOD = "method not granted to this role"
    NO_PURPOSE = "purpose not granted for this method"


class PolicyError(ValueError):
    """The policy file is malformed; the server refuses to start (or to reload) on it."""


def full_method(name: str) -> str:
    """'Prefecture.Lookup' → '/juki.v1.Prefecture/Lookup'; a name starting with '/' is already full."""
    if name.startswith("/"):
        return name
    service, _, method = name.partition(".")
    if not service or not method:
        raise PolicyError(f"method {name!r} is not <Service>.<Method>")
    return f"/{PACKAGE}.{service}/{method}"


class Policy:
    def __init__(self, purposes: dict[str, Purpose], grants: dict[tuple[str, str], list[Grant]]) -> None:
        self.purposes = purposes
        self._grants = grants

    @classmethod
    def load(cls, path: Path | None = None) -> Policy:
        if path is None:
            text = resources.files("server").joinpath("policy.toml").read_text(encoding="utf-8")
        else:
            text = path.read_text(encoding="utf-8")
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"policy is not valid TOML: {exc}") from exc
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Policy:
        purposes: dict[str, Purpose] = {}
        for pid, body in raw.get("purposes", {}).items():
            if not isinstance(body, dict) or not isinstance(body.get("my_number"), bool):
                raise PolicyError(f"purpose {pid!r} needs my_number = true|false")
            purposes[pid] = Purpose(pid, str(body.get("title", "")), body["my_number"])
        grants: dict[tuple[str, str], list[Grant]] = {}
        for i, body in enumerate(raw.get("grants", [])):
            role = body.get("role")
            if role != ANY and role not in ROLES:
                raise PolicyError(f"grant {i}: unknown role {role!r}")
            ids = body.get("ids")
            grant_purposes = frozenset(body.get("purposes", []))
            unknown = grant_purposes - purposes.keys()
            if unknown:
                raise PolicyError(f"grant {i}: unknown purposes {sorted(unknown)}")
            gives_number = body.get("my_number", True)
            if not isinstance(gives_number, bool):
                raise PolicyError(f"grant {i}: my_number = true|false")
            grant = Grant(None if ids in (None, [ANY]) else frozenset(ids), grant_purposes, gives_number)
            for method in body.get("methods", []):
                roles = ROLES if role == ANY else (role,)
                for r in roles:
                    grants.setdefault((r, full_method(method)), []).append(grant)
        return cls(purposes, grants)

    def check(self, caller: SpiffeId, method: str, purpose: str | None) -> str:
        """Decision.ALLOW, or the reason for refusing. `purpose` None: the method takes no purpose."""
        grants = self._grants.get((caller.role, method))
        if not grants:
            return Decision.NO_METHOD
        applicable = [g for g in grants if g.ids is None or caller.id in g.ids]
        if not applicable:
            return Decision.NO_METHOD
        if purpose is None:
            return Decision.ALLOW
        if any(purpose in g.purposes for g in applicable):
            return Decision.ALLOW
        return Decision.NO_PURPOSE

    def methods_of(self, role: str) -> set[str]:
        """Full names of the methods some grant gives the role."""
        return {method for (r, method) in self._grants if r == role}

    def purposes_of(self, role: str, method: str, ident: str | None = None) -> set[str]:
        """Purposes the role (or one id of it) may state for a method."""
        grants = self._grants.get((role, method), [])
        return {p for g in grants if g.ids is None or ident is None or ident in g.ids for p in g.purposes}

    def allows_my_number(self, purpose: str) -> bool:
        found = self.purposes.get(purpose)
        return found is not None and found.my_number

    def gives_my_number(self, caller: SpiffeId, method: str, purpose: str) -> bool:
        """Whether an answer to this caller may carry a My Number: the purpose allows it, and a grant of the
        method to the caller lists the purpose and does not exclude My Number (`my_number = false`)."""
        if not self.allows_my_number(purpose):
            return False
        return any(
            g.my_number and purpose in g.purposes
            for g in self._grants.get((caller.role, method), [])
            if g.ids is None or caller.id in g.ids
        )
