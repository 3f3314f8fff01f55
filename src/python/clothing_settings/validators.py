"""Argument types for the command lines (`add_argument(type=…)`): each takes the flag's text and
returns its value, or raises `argparse.ArgumentTypeError` with the problem in words, which argparse
puts after the flag's name (`argument --port: port 70000 is outside 0-65535`)."""

from __future__ import annotations

import argparse
import math
from urllib.parse import urlsplit


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def positive_int(text: str) -> int:
    value = whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def port(text: str) -> int:
    """A TCP port, 0 included (0: the system picks a free one, or the program's "off")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is outside 0-65535")
    return value


def number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if math.isnan(value):
        raise argparse.ArgumentTypeError(f"not a number: {text!r}")
    return value


def non_negative_float(text: str) -> float:
    value = number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def seconds(text: str) -> float:
    """A duration in seconds: more than 0, finite."""
    value = number(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def flag_bool(text: str) -> bool:
    """true/false in the spellings TF Serving's flags take (also 1/0, yes/no)."""
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def host_port(text: str) -> str:
    """`host:port` of a server (a gRPC target), without spaces."""
    if ":" not in text or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT, e.g. localhost:8500")
    return text


def http_url(text: str) -> str:
    """An http:// or https:// URL naming a host (and a port within range, if any), without spaces."""
    problem = f"{text!r}: expected an http:// or https:// URL, e.g. http://localhost:4318"
    try:
        parts = urlsplit(text)
        _ = parts.port  # ValueError for a port out of range
    except ValueError:
        raise argparse.ArgumentTypeError(problem) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(problem)
    return text
