"""Seeding (SPEC §8: 2 million residents at ≥ 50k records/s): the bulk load of an empty store writes exactly
what record-level writes (ApplyUpdate's) would, whether the population is generated here or in a second
process; a store that already holds residents is written record by record."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.seed import load as seed_load
from server.seed.load import load, load_each
from server.seed.population import Population, generate
from server.storage.lmdbenv import LmdbEnv
from server.storage.residents import DB_NAMES, ResidentStore, prepare_resident
from server.storage.sealing import DataKeys, MyNumberSealer

COUNT = 3000
# Enough 消除者 and 転居 for history entries, removal dates and both counters.
POPULATION = {"removed_per_mille": 60, "former_surname_per_mille": 100}

Contents = dict[str, list[tuple[bytes, bytes]]]


@pytest.fixture(scope="module")
def keys() -> DataKeys:
    """One set of keys for every store of a test, so that My Number index keys can be compared."""
    return DataKeys.generate()


@pytest.fixture
def stores(tmp_path: Path, keys: DataKeys) -> Iterator[list[ResidentStore]]:
    opened = [ResidentStore(LmdbEnv(tmp_path / f"s{i}", DB_NAMES), MyNumberSealer(keys)) for i in range(3)]
    yield opened
    for store in opened:
        store.env.close()


def contents(store: ResidentStore) -> Contents:
    """Every entry of every database, with sealed My Numbers opened (their nonces are random)."""
    result: Contents = {}
    with store.env.read() as txn:
        for name, db in store.env.dbs.items():
            rows = []
            for raw_key, raw_value in txn.cursor(db=db):
                key, value = bytes(raw_key), bytes(raw_value)
                if name == "my_numbers":
                    value = store.sealer.open(key.decode(), value).encode()
                elif name == "history":
                    size = int.from_bytes(value[:2], "big")
                    sealed, record = value[2 : 2 + size], value[2 + size :]
                    number = store.sealer.open(key[:11].decode(), sealed) if sealed else ""
                    value = number.encode() + b"|" + record
                rows.append((key, value))
            result[name] = rows
    return result


@pytest.mark.parametrize("share", [True, False], ids=["preparing-shared", "prepared-by-generator"])
def test_bulk_load_writes_what_record_level_writes_would(
    stores: list[ResidentStore], monkeypatch: pytest.MonkeyPatch, share: bool
) -> None:
    by_record, in_process, with_worker = stores
    load_each(by_record, generate(COUNT, 5, **POPULATION), batch=700)
    load(in_process, generate(COUNT, 5, **POPULATION), worker=False)
    monkeypatch.setattr(seed_load, "_BATCH", 250)  # several batches, whoever prepares them
    monkeypatch.setattr(seed_load, "_SHARE_PREPARING", share)
    report = load(with_worker, generate(COUNT, 5, **POPULATION), worker=True)

    assert report.records == COUNT
    expected = contents(by_record)
    assert len(expected["records"]) == COUNT
    assert len(expected["history"]) > 0.05 * COUNT
    assert len(expected["idx_removed"]) > 0.03 * COUNT
    assert {key for key, _ in expected["meta"]} >= {b"schema_version", b"history_counter", b"records_removed"}
    for name in ("my_numbers", "my_number_index", "idx_name", "idx_birth", "idx_address", "idx_municipality"):
        assert len(expected[name]) == COUNT, name
    assert contents(in_process) == expected
    assert contents(with_worker) == expected


def test_a_store_that_holds_residents_is_loaded_record_by_record(stores: list[ResidentStore]) -> None:
    by_record, mixed, _ = stores
    load_each(by_record, generate(500, 5, **POPULATION))
    load_each(by_record, generate(800, 5, **POPULATION))
    load(mixed, generate(500, 5, **POPULATION))  # bulk: the store is empty
    load(mixed, generate(800, 5, **POPULATION))  # 500 of them again, replaced like updates
    assert contents(mixed) == contents(by_record)


def test_bulk_load_refuses_a_repeated_resident_and_writes_nothing(stores: list[ResidentStore]) -> None:
    store = stores[0]
    entries = list(generate(50, 5))
    with pytest.raises(ValueError, match="distinct"):
        load(store, [*entries, entries[7]])
    assert all(not rows for name, rows in contents(store).items() if name != "meta")


def test_a_failing_generator_process_fails_the_load_and_writes_nothing(stores: list[ResidentStore]) -> None:
    store = stores[0]
    broken = Population(10, object(), 0.02, 0.03, None, 0)  # random.Random refuses such a seed
    with pytest.raises(RuntimeError, match="seed generator failed"):
        load(store, broken, worker=True)
    assert all(not rows for name, rows in contents(store).items() if name != "meta")


def test_a_population_sent_to_another_process_generates_the_same_entries() -> None:
    population = generate(300, 9, removed_per_mille=100)
    again = pickle.loads(pickle.dumps(population))
    assert [e.record.SerializeToString(deterministic=True) for e in again] == [
        e.record.SerializeToString(deterministic=True) for e in population
    ]


def test_a_resident_sent_serialized_is_prepared_as_if_generated_here() -> None:
    for entry in generate(400, 3, removed_per_mille=200):
        serialized = (
            entry.record.SerializeToString(),
            tuple(old.SerializeToString() for old in entry.history),
        )
        assert seed_load._prepare_serialized(*serialized) == prepare_resident(
            entry.record, entry.record.my_number, entry.history
        )
