"""The key file's format: what the gateway and `api-keys` read and write."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from api_keys import key_file
from api_keys.key_file import KeyEntry, KeyFileError


def test_entries_comments_and_revoked_keys() -> None:
    a, b = hashlib.sha256(b"a").hexdigest(), hashlib.sha256(b"b").hexdigest().upper()
    text = f"# who may call\n\n  shop-frontend {a}  \nci.bot@example {b} revoked\n"
    assert key_file.parse(text) == (
        KeyEntry("shop-frontend", bytes.fromhex(a)),
        KeyEntry("ci.bot@example", bytes.fromhex(b), revoked=True),
    )


def test_an_entry_is_written_as_it_is_read() -> None:
    entry = KeyEntry("x", key_file.digest_of("k"), revoked=True)
    assert entry.line() == f"x {hashlib.sha256(b'k').hexdigest()} revoked"
    assert key_file.parse(entry.line()) == (entry,)


def test_new_keys_are_long_random_and_key_shaped() -> None:
    keys = {key_file.new_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(len(k) == 43 and key_file.is_key_shaped(k) for k in keys)


@pytest.mark.parametrize("text", ["", "a b", "x" * 257, "ключ", "tab\there"])
def test_what_is_not_key_shaped(text: str) -> None:
    assert not key_file.is_key_shaped(text)


def test_a_file_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "keys.txt"
    path.write_bytes(b"# fine\n# fine too\nalice \xff\xfe\n")
    with pytest.raises(KeyFileError) as caught:
        key_file.read(path)
    assert str(caught.value) == "line 3: not UTF-8 text"
