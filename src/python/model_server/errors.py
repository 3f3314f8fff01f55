"""The model server's errors: one tree, each class tied to one canonical status code.

    ServingError                 anything a request can fail with; `.code` is its canonical code
    ├── InvalidArgument          INVALID_ARGUMENT: the request does not fit the model's signature
    ├── NotFound                 NOT_FOUND: no such model, version or status
    ├── FailedPrecondition       FAILED_PRECONDITION: unknown signature; a model that cannot run
    ├── ResourceExhausted        RESOURCE_EXHAUSTED: too many requests in flight
    │   └── RequestTooLarge      a body above the configured size limit
    ├── Unavailable              UNAVAILABLE: shutting down; the batch queue is full
    ├── Unimplemented            UNIMPLEMENTED: an API or dtype this server does not offer
    └── Internal                 INTERNAL: the model misbehaved (a bug, never the client's fault)

Messages copy TF Serving's wording where TF Serving has a message for the case, so a client that
matches on them works against both. The transports map `Code` once each: `grpc_front` to gRPC
status codes, `rest_front` to HTTP statuses (TF Serving's table). Nothing here knows either.
Unusable flags, environment or config files are `clothing_settings.SettingError`, as in every
program of the project: the server does not start.
"""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    """tensorflow.error.Code, which has the same numbers as gRPC's status codes."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class ServingError(Exception):
    """Base class of every error a request can get; `code` says which kind."""

    code: Code = Code.UNKNOWN

    def __init__(self, message: str, code: Code | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            # TensorFlow runtime errors carry their own code (see saved_model.py).
            self.code = code


class InvalidArgument(ServingError):
    code = Code.INVALID_ARGUMENT


class NotFound(ServingError):
    code = Code.NOT_FOUND


class FailedPrecondition(ServingError):
    code = Code.FAILED_PRECONDITION


class ResourceExhausted(ServingError):
    code = Code.RESOURCE_EXHAUSTED


class RequestTooLarge(ResourceExhausted):
    """A request body above `--max_request_bytes` (REST answers 413 for it)."""


class Unavailable(ServingError):
    code = Code.UNAVAILABLE


class Unimplemented(ServingError):
    code = Code.UNIMPLEMENTED


class Internal(ServingError):
    code = Code.INTERNAL
