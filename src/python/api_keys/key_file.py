"""The API key file: one key per line, `<key id> <sha256 of the key, 64 hex digits> [revoked]`.

    # who may call the gateway (GATEWAY_API_KEYS_FILE)
    shop-frontend 6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b
    old-batch-job d4735e3a265e16eee03f59718b9b5d03019c07d8b6c51f90da2b5ad6a3c6f1f2 revoked

Blank lines and lines starting with `#` are ignored. Ids and digests are unique. A key itself is
never written anywhere: the gateway hashes what a client presents and compares digests. Keys
are 32 random bytes (256 bits), so a plain SHA-256 is enough: nobody can guess one from its
digest, and a salt or a slow hash only protects low-entropy secrets such as passwords.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

KEY_ID_PATTERN = "[A-Za-z0-9][A-Za-z0-9._@-]{0,63}"
_KEY_ID = re.compile(KEY_ID_PATTERN + r"\Z")
_DIGEST = re.compile(r"[0-9a-fA-F]{64}\Z")
REVOKED = "revoked"
# A presented key is 1 to this many visible ASCII characters; anything else is refused unhashed.
MAX_KEY_LENGTH = 256
_KEY_CHARS = re.compile(r"[\x21-\x7e]{1,%d}\Z" % MAX_KEY_LENGTH)


class KeyFileError(ValueError):
    """A line of the key file that cannot be used; `str()` is `line N: problem`."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line = line
        self.problem = problem


@dataclass(frozen=True)
class KeyEntry:
    key_id: str
    digest: bytes  # SHA-256 of the key, 32 bytes
    revoked: bool = False

    def line(self) -> str:
        """The entry as a line of the file (without the newline)."""
        text = f"{self.key_id} {self.digest.hex()}"
        return f"{text} {REVOKED}" if self.revoked else text


def digest_of(key: str) -> bytes:
    """The SHA-256 of a key (its UTF-8 bytes; keys are ASCII)."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def is_key_shaped(text: str) -> bool:
    """Whether `text` could be a key: 1 to MAX_KEY_LENGTH visible ASCII characters."""
    return _KEY_CHARS.match(text) is not None


def new_key() -> str:
    """A new random key: 32 bytes from the OS's CSPRNG, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def valid_key_id(key_id: str) -> bool:
    return _KEY_ID.match(key_id) is not None


def parse(text: str) -> tuple[KeyEntry, ...]:
    """The entries of a key file's text; `KeyFileError` names the first bad line."""
    entries: list[KeyEntry] = []
    ids: dict[str, int] = {}
    digests: dict[bytes, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) not in (2, 3) or (len(fields) == 3 and fields[2] != REVOKED):
            shape = f"'<key id> <sha256 hex> [{REVOKED}]'"
            raise KeyFileError(number, f"expected {shape}, got {len(fields)} fields")
        key_id, digest_hex = fields[0], fields[1]
        if not valid_key_id(key_id):
            raise KeyFileError(number, f"key id {key_id[:70]!r} is not {KEY_ID_PATTERN}")
        if not _DIGEST.match(digest_hex):
            raise KeyFileError(
                number, f"the digest of {key_id!r} is not 64 hex digits (the file holds digests, never keys)"
            )
        digest = bytes.fromhex(digest_hex)
        if key_id in ids:
            raise KeyFileError(number, f"key id {key_id!r} is already on line {ids[key_id]}")
        if digest in digests:
            raise KeyFileError(number, f"the digest of {key_id!r} is already on line {digests[digest]}")
        ids[key_id], digests[digest] = number, number
        entries.append(KeyEntry(key_id, digest, revoked=len(fields) == 3))
    return tuple(entries)


def read(path: Path) -> tuple[KeyEntry, ...]:
    """The entries of the file at `path` (OSError, or KeyFileError naming the line)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise KeyFileError(data[: e.start].count(b"\n") + 1, "not UTF-8 text") from None
    return parse(text)
