"""The benchmark's cached dataset: a population larger than one bulk load (`SLICE`) is seeded in slices and
merged into one store that holds every resident once, with every index, the My Numbers sealed with the
dataset's keys, and the counters of all slices; the cache is then reused. Small slices, real LMDB."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from juki.v1 import prefecture_pb2

from bench import dataset as bench_dataset
from bench.dataset import LAYOUT, ensure_dataset, municipality_prefix
from server.app import open_store
from server.domain.search import PageTokens, Searcher
from server.settings import Settings
from server.storage.residents import INDEX_DATABASES


def test_a_population_larger_than_a_slice_is_merged_into_one_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench_dataset, "SLICE", 700)
    monkeypatch.setattr(bench_dataset, "_MERGE_BATCH", 500)  # several transactions per database
    base = Settings(home=tmp_path)
    built = ensure_dataset(base, tmp_path / "cache", 2000)
    assert not built.reused and built.residents == 2000 and built.seed_records_per_s > 0
    assert not (built.directory / "slices").exists()

    store = open_store(base.replace(home=built.directory, **LAYOUT))
    try:
        with store.reader() as tx:
            assert tx.count("records") == tx.count("my_numbers") == tx.count("my_number_index") == 2000
            for name in INDEX_DATABASES:
                assert tx.count(name) == 2000, name
            removed = tx.count("idx_removed")
            assert removed > 0 and tx.counter(b"records_removed") == removed
            assert tx.counter(b"history_counter") == tx.count("history") > 0
            samples = built.samples
            for code, number in zip(samples["codes"][:50], samples["my_numbers"][:50], strict=True):
                assert tx.code_by_my_number(number) == code  # index and sealed value under the same keys
                assert tx.my_number(code) == number
        kana, birth, sex, town = samples["searches"][0]
        searcher = Searcher(PageTokens(b"k" * 32))
        for criteria in ({"birth_date": birth}, {"sex": sex, "address_prefix": town}):
            request = prefecture_pb2.SearchRequest(name_kana=kana, purpose="identity-check", **criteria)
            found, _, _ = searcher.search(
                store, request, caller="operator/op-0001", today=dt.date(2026, 12, 1)
            )
            assert samples["codes"][0] in {r.resident_code for r in found}
    finally:
        store.env.close()

    again = ensure_dataset(base, tmp_path / "cache", 2000)
    assert again.reused and again.samples == built.samples


def test_the_municipality_prefix_of_an_address() -> None:
    assert municipality_prefix("三重県津市広明町13番地") == "三重県津市"
    assert municipality_prefix("三重県三重郡菰野町大字菰野1番地") == "三重県三重郡菰野町"
    assert municipality_prefix("三重県四日市市諏訪町1番5号").startswith("三重県四日市")


def test_search_work_counts_what_the_sample_queries_examine(tmp_path: Path) -> None:
    from bench.search_work import count, migrate

    built = ensure_dataset(Settings(home=tmp_path), tmp_path / "cache", 1500)
    assert migrate(built.directory) >= 0  # a current store: opened for writing, nothing to migrate
    work = count(built.directory, queries=200)
    assert work["residents"] == 1500
    for kind in ("kana + birth date", "kana + sex + 市町村"):
        figures = work[kind]
        assert figures["queries"] == 200 and figures["records_mean"] >= 1  # each sample finds its resident
        assert 1 <= figures["examined_mean"] <= figures["examined_p99"] <= figures["examined_max"]
        assert figures["name_scan_mean"] >= 1
