"""`./pants api-keys -- new ID`: make, revoke and list the gateway's API keys (GATEWAY_API_KEYS_FILE).

`new` prints the new key once on standard output (nothing keeps it: give it to the client now)
and adds its id and SHA-256 to the file; `revoke` marks a key revoked, which the gateway then
answers 403; `list` shows the ids. The file is rewritten whole through a temporary file and a
rename, so a gateway starting meanwhile reads either the old file or the new one.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from api_keys import key_file
from clothing_settings import SettingError, SettingsParser

FILE_VARIABLE = "GATEWAY_API_KEYS_FILE"
_HEADER = "# API keys of the clothing gateway: <key id> <sha256 of the key> [revoked] (api-keys --help)\n"


class KeyCommandError(Exception):
    """What the command cannot do, in one line."""


def parser() -> argparse.ArgumentParser:
    p = SettingsParser(
        prog="api-keys",
        description="Make, revoke and list the clothing gateway's API keys. The file holds each key's id "
        "and SHA-256, never the key; the gateway reads it at start (GATEWAY_API_KEYS_FILE).",
        epilog="examples:\n"
        "  api-keys --file keys.txt new shop-frontend   # prints the key once; keep it now\n"
        "  api-keys --file keys.txt revoke shop-frontend\n"
        "  api-keys --file keys.txt list\n"
        "The gateway reads the file when it starts: restart it after revoking a key.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--file",
        type=Path,
        default=None,
        help=f"the key file (default: ${FILE_VARIABLE}); `new` creates it if it does not exist",
    )
    commands = p.add_subparsers(dest="command", required=True, metavar="{new,revoke,list}")
    new = commands.add_parser("new", help="make a key for ID: print it once and add its digest to the file")
    new.add_argument("key_id", metavar="ID", help=f"who the key is for: {key_file.KEY_ID_PATTERN}")
    revoke = commands.add_parser("revoke", help="mark ID's key revoked (the gateway answers it 403)")
    revoke.add_argument("key_id", metavar="ID")
    commands.add_parser("list", help="the key ids in the file, and which are revoked")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(sys.argv[1:] if argv is None else list(argv))
        path = _key_file_path(args.file)
        if args.command == "new":
            key = add_key(path, args.key_id)
            print(key)
            _say(f"{args.key_id} added to {path}; the key above is shown only now")
        elif args.command == "revoke":
            revoke_key(path, args.key_id)
            _say(f"{args.key_id} revoked in {path}; restart the gateway to apply it")
        else:
            for entry in _entries(path):
                print(f"{entry.key_id}\t{'revoked' if entry.revoked else 'active'}")
    except (SettingError, KeyCommandError) as e:
        _say(str(e))
        return 2 if isinstance(e, SettingError) else 1
    return 0


def _say(line: str) -> None:
    print(f"api-keys: {line}", file=sys.stderr)


def add_key(path: Path, key_id: str) -> str:
    """A new key for `key_id`, its digest added to the file at `path` (created if missing)."""
    if not key_file.valid_key_id(key_id):
        raise KeyCommandError(f"key id {key_id[:70]!r} is not {key_file.KEY_ID_PATTERN}")
    text = _text(path, missing_ok=True)
    entries = _parse(path, text)
    if any(e.key_id == key_id for e in entries):
        raise KeyCommandError(f"{path} already has a key named {key_id!r} (revoke it, or choose another id)")
    key = key_file.new_key()
    line = key_file.KeyEntry(key_id, key_file.digest_of(key)).line()
    if not text:
        text = _HEADER
    elif not text.endswith("\n"):
        text += "\n"
    _write(path, f"{text}{line}\n")
    return key


def revoke_key(path: Path, key_id: str) -> None:
    """Mark `key_id`'s line revoked, keeping every other line (comments too) as it is."""
    text = _text(path, missing_ok=False)
    entries = {e.key_id: e for e in _parse(path, text)}
    entry = entries.get(key_id)
    if entry is None:
        raise KeyCommandError(f"{path} has no key named {key_id[:70]!r}")
    if entry.revoked:
        raise KeyCommandError(f"{key_id!r} is already revoked in {path}")
    lines = text.splitlines(keepends=True)
    for i, raw in enumerate(lines):
        fields = raw.split()
        if fields and fields[0] == key_id:
            ending = raw[len(raw.rstrip("\r\n")) :] or "\n"
            lines[i] = replace(entry, revoked=True).line() + ending
    _write(path, "".join(lines))


def _key_file_path(given: Path | None) -> Path:
    if given is not None:
        return given
    from_env = os.environ.get(FILE_VARIABLE, "").strip()
    if not from_env:
        raise KeyCommandError(f"say which key file: --file PATH, or set {FILE_VARIABLE}")
    return Path(from_env)


def _entries(path: Path) -> tuple[key_file.KeyEntry, ...]:
    return _parse(path, _text(path, missing_ok=False))


def _text(path: Path, *, missing_ok: bool) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if missing_ok:
            return ""
        raise KeyCommandError(f"{path} does not exist (`api-keys new ID` creates it)") from None
    except OSError as e:
        raise KeyCommandError(f"cannot read {path}: {e.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise KeyCommandError(f"{path} line {line}: not UTF-8 text") from None


def _parse(path: Path, text: str) -> tuple[key_file.KeyEntry, ...]:
    try:
        return key_file.parse(text)
    except key_file.KeyFileError as e:
        raise KeyCommandError(f"{path} {e}; fix it by hand first") from None


def _write(path: Path, text: str) -> None:
    """Replace the file's content at once: a temporary file beside it, then a rename."""
    folder = path.parent if str(path.parent) else Path(".")
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644  # the file holds digests, not keys: the gateway's user must be able to read it
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
    except OSError as e:
        raise KeyCommandError(f"cannot write beside {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except OSError as e:
        Path(temporary).unlink(missing_ok=True)
        raise KeyCommandError(f"cannot write {path}: {e.strerror}") from None


if __name__ == "__main__":
    sys.exit(main())
