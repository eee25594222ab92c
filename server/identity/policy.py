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

from server.domain.codes import MIE_MUNICIPALITIES
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


# Rules of the [identities] table for roles whose ids are not listed one by one.
MUNICIPALITY = "municipality"  # a municipality code (市町村コード) of the deployment's prefecture
PREFECTURE = "prefecture"  # the deployment's prefecture code; on the national server any code 01–47
REGISTERED = "registered"  # any id the server's operator registry holds (none where there is no registry)
RULES = (MUNICIPALITY, PREFECTURE, REGISTERED)
ALL_PREFECTURES = frozenset(f"{n:02d}" for n in range(1, 48))


class KnownIdentities:
    """Which identities this deployment knows (policy.toml [identities]); any other gets UNAUTHENTICATED.

    Per role a set of ids or a rule; a role without an entry has no known identity.
    """

    def __init__(
        self,
        table: dict[str, frozenset[str] | str],
        prefecture_code: str,
        *,
        any_prefecture: bool,
        registry: bool,
    ) -> None:
        self._ids: dict[str, frozenset[str]] = {}
        self._any: set[str] = set()
        municipalities = frozenset(c for c in MIE_MUNICIPALITIES if c.startswith(prefecture_code))
        prefectures = ALL_PREFECTURES if any_prefecture else frozenset({prefecture_code})
        for role, entry in table.items():
            if entry == MUNICIPALITY:
                self._ids[role] = municipalities
            elif entry == REGISTERED:
                if registry:  # a server without an operator registry knows no such identity
                    self._any.add(role)
            elif entry == PREFECTURE:
                self._ids[role] = prefectures
            elif isinstance(entry, frozenset):
                self._ids[role] = entry

    def __call__(self, who: SpiffeId) -> bool:
        ids = self._ids.get(who.role)
        return who.id in ids if ids is not None else who.role in self._any


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


_DECISIONS_KEPT = 65_536  # a cache of decisions above this size starts again


class Policy:
    def __init__(
        self,
        purposes: dict[str, Purpose],
        grants: dict[tuple[str, str], list[Grant]],
        identities: dict[str, frozenset[str] | str] | None = None,
    ) -> None:
        self.purposes = purposes
        self._grants = grants
        self.identities = identities or {}
        # decisions already taken, for the purposes of this policy (what callers type is never a key)
        self._decisions: dict[tuple[str, str, str, str | None], str] = {}

    def known_identities(
        self, prefecture_code: str, *, any_prefecture: bool = False, registry: bool = True
    ) -> KnownIdentities:
        """The predicate of known identities for a server of the prefecture `prefecture_code`;
        `any_prefecture` for the national server, which hears from every prefecture's servers;
        `registry` False for a server without an operator registry (the national server): it knows no
        identity of a "registered" role."""
        return KnownIdentities(
            self.identities, prefecture_code, any_prefecture=any_prefecture, registry=registry
        )

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
        identities = _identities(raw)
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
            if grant.ids is not None and role != ANY:
                _check_known(identities, i, role, grant.ids)
        return cls(purposes, grants, identities)

    def check(self, caller: SpiffeId, method: str, purpose: str | None) -> str:
        """Decision.ALLOW, or the reason for refusing. `purpose` None: the method takes no purpose."""
        key = (caller.role, caller.id, method, purpose)
        decision = self._decisions.get(key)
        if decision is None:
            decision = self._decide(caller, method, purpose)
            if purpose is None or purpose in self.purposes:  # bounded: known purposes only
                if len(self._decisions) >= _DECISIONS_KEPT:
                    self._decisions.clear()
                self._decisions[key] = decision
        return decision

    def _decide(self, caller: SpiffeId, method: str, purpose: str | None) -> str:
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


def _identities(raw: dict[str, Any]) -> dict[str, frozenset[str] | str]:
    """The [identities] table: role → list of ids or one of RULES."""
    table = raw.get("identities")
    if not isinstance(table, dict):
        raise PolicyError("policy needs an [identities] table (which ids of each role are known)")
    out: dict[str, frozenset[str] | str] = {}
    for role, entry in table.items():
        if role not in ROLES:
            raise PolicyError(f"identities: unknown role {role!r}")
        if isinstance(entry, str) and entry in RULES:
            out[role] = entry
        elif isinstance(entry, list) and all(isinstance(x, str) for x in entry):
            try:
                out[role] = frozenset(SpiffeId("x", role, x).id for x in entry)
            except ValueError as exc:
                raise PolicyError(f"identities.{role}: {exc}") from exc
        else:
            raise PolicyError(f"identities.{role}: a list of ids or one of {', '.join(RULES)}")
    return out


def _check_known(table: dict[str, frozenset[str] | str], i: int, role: str, ids: frozenset[str]) -> None:
    """A grant may name only ids the [identities] table lists (a rule covers any id it admits)."""
    entry = table.get(role)
    if entry is None or (isinstance(entry, frozenset) and not ids <= entry):
        raise PolicyError(f"grant {i}: ids of {role!r} not listed in [identities]")
