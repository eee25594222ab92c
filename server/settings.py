"""One typed settings object for every server: embedded defaults ← TOML file ← environment ← flags.

Environment variables are JUKI_<FIELD> (e.g. JUKI_PREFECTURE_PORT=6000). Relative paths are taken
relative to `home`, which defaults to the current directory.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass
class Settings:
    home: Path = field(default_factory=Path.cwd)  # the base of every relative path (juki --home)
    trust_domain: str = "juki.mie"  # of every identity: spiffe://<trust_domain>/<role>/<id>
    pki_dir: Path = Path("certs/dev")  # CA, revocation list, issuance log, <role>/<id>.crt/.key
    host: str = "127.0.0.1"  # the address every server listens on and clients connect to
    prefecture_port: int = 50051  # the prefectural server (gRPC, mTLS)
    prefecture_identity: str = "prefectural-server/24"  # its own certificate in pki_dir
    data_dir: Path = Path("var/data/prefecture")  # its LMDB store (the outbox included)
    keys_file: Path = Path("var/keys/prefecture.keys.json")  # outside the data directory (SPEC §4.3)
    policy_file: Path | None = None  # None: the policy shipped with the server
    map_size: int = 1 << 30  # LMDB map size to start with; a full map grows
    search_page_size: int = 20  # 4情報 search: results per page when the request gives none
    search_scan_limit: int = 50_000  # index entries one search request examines at most
    search_max_results: int = 1000  # results one search returns at most, all pages together
    apply_batch_size: int = 256  # notices of a stream applied per LMDB write transaction
    grace_seconds: float = 5.0  # SIGTERM: how long in-flight calls may finish
    max_message_bytes: int = 8 << 20  # the largest request message a server takes (gRPC receive cap)
    # calls per second / burst per caller, by role (server.services.rate_limits); "" turns them off
    rate_limits: str = (
        "agency=1000/2000,department=1000/2000,operator=100/200,municipal-cs=200/400,"
        "admin=20/100,auditor=20/100,monitor=100/200"
    )
    max_concurrent_streams: int = 100  # per connection (HTTP/2 SETTINGS): more calls wait client-side
    # a connection is closed (GOAWAY) after this long, so that every client reconnects now and then
    # (certificate checks at the handshake, SO_REUSEPORT balance); calls under way get the grace to finish
    max_connection_age: float = 1800.0
    max_connection_age_grace: float = 600.0
    crl_check_interval: float = 0.25  # seconds between checks of the CRL and certificate files
    prefecture_code: str = "24"  # 三重県
    # >1: that many prefectural server processes share the port (SO_REUSEPORT) to scale reads (SPEC §10)
    prefecture_workers: int = 1
    # the national server (J-LIS peer)
    national_port: int = 50053  # gRPC, mTLS
    national_identity: str = "national/jlis"
    national_data_dir: Path = Path("var/data/national")
    national_keys_file: Path = Path("var/keys/national.keys.json")
    national_fuhyo_data_dir: Path = Path("var/data/national-fuhyo")  # the 附票全国サーバ file (same keys)
    national_fuhyo_seed_count: int = 3_000  # synthetic 附票 records of other prefectures
    national_seed_count: int = 30_000  # synthetic residents of other prefectures
    national_timeout: float = 5.0  # each NotifyUpdates attempt of the outbox relay
    # a call made on behalf of a caller (附票 → prefecture, prefecture → national) gets the caller's remaining
    # deadline, capped at this (and this when the caller set none)
    link_timeout_max: float = 30.0
    # the 附票 server (SPEC §5.2) and its temporary area (§5.3)
    fuhyo_port: int = 50052  # gRPC, mTLS
    fuhyo_identity: str = "fuhyo-server/24"
    fuhyo_data_dir: Path = Path("var/data/fuhyo")
    fuhyo_keys_file: Path = Path(
        "var/keys/fuhyo.keys.json"
    )  # page tokens only: the 附票 server holds no My Number
    tempstore_dir: Path = Path("var/tempstore/fuhyo")  # its own directory, never backed up
    tempstore_ttl: float = 300.0  # long enough for a recipient to ask again, short enough to hold little
    fuhyo_audit_dir: Path = Path("var/audit/fuhyo")
    fuhyo_audit_keys_file: Path = Path("var/keys/fuhyo.audit.json")
    fuhyo_auditor_keys_file: Path = Path("var/keys/fuhyo.auditor.json")
    fuhyo_metrics_port: int = 50062
    # propagation (outbox relay, SPEC §6.2)
    relay_enabled: bool = True
    relay_batch_size: int = 500
    relay_batch_bytes: int = 4 << 20  # a NotifyUpdates request stays well below the peer's message cap
    relay_backoff_initial: float = 0.2
    relay_backoff_max: float = 10.0
    relay_idle_poll: float = 1.0
    # operators, bulk provision, audit (SPEC §4.4, §5.5)
    batch_threshold: int = 1000  # conditions a BatchProvide may carry without an admin's approval
    audit_dir: Path = Path("var/audit/prefecture")
    audit_keys_file: Path = Path("var/keys/prefecture.audit.json")  # the server's: signing + subject key
    auditor_keys_file: Path = Path("var/keys/prefecture.auditor.json")  # the auditor's: public + subject key
    national_audit_dir: Path = Path("var/audit/national")
    national_audit_keys_file: Path = Path("var/keys/national.audit.json")
    national_auditor_keys_file: Path = Path("var/keys/national.auditor.json")
    audit_checkpoint_interval: float = 5.0  # while entries arrive: the window a cut could go unwitnessed
    audit_heartbeat_interval: float = 60.0  # a checkpoint even when idle (the witness sees the log alive)
    # the witness (SPEC §4.4): the national server runs one; every server hands it each checkpoint
    witness_enabled: bool = True
    witness_dir: Path = Path("var/witness/national")
    witness_key_file: Path = Path("var/keys/national.witness.json")  # its cosigning key
    witness_public_file: Path = Path("var/keys/national.witness.pub.json")  # for the auditor
    audit_extra_witness: str = ""  # host:port of a second witness (`juki witness serve`), "" for none
    audit_flush_interval: float = 0.1  # the window in which written entries may not yet be on disk
    audit_retention_years: int = 7  # provision records (and the rest of the trail) kept this long
    retention_interval: float = 86_400.0  # how often removed persons past 150 years are erased
    # encrypted backups (SPEC §4.3); one key per server, <server>.backup.key beside backup_key_file (the
    # shared key of older archives, still read to open them), outside every data directory
    backup_enabled: bool = True
    backup_dir: Path = Path("var/backups")
    backup_key_file: Path = Path("var/keys/backup.key")
    backup_interval: float = 86_400.0  # daily
    backup_keep: int = 7
    # /metrics (HTTPS, monitor client certificate); a negative port disables it
    prefecture_metrics_port: int = 50061
    national_metrics_port: int = 50063
    metrics_plain_http: bool = False  # development only, loopback only

    def path(self, value: Path) -> Path:
        return value if value.is_absolute() else self.home / value

    @property
    def data_path(self) -> Path:
        return self.path(self.data_dir)

    @property
    def keys_path(self) -> Path:
        return self.path(self.keys_file)

    @property
    def pki_path(self) -> Path:
        return self.path(self.pki_dir)

    @property
    def policy_path(self) -> Path | None:
        return None if self.policy_file is None else self.path(self.policy_file)

    @property
    def prefecture_target(self) -> str:
        return f"{self.host}:{self.prefecture_port}"

    @property
    def fuhyo_target(self) -> str:
        return f"{self.host}:{self.fuhyo_port}"

    @property
    def national_target(self) -> str:
        return f"{self.host}:{self.national_port}"

    @classmethod
    def load(cls, config: Path | None = None, **overrides: Any) -> Settings:
        values: dict[str, Any] = {}
        if config is not None:
            with config.open("rb") as stream:
                values.update(tomllib.load(stream))
        for f in fields(cls):
            env = os.environ.get(f"JUKI_{f.name.upper()}")
            if env is not None:
                values[f.name] = env
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        return cls(**{k: _coerce(cls, k, v) for k, v in values.items()})

    def to_toml(self) -> str:
        lines = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, bool):
                lines.append(f"{f.name} = {str(value).lower()}")
            elif isinstance(value, int | float):
                lines.append(f"{f.name} = {value}")
            else:
                lines.append(f'{f.name} = "{value}"')
        return "\n".join(lines) + "\n"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _coerce(cls: type[Settings], name: str, value: Any) -> Any:
    default = next(f for f in fields(cls) if f.name == name)
    kind = default.type if isinstance(default.type, str) else str(default.type)
    if "Path" in kind:
        return None if value in (None, "") else Path(value)
    if kind == "bool":
        return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    return value
