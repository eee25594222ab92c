"""The 附票 server's temporary area (一時保存領域, SPEC §5.3): My Numbers held only until delivered.

`TempStore` keeps each answer sealed under its own key, held only in process memory, in an LMDB environment
of its own that no backup includes; `ack`, the end of the TTL or a restart erase an entry beyond recovery.
The store itself lives with the other LMDB code in server/storage/tempstore.py.
"""

from server.storage.tempstore import (
    CAUSES,
    DEFAULT_TTL,
    AlreadyHeld,
    NotHeld,
    TempStore,
    TempStoreError,
    WrongOwner,
    caller_slot,
    check_request_id,
)

__all__ = [
    "CAUSES",
    "DEFAULT_TTL",
    "AlreadyHeld",
    "NotHeld",
    "TempStore",
    "TempStoreError",
    "WrongOwner",
    "caller_slot",
    "check_request_id",
]
