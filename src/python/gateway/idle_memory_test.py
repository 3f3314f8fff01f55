"""Freed memory goes back once per quiet period, never while requests are coming."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway.classify import ConcurrencyLimit
from gateway.idle_memory import give_back_when_idle

pytestmark = pytest.mark.anyio

TICK = 0.05


@pytest.fixture()
def anyio_backend() -> str:
    return "asyncio"


async def _watch(limit: ConcurrencyLimit, pool: ThreadPoolExecutor, calls: list[float]) -> asyncio.Task[None]:
    loop = asyncio.get_running_loop()
    return asyncio.create_task(give_back_when_idle(limit, pool, TICK, lambda: calls.append(loop.time())))


async def test_nothing_is_given_back_before_any_request() -> None:
    limit, calls = ConcurrencyLimit(4), list[float]()
    with ThreadPoolExecutor(1) as pool:
        task = await _watch(limit, pool, calls)
        await asyncio.sleep(TICK * 5)
        task.cancel()
    assert calls == []


async def test_given_back_once_after_a_burst_then_again_after_the_next() -> None:
    limit, calls = ConcurrencyLimit(4), list[float]()
    with ThreadPoolExecutor(1) as pool:
        task = await _watch(limit, pool, calls)
        with limit:
            await asyncio.sleep(TICK * 3)  # a long request: busy all along
        assert calls == []
        await asyncio.sleep(TICK * 6)  # quiet: given back once, not on every tick
        assert len(calls) == 1
        with limit:
            pass
        await asyncio.sleep(TICK * 6)
        task.cancel()
    assert len(calls) == 2


async def test_not_given_back_while_requests_keep_coming() -> None:
    limit, calls = ConcurrencyLimit(4), list[float]()
    with ThreadPoolExecutor(1) as pool:
        task = await _watch(limit, pool, calls)
        for _ in range(12):  # a short request every half tick: never a quiet tick
            with limit:
                pass
            await asyncio.sleep(TICK / 2)
        assert calls == []
        task.cancel()
