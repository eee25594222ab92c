"""SPEC §6.4 with an injected clock: removed persons and their history are erased 150 years after removal,
exactly those, and nothing else."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

from juki.v1 import prefecture_pb2, records_pb2

from server.app import open_store
from server.domain.retention import cutoff, erase_expired_persons
from server.domain.updates import apply_notice
from server.settings import Settings
from server.storage.residents import ResidentStore
from tests.notices import Municipality, fresh_resident

R = records_pb2
JST = dt.timezone(dt.timedelta(hours=9))


def apply(store: ResidentStore, notice: Any) -> None:
    store.apply_sync(
        lambda tx: apply_notice(tx, notice, caller_municipality="242012", now=lambda: dt.datetime.now(JST))
    )


def erase(store: ResidentStore, today: dt.date) -> Any:
    return asyncio.run(erase_expired_persons(store, today))


def person(store: ResidentStore, town: Municipality, *, removed_on: str | None, kana: str) -> tuple[str, str]:
    code, number = fresh_resident()
    born = town.notice(code, R.CHANGE_REASON_SHUSSEI, my_number=number, birth_date="1850-03-01",
                       change_date="1850-03-01", name_kana=kana)  # fmt: skip
    apply(store, born)
    moved = town.notice(code, R.CHANGE_REASON_TENKYO, my_number=number, birth_date="1850-03-01",
                        change_date="1860-01-01", name_kana=kana, address="三重県津市新町1番地")  # fmt: skip
    apply(store, moved)
    if removed_on:
        apply(store, town.notice(code, R.CHANGE_REASON_SHIBOU, change_date=removed_on))
    return code, number


def state(store: ResidentStore, code: str, number: str, kana: str) -> tuple[bool, int, str | None, int]:
    """(record held, history versions, who the My Number finds, name-index hits incl. removed)."""
    from server.domain.search import parse_query, run_search

    query = parse_query(
        prefecture_pb2.SearchRequest(name_kana=kana, birth_date="1850-03-01", include_removed=True),
        today=dt.date.today(),
    )
    with store.reader() as tx:
        hits = run_search(tx, query, None, page_size=10, scan_limit=1000, max_results=10).records
        return tx.get(code) is not None, len(tx.history(code)), tx.code_by_my_number(number), len(hits)


def test_cutoff_is_150_years_back() -> None:
    assert cutoff(dt.date(2026, 11, 26)) == "1876-11-26"
    assert cutoff(dt.date(2028, 2, 29)) == "1878-02-28"


def test_exactly_the_persons_past_retention_are_erased(tmp_path: Path) -> None:
    store = open_store(Settings(home=tmp_path))
    town = Municipality("242012")
    old = person(store, town, removed_on="1870-05-01", kana="ムカシ　ノヒト")
    later = person(store, town, removed_on="1900-01-01", kana="スコシ　アトノヒト")
    alive = person(store, town, removed_on=None, kana="イマモ　イキル")

    assert state(store, *old, "ムカシ　ノヒト") == (True, 2, old[0], 1)
    report = erase(store, dt.date(2026, 11, 26))
    assert (report.persons, report.history) == (1, 2)
    assert state(store, *old, "ムカシ　ノヒト") == (False, 0, None, 0)
    assert state(store, *later, "スコシ　アトノヒト") == (True, 2, later[0], 1)
    assert state(store, *alive, "イマモ　イキル") == (True, 1, alive[0], 1)

    assert erase(store, dt.date(2049, 12, 31)).persons == 0  # 1900-01-01 kept until 2050-01-01
    assert erase(store, dt.date(2050, 1, 2)).persons == 1
    assert state(store, *later, "スコシ　アトノヒト")[0] is False
    assert erase(store, dt.date(2300, 1, 1)).persons == 0  # the living are never erased
    assert state(store, *alive, "イマモ　イキル") == (True, 1, alive[0], 1)
    with store.reader() as tx:
        assert tx.counter(b"records_removed") == 0
        assert tx.count("records") == 1
    store.env.close()
