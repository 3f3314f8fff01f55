from __future__ import annotations

import sys
import time
from pathlib import Path

from reliability.memory import MemorySampler, MiB, trend
from testing_support.processes import RunningProcess, child_environment
from testing_support.stack import wait_for

# Says "ready", waits a second, then holds 200 MiB (every page touched: resident, not just
# reserved), says "allocated" and idles.
_GROWS = """
import time
print("ready", flush=True)
time.sleep(1.0)
held = []
for _ in range(8):
    block = bytearray(25 * 1024 * 1024)
    block[::4096] = b"x" * len(block[::4096])
    held.append(block)
    time.sleep(0.05)
print("allocated", flush=True)
time.sleep(60)
"""


def test_the_sampler_sees_a_process_grow_and_a_quiet_one_stay_flat(tmp_path: Path) -> None:
    grows = RunningProcess(
        "grows", [sys.executable, "-c", _GROWS], child_environment(), tmp_path / "grows.log"
    )
    quiet = RunningProcess(
        "quiet",
        [sys.executable, "-c", "import time; time.sleep(60)"],
        child_environment(),
        tmp_path / "quiet.log",
    )
    try:
        assert wait_for(lambda: "ready" in grows.log_tail(), 30)
        with MemorySampler({"grows": grows.rss, "quiet": quiet.rss}, interval=0.05) as sampler:
            assert wait_for(lambda: "allocated" in grows.log_tail(), 30)
            time.sleep(0.5)
        trends = sampler.trends()
    finally:
        grows.stop(grace=2)
        quiet.stop(grace=2)
    assert 190 <= trends["grows"].growth <= 215, trends["grows"]
    assert abs(trends["quiet"].growth) < 2, trends["quiet"]
    assert trends["grows"].peak >= trends["grows"].end


def test_one_spike_is_not_growth() -> None:
    samples = [100 * MiB] * 10 + [400 * MiB] + [100 * MiB] * 9
    t = trend("x", samples)
    assert t.growth == 0
    assert t.peak == 400


def test_a_process_that_exited_reads_zero_and_is_left_out(tmp_path: Path) -> None:
    done = RunningProcess("done", [sys.executable, "-c", "pass"], child_environment(), tmp_path / "done.log")
    assert done.wait(30) == 0
    assert done.rss() == 0
    assert trend("x", [50 * MiB, 0, 0]).end == 50
