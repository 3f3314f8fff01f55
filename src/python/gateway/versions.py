"""Which version of the model answers a request: pinned by the client, or chosen by the canary split.

TF Serving serves several versions of one model side by side and maps labels to them (its model
config's `model_version_policy { specific { … } }` and `version_labels`). A request names one in
TF Serving's ModelSpec, by `version` or by `version_label`; naming neither asks for the latest
AVAILABLE version. `ModelChoice` is that choice, as the gateway carries it from the route to the
Predict call (`ServingClient.predict_call`).

A client pins a version with `?version=N` or `?label=L` on any classification route, or with the
path forms of TF Serving's REST API (`/v1/models/{name}/versions/{v}:predict`,
`/labels/{l}:predict`) and of KServe's v2 protocol (`/v2/models/{name}/versions/{v}/infer`).
A request that pins nothing is split between two labels by `CanarySplit` when
`GATEWAY_CANARY_PERCENT` is above 0: the client's id (`GATEWAY_CLIENT_ID_HEADER`) hashed into a
bucket 0..99 when it sends one, so a client always lands on the same side and raising the percent
only moves clients from stable to canary; a random bucket otherwise.

The versions of a rollout are assumed to share one signature: the gateway discovers the model's
signature once, from the latest version, and sends every version requests shaped for it
(`ServingClient.predict` turns a version that refuses them into a clear error).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request

from gateway.errors import BadRequest

if TYPE_CHECKING:
    from gateway.settings import Rollout

# TF Serving's versions are int64; a version folder's number is at least 0.
MAX_VERSION = (1 << 63) - 1
MAX_LABEL_LENGTH = 64
# Labels are configuration words (stable, canary, v2-rc1); the bounded charset keeps client text
# out of log lines and answers.
LABEL_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
BUCKETS = 100
# On every classification answer: the version that answered, and the label the request went by.
MODEL_VERSION_HEADER = "X-Model-Version"
MODEL_LABEL_HEADER = "X-Model-Version-Label"


@dataclass(frozen=True)
class ModelChoice:
    """The ModelSpec's version choice: a version number, a version label, or neither (the latest)."""

    version: int | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        if self.version is not None and self.label is not None:
            raise ValueError("a ModelChoice is a version or a label, not both")

    @property
    def pinned(self) -> bool:
        return self.version is not None or self.label is not None

    def describe(self) -> str:
        """The choice in words, for messages: `version 2`, `label 'canary'`, `the latest version`."""
        if self.version is not None:
            return f"version {self.version}"
        if self.label is not None:
            return f"label {self.label!r}"
        return "the latest version"


LATEST = ModelChoice()


def not_served(choice: ModelChoice, model: str, versions: Sequence[int]) -> str:
    """The message of a 404 for a version or label TF Serving does not serve."""
    available = ", ".join(map(str, versions)) or "none"
    served = f"{choice.describe()} names no version of model {model!r} that is served"
    return f"{served}; versions available: {available}"


def parse_version(raw: str, where: str = "version") -> int:
    """A version number as a client writes it: plain ASCII digits (int() would take ' 3', '1_0' and
    other scripts' digits too)."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(MAX_VERSION)) or int(raw) > MAX_VERSION:
        raise BadRequest(f"{where}={raw[:24]!r} is not a version number (a whole number, 0 or more)")
    return int(raw)


def parse_label(raw: str, where: str = "label") -> str:
    if not is_label(raw):
        raise BadRequest(
            f"{where}={raw[:24]!r} is not a version label: up to {MAX_LABEL_LENGTH} letters, digits, "
            "'_', '.' or '-', starting with a letter or digit"
        )
    return raw


def is_label(text: str) -> bool:
    return text.isascii() and LABEL_PATTERN.fullmatch(text) is not None


def requested_choice(path_params: Mapping[str, str], query: Mapping[str, list[str]]) -> ModelChoice | None:
    """What the request itself asks for: a version or label in its path or query; None if nothing.

    `query` maps each parameter to all its values (a parameter given twice is refused)."""
    given: list[tuple[str, str, str]] = []  # (kind, text, where)
    for kind in ("version", "label"):
        if kind in path_params:
            given.append((kind, path_params[kind], f"the path's {kind}"))
        values = query.get(kind, [])
        if len(values) > 1:
            raise BadRequest(f"give {kind} once")
        if values:
            given.append((kind, values[0], kind))
    if not given:
        return None
    if len(given) > 1:
        raise BadRequest(
            "pin the model by a version or a label, once: not both, nor in the path and the query"
        )
    kind, text, where = given[0]
    if kind == "version":
        return ModelChoice(version=parse_version(text, where))
    return ModelChoice(label=parse_label(text, where))


def client_bucket(client_id: str) -> int:
    """The client's bucket, 0..99: the same for the same id in every gateway replica and restart
    (sha256, not Python's salted hash)."""
    digest = hashlib.sha256(client_id.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


class CanarySplit:
    """Sends `canary_percent` of the requests that pin nothing to the canary label, the rest to the
    stable one (`Rollout`); with 0 they pin nothing (TF Serving's latest version answers).

    `routed(label)` is told each split decision (a metric); the labels come from the settings, so
    its values are bounded."""

    def __init__(
        self,
        rollout: Rollout,
        routed: Callable[[str], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 <= rollout.canary_percent <= BUCKETS:
            raise ValueError(f"canary percent {rollout.canary_percent} is outside 0..{BUCKETS}")
        self.percent = rollout.canary_percent
        self.stable = ModelChoice(label=rollout.stable_label)
        self.canary = ModelChoice(label=rollout.canary_label)
        self.client_id_header = rollout.client_id_header
        self._routed = routed
        self._rng = rng or random.Random()  # noqa: S311 - a traffic split, not a secret

    @property
    def active(self) -> bool:
        return self.percent > 0

    def for_client(self, client_id: str | None) -> ModelChoice:
        """The label for one request: sticky per client id, random without one; LATEST when off."""
        if not self.active:
            return LATEST
        bucket = client_bucket(client_id) if client_id else self._rng.randrange(BUCKETS)
        choice = self.canary if bucket < self.percent else self.stable
        if self._routed is not None:
            assert choice.label is not None
            self._routed(choice.label)
        return choice

    def choose(self, request: Request) -> ModelChoice:
        """A request's choice: what its path or query pins, else the split's label for its client."""
        query = {kind: request.query_params.getlist(kind) for kind in ("version", "label")}
        pinned = requested_choice(request.path_params, query)
        if pinned is not None:
            return pinned
        return self.for_client(request.headers.get(self.client_id_header) or None)
