"""The commit thread: grouping, retries, stopping, and reporting back to the loop."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import anyio
import pytest

from collab.storage.sqlite import SQLiteLog, connect, read_doc
from collab.storage.writer import CommitThread


class Recorder:
    """A commit function that records its batches, failing the first ``failures`` calls."""

    def __init__(self, failures: int = 0, hold: threading.Event | None = None) -> None:
        self.failures = failures
        self.hold = hold
        self.calls: list[list[int]] = []
        self.reported: list[tuple[list[int], int, float]] = []

    def commit(self, batch: list[int]) -> int:
        self.calls.append(list(batch))
        if self.hold is not None:
            self.hold.wait(10)
        if self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("database is locked")
        return sum(batch)

    def done(self, batch: list[int], result: int, committed_at: float) -> None:
        self.reported.append((batch, result, committed_at))


async def wait_for(condition: object, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():  # type: ignore[operator]
            await anyio.sleep(0.005)


async def test_a_burst_is_one_commit_reported_on_the_loop() -> None:
    recorder = Recorder()
    thread = CommitThread(recorder.commit, recorder.done, delay=0.05, describe="test")
    thread.start()
    before = time.monotonic()
    for i in range(1, 6):
        thread.put(i)
    await wait_for(lambda: recorder.reported)
    thread.stop()
    await anyio.to_thread.run_sync(thread.join)
    assert recorder.calls == [[1, 2, 3, 4, 5]]
    (batch, result, committed_at) = recorder.reported[0]
    assert (batch, result) == ([1, 2, 3, 4, 5], 15)
    assert committed_at - before >= 0.05  # the burst waited for the delay


async def test_items_queued_during_a_commit_form_the_next_batch() -> None:
    hold = threading.Event()
    recorder = Recorder(hold=hold)
    thread = CommitThread(recorder.commit, recorder.done, delay=0, describe="test")
    thread.start()
    thread.put(1)
    await wait_for(lambda: recorder.calls)  # the first commit is running, held
    thread.put(2)
    thread.put(3)
    hold.set()
    await wait_for(lambda: len(recorder.reported) == 2)
    thread.stop()
    await anyio.to_thread.run_sync(thread.join)
    assert recorder.calls == [[1], [2, 3]]


async def test_a_failed_commit_is_retried_with_the_same_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder(failures=2)
    thread = CommitThread(
        recorder.commit,
        recorder.done,
        delay=0,
        describe="test.db",
        expected_errors=(sqlite3.DatabaseError,),
    )
    thread.start()
    thread.put(7)
    await wait_for(lambda: recorder.reported)
    thread.stop()
    await anyio.to_thread.run_sync(thread.join)
    assert recorder.calls == [[7], [7], [7]]
    assert [(b, r) for b, r, _ in recorder.reported] == [([7], 7)]
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2
    assert "test.db" in retries[0].getMessage()
    assert not retries[0].exc_info  # an expected error: no traceback


async def test_stop_commits_what_is_queued_without_waiting_for_the_delay() -> None:
    recorder = Recorder()
    thread = CommitThread(recorder.commit, recorder.done, delay=3600, describe="test")
    thread.start()
    thread.put(1)
    thread.put(2)
    await anyio.sleep(0.1)  # the thread is waiting out the delay by now
    thread.stop()
    with anyio.fail_after(10):
        await anyio.to_thread.run_sync(thread.join)
    assert recorder.calls == [[1, 2]]
    await wait_for(lambda: recorder.reported)


async def test_a_locked_database_delays_commits_but_loses_nothing(tmp_path: Path) -> None:
    """Another process holding the write lock: the log's commit waits, then lands."""
    path = tmp_path / "c.db"
    connect(path).conn.close()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    async with SQLiteLog(path, commit_delay=0) as log:
        log.append_nowait("doc", b"\x00\x00")
        await anyio.sleep(0.3)
        assert log.durable_ticket == 0  # still waiting for the lock
        other.execute("COMMIT")
        with anyio.fail_after(10):
            await log.flush()
        assert log.durable_ticket == 1
    other.close()
    assert read_doc(connect(path), "doc").updates == [b"\x00\x00"]
