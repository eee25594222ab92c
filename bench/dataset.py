"""The benchmark's dataset: a seeded prefectural store (and a 附票 store of the same people), built once per
population size and reused from a cache directory; each run works on its own copy, so the cache stays as
built.

A cache entry is complete only once `dataset.json` exists (written last): an interrupted build is
rebuilt, never reused.

A bulk load holds about 4 KB a resident in memory until it writes (two processes), so a population larger
than `SLICE` is built in slices: each slice a bulk load of its own store (disjoint ranges of the same code
permutation, so no 住民票コード or 個人番号 repeats; the same keys), then the slices' databases merged in
key order into the dataset's store, appended a batch a transaction. Memory stays that of one slice.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import json
import random
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from juki.v1 import records_pb2
from tqdm import tqdm

from server.app import open_fuhyo_store, open_store
from server.seed.fuhyo import generate_fuhyo, load_fuhyo
from server.seed.load import load
from server.seed.population import generate
from server.settings import Settings
from server.storage.lmdbenv import LmdbEnv
from server.storage.residents import DB_NAMES, ResidentStore

FORMAT = 5  # bump when the stored layout, the generator or the samples change (5: idx_name_address)
SEED = 1
SAMPLE_KEYS = 20_000
_MUNICIPALITY = re.compile(r"^.+?[都道府県](.+?郡)?.+?[市町村]")
SLICE = 2_000_000  # residents bulk-loaded at once (a bulk load of 2M residents peaks near 8 GB)
_MERGE_BATCH = 200_000  # entries appended per transaction when slices are merged
FUHYO_MAX = 200_000  # the 附票 file is only driven through Provide; a smaller one keeps the build short

# Where a dataset's parts live, relative to its directory (and to a run's home once copied there).
LAYOUT = {
    "data_dir": Path("prefecture"),
    "keys_file": Path("keys/prefecture.keys.json"),
    "fuhyo_data_dir": Path("fuhyo"),
    "fuhyo_keys_file": Path("keys/fuhyo.keys.json"),
}


@dataclass(frozen=True)
class Dataset:
    directory: Path
    residents: int
    fuhyo_residents: int
    seed_records_per_s: float
    built_at: str
    reused: bool
    samples: dict[str, Any]

    def describe(self) -> dict[str, Any]:
        return {
            "residents": self.residents,
            "fuhyo_residents": self.fuhyo_residents,
            "seed_records_per_s": round(self.seed_records_per_s),
            "built_at": self.built_at,
            "reused_cache": self.reused,
        }


def _layout_settings(base: Settings, home: Path) -> Settings:
    return base.replace(home=home, **LAYOUT)


def municipality_prefix(address: str) -> str:
    """The 都道府県 + (郡) + 市町村 part of an address: the address prefix an operator commonly types."""
    found = _MUNICIPALITY.match(address)
    return found.group(0) if found else address


def _sample(settings: Settings, fuhyo_residents: int) -> dict[str, Any]:
    """Keys of residents on the register (removed persons would be asked of the national server): random
    codes, their My Numbers and 4情報 (kana, birth date, sex, 市町村 address prefix); 附票 codes."""
    store = open_store(settings)
    try:
        with store.env.read() as txn, txn.cursor(db=store.env.dbs["records"]) as cur:
            all_codes = [bytes(k).decode() for k in cur.iternext(keys=True, values=False)]
        candidates = random.Random(SEED).sample(all_codes, min(2 * SAMPLE_KEYS, len(all_codes)))
        del all_codes
        codes, numbers, searches = [], [], []
        with store.reader() as tx:
            for code in candidates:
                record = tx.get(code)
                if record is None or record.state != records_pb2.RECORD_STATE_ACTIVE:
                    continue
                codes.append(code)
                numbers.append(tx.my_number(code))
                info = record.four_info
                town = municipality_prefix(info.address)
                searches.append([info.name_kana, info.birth_date, info.sex, town])
                if len(codes) == SAMPLE_KEYS:
                    break
    finally:
        store.env.close()
    fuhyo_codes = [  # 国外転出者: the only persons the restricted link serves (SPEC §5.3)
        r.resident_code for r in generate_fuhyo(min(fuhyo_residents, 5_000), SEED) if r.state_kind == 2
    ]
    return {"codes": codes, "my_numbers": numbers, "searches": searches, "fuhyo_codes": fuhyo_codes}


def _build(base: Settings, directory: Path, residents: int, fuhyo_residents: int) -> dict[str, Any]:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    s = _layout_settings(base, directory)
    per_second = _seed(s, residents)
    fuhyo = open_fuhyo_store(s)
    try:
        print(f"seeding {fuhyo_residents:,} 附票 records", file=sys.stderr)
        load_fuhyo(fuhyo, generate_fuhyo(fuhyo_residents, SEED))
    finally:
        fuhyo.env.close()
    meta = {
        "format": FORMAT,
        "residents": residents,
        "fuhyo_residents": fuhyo_residents,
        "seed_records_per_s": per_second,
        "seed_slices": -(-residents // SLICE),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "samples": _sample(s, fuhyo_residents),
    }
    (directory / "dataset.json").write_text(json.dumps(meta))
    return meta


def _seed(s: Settings, residents: int) -> float:
    """Seed the dataset's store with `residents` people; records/s (slices: including their merge)."""
    started = time.perf_counter()
    with tqdm(total=residents, desc="seeding residents", unit="rec", unit_scale=True, file=sys.stderr) as bar:
        if residents <= SLICE:
            store = open_store(s)
            try:
                return load(store, generate(residents, SEED), progress=bar.update).per_second
            finally:
                store.env.close()
        parts = []
        for k, first in enumerate(range(0, residents, SLICE)):
            part = s.replace(data_dir=Path("slices") / str(k))  # the dataset's keys: sealed values carry over
            bar.set_postfix_str(f"slice {k + 1} of {-(-residents // SLICE)}")
            store = open_store(part)
            try:
                population = generate(
                    min(SLICE, residents - first), SEED + k, code_seed=SEED, first_index=first
                )
                load(store, population, progress=bar.update)
            finally:
                store.env.close()
            parts.append(part.data_path)
    _merge(parts, s)
    shutil.rmtree(s.path(Path("slices")))
    return residents / (time.perf_counter() - started)


