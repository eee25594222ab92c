"""`juki backup create|verify|restore`: encrypted archives of a server's LMDB environment (SPEC §4.3).

Whoever runs `create` (the monitoring contractor's daily job) needs the key file only to seal; an archive
without its key reveals nothing. Each server has its own key, `var/keys/<server>.backup.key`, unless
`--key` names another, and it must live outside the data directory. `verify` and `restore` also open an
archive made before there was one key per server, with the shared `var/keys/backup.key`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from tqdm import tqdm

from server.backup import (
    SERVERS,
    BackupError,
    BackupKey,
    Progress,
    archive_key_id,
    create_backup,
    read_manifest,
    restore_backup,
    server_key_file,
    verify_backup,
)
from server.settings import Settings

_KEY_HELP = "backup key file [default: var/keys/<server>.backup.key under home]"
_SERVER_HELP = "whose archive: its key is var/keys/<server>.backup.key"


def _key_path(settings: Settings, server: str, key_file: Path | None) -> Path:
    if key_file is not None:
        return key_file
    return server_key_file(settings.path(settings.backup_key_file), server)


def _archive_key(settings: Settings, server: str, key_file: Path | None, archive: Path) -> bytes:
    """The key that opens `archive`: --key, else the server's own; an archive sealed with the shared key
    of older versions (backup.key) is opened with that one."""
    key = _load_key(_key_path(settings, server, key_file))
    if key_file is not None:
        return key
    shared = settings.path(settings.backup_key_file)
    try:
        sealed_with = archive_key_id(archive)
    except (BackupError, OSError):
        return key  # verify/restore report what is wrong with the archive
    if sealed_with != BackupKey(key).id and shared.is_file():
        older = BackupKey.load(shared)
        if older.id == sealed_with:
            return older.secret
    return key


def _load_key(path: Path) -> bytes:
    try:
        return BackupKey.load(path).secret
    except FileNotFoundError:
        raise click.ClickException(f"no backup key at {path} (give --key)") from None
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read the backup key {path}: {exc}") from None


def _source(settings: Settings, server: str) -> Path:
    if server == "fuhyo":
        return settings.path(settings.fuhyo_data_dir)  # never its temporary area
    return settings.path(settings.national_data_dir) if server == "national" else settings.data_path


@contextmanager
def _bar(desc: str, total: int | None) -> Iterator[Progress]:
    """A byte progress bar on stderr (shown on a terminal only)."""
    with tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, file=sys.stderr, disable=None
    ) as bar:
        yield bar.update
        if bar.total is not None and bar.n != bar.total:  # the estimate for `create` was an upper bound
            bar.total = bar.n
            bar.refresh()


def _estimate(data_file: Path) -> int | None:
    """An upper bound of the snapshot's size (the compacted copy leaves free pages out)."""
    return data_file.stat().st_size if data_file.is_file() else None


def _rate(size: int, seconds: float) -> str:
    return f"{size / 1e6:,.1f} MB in {seconds:.2f} s ({size / 1e6 / max(seconds, 1e-9):,.0f} MB/s)"


@click.group("backup")
def backup() -> None:
    """Encrypted backups of a server's LMDB environment: create, verify, restore."""


@backup.command("create")
@click.option("--server", type=click.Choice(SERVERS), default="prefecture", show_default=True)
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="archive to write"
)
@click.option("--key", "key_file", type=click.Path(dir_okay=False, path_type=Path), help=_KEY_HELP)
@click.pass_obj
def create_cmd(settings: Settings, server: str, out: Path, key_file: Path | None) -> None:
    """Snapshot the server's store (while it runs) into one sealed archive; makes the key if there is none."""
    source = _source(settings, server)
    key_path = _key_path(settings, server, key_file)
    if key_path.absolute().is_relative_to(source.absolute()):
        raise click.ClickException(f"the backup key {key_path} must live outside the data directory {source}")
    if out.exists():
        raise click.ClickException(f"{out} exists; name a new archive")
    try:
        key = BackupKey.load_or_create(key_path)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read or make the backup key {key_path}: {exc}") from None
    started = time.perf_counter()
    try:
        with _bar(f"backup {server}", _estimate(source / "data.mdb")) as progress:
            manifest = create_backup({server: source}, out, key.secret, progress=progress)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    seconds = time.perf_counter() - started
    click.echo(f"backup {out}: {server} {_rate(manifest.total_size, seconds)}")
    click.echo(f"  backup id {manifest.backup_id}   key id {key.id} ({key_path})")


@backup.command("verify")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--server", type=click.Choice(SERVERS), default="prefecture", show_default=True, help=_SERVER_HELP
)
@click.option("--key", "key_file", type=click.Path(dir_okay=False, path_type=Path), help=_KEY_HELP)
@click.pass_obj
def verify_cmd(settings: Settings, archive: Path, server: str, key_file: Path | None) -> None:
    """Check every chunk and checksum of an archive without writing anything (exit 1 when it fails)."""
    key = _archive_key(settings, server, key_file, archive)
    try:
        manifest = verify_backup(archive, key)
    except BackupError as exc:
        raise click.ClickException(f"{archive}: {exc}") from None
    except OSError as exc:
        raise click.ClickException(f"cannot read {archive}: {exc}") from None
    click.echo(
        f"OK {archive}: backup {manifest.backup_id} of {manifest.created_at:%Y-%m-%d %H:%M:%S} UTC "
        f"from {manifest.source_host}"
    )
    for env in manifest.environments:
        click.echo(f"  {env.name:<12} {env.size:>14,} bytes  {env.chunks:>6} chunks  sha256 {env.sha256}")


@backup.command("restore")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--to",
    "target",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="a new (or empty) directory",
)
@click.option(
    "--server", type=click.Choice(SERVERS), default="prefecture", show_default=True, help=_SERVER_HELP
)
@click.option("--key", "key_file", type=click.Path(dir_okay=False, path_type=Path), help=_KEY_HELP)
@click.pass_obj
def restore_cmd(settings: Settings, archive: Path, target: Path, server: str, key_file: Path | None) -> None:
    """Restore an archive into a new directory, one sub-directory (data.mdb) per environment, verified."""
    key = _archive_key(settings, server, key_file, archive)
    started = time.perf_counter()
    try:
        total = read_manifest(archive, key).total_size
        with _bar("restore", total) as progress:
            manifest = restore_backup(archive, key, target, progress=progress)
    except BackupError as exc:
        raise click.ClickException(f"{archive}: {exc}; nothing restored") from None
    except OSError as exc:
        raise click.ClickException(f"cannot restore {archive} into {target}: {exc}") from None
    seconds = time.perf_counter() - started
    click.echo(f"restored {archive} into {target}: {_rate(manifest.total_size, seconds)}")
    for env in manifest.environments:
        click.echo(f"  {target / env.name}   (data_dir for the {env.name} server)")
