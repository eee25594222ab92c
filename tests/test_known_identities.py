"""Known identities (policy.toml [identities]): which ids of each role a deployment serves at all.

The servers' behaviour (UNAUTHENTICATED on every method for anyone else) is in test_mtls_identity; here the
table itself: its rules, and the policy files it refuses to load.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from typing import Any

import pytest

from server.identity.pki import DEV_IDENTITIES, SpiffeId
from server.identity.policy import Policy, PolicyError


def shipped() -> dict[str, Any]:
    return tomllib.loads(resources.files("server").joinpath("policy.toml").read_text(encoding="utf-8"))


def who(name: str) -> SpiffeId:
    role, _, ident = name.partition("/")
    return SpiffeId("juki.mie", role, ident)


def test_every_dev_identity_is_known() -> None:
    known = Policy.load().known_identities("24")
    assert all(known(SpiffeId("juki.mie", role, ident)) for role, ident in DEV_IDENTITIES)


@pytest.mark.parametrize(
    ("name", "record_server", "national_server"),
    [
        ("agency/fire", False, False),
        ("department/police", False, False),
        ("municipal-cs/242012", True, True),
        ("municipal-cs/232017", False, False),  # 名古屋市: not of this prefecture
        ("operator/op-4711", True, True),  # the operator registry decides
        ("prefectural-server/24", True, True),
        ("prefectural-server/23", False, True),  # 愛知県's server: only the national server hears from it
        ("fuhyo-server/13", False, True),
        ("fuhyo-server/48", False, False),
        ("monitor/monitor-02", False, False),
        ("admin/bootstrap", False, False),
    ],
)
def test_rules_of_the_shipped_table(name: str, record_server: bool, national_server: bool) -> None:
    policy = Policy.load()
    assert policy.known_identities("24")(who(name)) is record_server
    assert policy.known_identities("24", any_prefecture=True)(who(name)) is national_server


def test_without_an_operator_registry_no_operator_is_known() -> None:
    known = Policy.load().known_identities("24", any_prefecture=True, registry=False)
    assert not known(who("operator/op-0001")) and known(who("prefectural-server/24"))


def test_a_policy_without_the_table_is_refused() -> None:
    raw = shipped()
    del raw["identities"]
    with pytest.raises(PolicyError, match="identities"):
        Policy.from_dict(raw)


@pytest.mark.parametrize(
    "table",
    [
        {"agency": "everyone"},  # no such rule
        {"mayor": ["x"]},  # no such role
        {"agency": ["../police"]},  # not an id
        {"agency": "registered", "department": 3},
    ],
)
def test_a_malformed_table_is_refused(table: dict[str, Any]) -> None:
    raw = shipped()
    raw["identities"] = {**raw["identities"], **table}
    with pytest.raises(PolicyError):
        Policy.from_dict(raw)


def test_a_grant_naming_an_unlisted_id_is_refused() -> None:
    raw = shipped()
    raw["identities"]["agency"] = ["police"]  # education is granted below, but no longer listed
    with pytest.raises(PolicyError, match="not listed"):
        Policy.from_dict(raw)
    del raw["identities"]["agency"]
    with pytest.raises(PolicyError, match="not listed"):
        Policy.from_dict(raw)
