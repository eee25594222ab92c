"""Encrypted backups of the servers' LMDB environments (暗号化バックアップ, SPEC §4.3).

Whoever holds an archive but not the backup key learns nothing. `create_backup` snapshots running
environments into one sealed archive; `verify_backup` checks one without writing; `restore_backup` restores
into a new directory; `BackupKey` keeps the key (outside the data directory); `backup_schedule` is the
server's daily backup with rotation. Each server has its own backup key (`server_key_file`). The 附票
server's temporary area (`tempstore`, or a directory holding a `TEMPSTORE` marker) is never backed up.
"""

from server.backup.archive import (
    DEFAULT_CHUNK_SIZE,
    TEMPSTORE_DIR,
    TEMPSTORE_MARKER,
    BackupError,
    EnvironmentSnapshot,
    Manifest,
    Progress,
    archive_key_id,
    create_backup,
    is_tempstore,
    mark_tempstore,
    read_manifest,
    restore_backup,
    verify_backup,
)
from server.backup.keys import SERVERS, BackupKey, key_id, server_key_file
from server.backup.schedule import (
    archive_name,
    backup_schedule,
    create_backup_in_child,
    prune_archives,
    scheduled_archives,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "SERVERS",
    "TEMPSTORE_DIR",
    "TEMPSTORE_MARKER",
    "BackupError",
    "BackupKey",
    "EnvironmentSnapshot",
    "Manifest",
    "Progress",
    "archive_key_id",
    "archive_name",
    "backup_schedule",
    "create_backup",
    "create_backup_in_child",
    "is_tempstore",
    "key_id",
    "mark_tempstore",
    "prune_archives",
    "read_manifest",
    "restore_backup",
    "scheduled_archives",
    "server_key_file",
    "verify_backup",
]
