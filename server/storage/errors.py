"""What a failing store looks like to the layers above it, which never import LMDB themselves."""

from __future__ import annotations

import lmdb

StorageError = lmdb.Error  # for the layers above, which catch it without importing LMDB


def is_storage_error(exc: BaseException) -> bool:
    """True for a failure of the store itself (I/O error, full map, corrupt or unreadable environment), as
    opposed to a bug: the call may be retried once the store recovers."""
    return isinstance(exc, lmdb.Error)
