"""Checkpoints in the C2SP formats: tlog-checkpoint bodies in signed notes, with witness cosignatures.

A checkpoint body is three lines: the log's origin, the tree size in decimal, the root hash in base64
(c2sp.org/tlog-checkpoint). The note (c2sp.org/signed-note) is the body, an empty line, and one line per
signature: `— <key name> <base64(key id || signature)>`. The log signs with Ed25519 (key id = the first 4
bytes of SHA-256(name || 0x0A || 0x01 || public key)); a witness cosigns with a timestamped Ed25519
cosignature (c2sp.org/tlog-cosignature: key id with 0x04, signature = 8-byte big-endian Unix time ||
Ed25519 over "cosignature/v1\\ntime <t>\\n" + body).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from server.audit.merkle import HASH_SIZE

ED25519 = 0x01
COSIGNATURE_V1 = 0x04
_DASH = "\u2014 "


class NoteError(ValueError):
    """A note that is malformed or whose signature is missing or does not verify."""


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(name: str, key: Ed25519PublicKey, alg: int = ED25519) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + _raw(key)).digest()[:4]


def verifier_key(name: str, key: Ed25519PublicKey, alg: int = ED25519) -> str:
    """The vkey string of signed-note (`<name>+<hex id>+<base64(alg || key)>`), for configuration."""
    return f"{name}+{key_id(name, key, alg).hex()}+{base64.b64encode(bytes([alg]) + _raw(key)).decode()}"


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def parse(cls, body: str) -> Checkpoint:
        lines = body.split("\n")
        if len(lines) < 4 or lines[-1] != "" or not lines[0] or not lines[1].isdigit():
            raise NoteError("not a checkpoint body (origin, size, root hash)")
        if lines[1] != str(int(lines[1])):
            raise NoteError("checkpoint size with leading zeros")
        try:
            root = base64.b64decode(lines[2], validate=True)
        except binascii.Error:
            raise NoteError("checkpoint root hash is not base64") from None
        if len(root) != HASH_SIZE:
            raise NoteError("checkpoint root hash is not 32 bytes")
        return cls(lines[0], int(lines[1]), root)


@dataclass(frozen=True)
class Signature:
    name: str
    id: bytes
    blob: bytes  # what follows the key id

    def line(self) -> str:
        return f"{_DASH}{self.name} {base64.b64encode(self.id + self.blob).decode()}\n"


@dataclass(frozen=True)
class Note:
    body: str
    signatures: tuple[Signature, ...]

    def text(self) -> str:
        return self.body + "\n" + "".join(s.line() for s in self.signatures)

    @classmethod
    def parse(cls, text: str) -> Note:
        body, sep, sigs = text.partition("\n\n")
        if not sep or not sigs.endswith("\n") or "\n\n" in sigs:
            raise NoteError("not a signed note (body, empty line, signature lines)")
        signatures = []
        for line in sigs[:-1].split("\n"):
            if not line.startswith(_DASH):
                raise NoteError("a signature line must start with an em dash")
            name, _, b64 = line[len(_DASH) :].rpartition(" ")
            try:
                raw = base64.b64decode(b64, validate=True)
            except binascii.Error:
                raise NoteError("a signature is not base64") from None
            if not name or " " in name or len(raw) < 5:
                raise NoteError("malformed signature line")
            signatures.append(Signature(name, raw[:4], raw[4:]))
        return cls(body + "\n", tuple(signatures))

    def checkpoint(self) -> Checkpoint:
        return Checkpoint.parse(self.body)

    def with_signature(self, signature: Signature) -> Note:
        others = tuple(s for s in self.signatures if (s.name, s.id) != (signature.name, signature.id))
        return Note(self.body, (*others, signature))


def sign(checkpoint: Checkpoint, name: str, key: Ed25519PrivateKey) -> Note:
    """The checkpoint as a note signed by the log's key `name`."""
    body = checkpoint.body()
    return Note(body, (Signature(name, key_id(name, key.public_key()), key.sign(body.encode())),))


def verify_note(text: str, name: str, key: Ed25519PublicKey) -> tuple[Note, Checkpoint]:
    """The note and its checkpoint when `text` carries a valid signature of key `name`; NoteError else."""
    note = Note.parse(text)
    kid = key_id(name, key)
    for s in note.signatures:
        if s.name == name and s.id == kid:
            try:
                key.verify(s.blob, note.body.encode())
            except InvalidSignature:
                raise NoteError(f"the signature of {name} does not verify (forged or edited)") from None
            return note, note.checkpoint()
    raise NoteError(f"the note has no signature of {name}")


def _cosigned_message(body: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n".encode() + body.encode()


def cosign(note: Note, name: str, key: Ed25519PrivateKey, timestamp: int) -> Signature:
    """A witness's cosignature of the note's checkpoint at `timestamp` (Unix seconds)."""
    sig = key.sign(_cosigned_message(note.body, timestamp))
    return Signature(name, key_id(name, key.public_key(), COSIGNATURE_V1), struct.pack(">Q", timestamp) + sig)


def verify_cosignature(note: Note, name: str, key: Ed25519PublicKey) -> int:
    """The timestamp of a valid cosignature of witness `name` on the note; NoteError when there is none."""
    kid = key_id(name, key, COSIGNATURE_V1)
    for s in note.signatures:
        if s.name == name and s.id == kid and len(s.blob) == 8 + 64:
            (timestamp,) = struct.unpack(">Q", s.blob[:8])
            try:
                key.verify(s.blob[8:], _cosigned_message(note.body, timestamp))
            except InvalidSignature:
                raise NoteError(f"the cosignature of {name} does not verify") from None
            return int(timestamp)
    raise NoteError(f"the checkpoint is not cosigned by witness {name}")
