"""The work slots: at most N requests working, the others served in arrival order."""

from __future__ import annotations

import asyncio

import pytest

from gateway.classify import WorkSlots

pytestmark = pytest.mark.anyio


@pytest.fixture()
def anyio_backend() -> str:
    return "asyncio"


async def test_requests_beyond_the_slots_wait_and_are_served_in_arrival_order() -> None:
    slots = WorkSlots(2)
    working = 0
    most = 0
    started: list[int] = []
    release = asyncio.Event()

    async def request(n: int) -> None:
        nonlocal working, most
        async with slots:
            started.append(n)
            working += 1
            most = max(most, working)
            await release.wait()
            await asyncio.sleep(0)
            working -= 1

    tasks = []
    for n in range(8):
        tasks.append(asyncio.create_task(request(n)))
        await asyncio.sleep(0)  # arrive one after the other
    await asyncio.sleep(0.01)
    assert started == [0, 1], "only two work at once"
    assert sum(not t.done() for t in tasks) == 8, "the other six wait"
    release.set()
    await asyncio.gather(*tasks)
    assert most == 2
    assert started == list(range(8)), "first come, first served"


async def test_a_newcomer_cannot_overtake_a_waiting_request() -> None:
    slots = WorkSlots(1)
    order: list[str] = []
    hold = asyncio.Event()

    async def request(name: str, wait: asyncio.Event | None = None) -> None:
        async with slots:
            order.append(name)
            if wait is not None:
                await wait.wait()

    first = asyncio.create_task(request("first", hold))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(request("waiting"))
    await asyncio.sleep(0)
    hold.set()
    await first
    # The slot was handed to "waiting" when "first" left; "late" arrives before it has run.
    await request("late")
    await waiting
    assert order == ["first", "waiting", "late"]


async def test_a_cancelled_waiter_gives_up_its_place_and_loses_no_slot() -> None:
    slots = WorkSlots(1)
    hold = asyncio.Event()

    async def holder() -> None:
        async with slots:
            await hold.wait()

    h = asyncio.create_task(holder())
    await asyncio.sleep(0)
    gone = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    gone.cancel()  # the client hung up while queued
    with pytest.raises(asyncio.CancelledError):
        await gone
    hold.set()
    await h
    await _exactly_one_slot_free(slots)


async def _exactly_one_slot_free(slots: WorkSlots) -> None:
    async with asyncio.timeout(1):
        await slots.acquire()  # would wait forever had a slot leaked away
    second = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0.01)
    assert not second.done(), "a second slot appeared out of nowhere"
    slots.release()
    await second
    slots.release()


async def test_a_waiter_cancelled_as_it_is_handed_the_slot_passes_it_on() -> None:
    slots = WorkSlots(1)
    await slots.acquire()
    unlucky = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    patient = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    slots.release()  # hands the slot to `unlucky`…
    unlucky.cancel()  # …which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await unlucky
    async with asyncio.timeout(1):
        await patient  # the slot went on to the next in line
    slots.release()
    await _exactly_one_slot_free(slots)