def _merge(parts: list[Path], s: Settings) -> None:
    """Every database of the slice stores `parts`, merged in key order into the (new) store of `s`; the
    counters of `meta` added up."""
    target = open_store(s)
    sources = [LmdbEnv(path, DB_NAMES, readonly=True) for path in parts]
    try:
        target.env.reserve(int(1.2 * sum(source.map_use()[0] for source in sources)))
        with ExitStack() as stack:
            opened = [(stack.enter_context(source.read()), source.dbs) for source in sources]
            sizes = {
                name: sum(txn.stat(dbs[name])["entries"] for txn, dbs in opened)
                for name in DB_NAMES
                if name != "meta"
            }
            with tqdm(
                total=sum(sizes.values()),
                desc="merging slices",
                unit="entry",
                unit_scale=True,
                file=sys.stderr,
            ) as bar:
                for name in sizes:
                    runs = [txn.cursor(db=dbs[name]).iternext() for txn, dbs in opened]
                    merged: Iterator[tuple[bytes, bytes]] = heapq.merge(*runs)
                    while batch := list(itertools.islice(merged, _MERGE_BATCH)):
                        target.env.write_sync(functools.partial(_append, target, name, batch))
                        bar.update(len(batch))
            counters: dict[bytes, int] = {}
            for txn, dbs in opened:
                for key, value in txn.cursor(db=dbs["meta"]).iternext():
                    if key != b"schema_version":
                        counters[key] = counters.get(key, 0) + int.from_bytes(value, "big")
        target.apply_sync(functools.partial(_add_counters, counters))
    finally:
        for source in sources:
            source.close()
        target.env.close()


def _append(store: ResidentStore, name: str, batch: list[tuple[bytes, bytes]], txn: Any) -> None:
    with txn.cursor(db=store.env.dbs[name]) as cursor:
        consumed, added = cursor.putmulti(batch, append=True, overwrite=False)
    if added != consumed:
        raise ValueError(f"slices share {consumed - added} keys in {name}")


def _add_counters(counters: dict[bytes, int], tx: Any) -> None:
    for key, value in counters.items():
        tx.bump(key, value)


def ensure_dataset(base: Settings, cache_dir: Path, residents: int, *, rebuild: bool = False) -> Dataset:
    """The cached dataset of `residents` people, built first when absent, incomplete, stale or `rebuild`."""
    directory = cache_dir / f"residents-{residents}-seed{SEED}-v{FORMAT}"
    fuhyo_residents = min(residents, FUHYO_MAX)
    marker = directory / "dataset.json"
    reused = marker.exists() and not rebuild
    meta = json.loads(marker.read_text()) if reused else _build(base, directory, residents, fuhyo_residents)
    return _described(directory, meta, reused=reused)


def load_dataset(directory: Path) -> Dataset:
    """A dataset already built in `directory` (its dataset.json)."""
    return _described(directory, json.loads((directory / "dataset.json").read_text()), reused=True)


def _described(directory: Path, meta: dict[str, Any], *, reused: bool) -> Dataset:
    return Dataset(
        directory=directory,
        residents=meta["residents"],
        fuhyo_residents=meta["fuhyo_residents"],
        seed_records_per_s=meta["seed_records_per_s"],
        built_at=meta["built_at"],
        reused=reused,
        samples=meta["samples"],
    )


def copy_into(dataset: Dataset, base: Settings, home: Path, progress: Callable[[int], None]) -> Settings:
    """Copy the dataset's stores into `home` (a run's own copy); the settings that point at them."""
    for name in ("data_dir", "fuhyo_data_dir", "keys_file", "fuhyo_keys_file"):
        source, target = dataset.directory / LAYOUT[name], home / LAYOUT[name]
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            for item in source.iterdir():
                if item.name != "lock.mdb":
                    _copy_file(item, target / item.name, progress)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            _copy_file(source, target, progress)
    return _layout_settings(base, home)


def dataset_bytes(dataset: Dataset) -> int:
    return sum(p.stat().st_size for p in dataset.directory.rglob("*") if p.is_file() and p.name != "lock.mdb")


def _copy_file(source: Path, target: Path, progress: Callable[[int], None]) -> None:
    chunk = 8 << 20
    with source.open("rb") as src, target.open("wb") as dst:
        while block := src.read(chunk):
            dst.write(block)
            progress(len(block))
    shutil.copymode(source, target)
