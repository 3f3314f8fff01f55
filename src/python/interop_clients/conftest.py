"""The local stack, started once for this package's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from interop_clients.stack import Stack, start_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running
