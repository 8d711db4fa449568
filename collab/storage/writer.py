"""Group commit on a thread of its own.

The event loop hands items to :meth:`CommitThread.put` (a list append under a lock) and
carries on. The thread waits until the oldest queued item is ``delay`` seconds old, so a
burst shares one commit, takes everything queued, commits it, and reports back to the loop
with ``loop.call_soon_threadsafe``. A commit never waits for a busy event loop to schedule
it, and its time is taken on the thread, when it is durable, not when the loop gets round
to hearing about it.

A failed commit keeps its batch and is retried with backoff, forever: the items are
updates the server has accepted, and dropping them would lose them. (A backend's commit
function turns a failure retrying cannot fix, a constraint, into a per-room result of its
own, so what reaches the retry loop is a locked, full or failing disk.) The thread ends
after :meth:`CommitThread.stop` once everything queued is committed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

log = logging.getLogger("collab.storage")

#: Longest wait between retries of a failing commit, in seconds.
MAX_BACKOFF = 5.0


class CommitThread(Generic[Item, Result]):
    """Commit queued items in groups on a dedicated thread.

    :param commit: called on the thread with a batch, oldest first; what it returns goes
        to ``on_done``. If it raises, the same batch (plus nothing else) is retried.
    :param on_done: called on the event loop as ``on_done(batch, result, committed_at)``,
        ``committed_at`` being ``time.monotonic()`` on the thread right after the commit.
    :param delay: how long the oldest item may wait for others to join its batch.
    :param describe: names what is committed where, for the retry log lines.
    :param expected_errors: errors logged without a traceback (a locked or full disk);
        anything else is logged with one. All of them are retried.
    """

    def __init__(
        self,
        commit: Callable[[list[Item]], Result],
        on_done: Callable[[list[Item], Result, float], None],
        *,
        delay: float,
        describe: str,
        expected_errors: tuple[type[Exception], ...] = (),
    ) -> None:
        self._commit = commit
        self._on_done = on_done
        self.delay = delay
        self.describe = describe
        self.expected_errors = expected_errors
        self._cond = threading.Condition()
        self._queue: list[Item] = []
        self._oldest_at = 0.0  # monotonic time the oldest queued item was put
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="collab-commit", daemon=True)

    def start(self) -> None:
        """Start the thread; call from the event loop that ``on_done`` should run on."""
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    def put(self, item: Item) -> None:
        with self._cond:
            if not self._queue:
                self._oldest_at = time.monotonic()
                self._cond.notify()
            self._queue.append(item)

    def stop(self) -> None:
        """Commit what is queued without waiting for ``delay``, then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def join(self) -> None:
        """Wait (blocking) for the thread to end; see :meth:`stop`."""
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                # Let the burst gather; stop() cuts this short.
                while not self._stopping:
                    wait = self._oldest_at + self.delay - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                batch, self._queue = self._queue, []
            result = self._commit_with_retries(batch)
            committed_at = time.monotonic()
            assert self._loop is not None
            try:
                self._loop.call_soon_threadsafe(self._on_done, batch, result, committed_at)
            except RuntimeError:
                # The loop is closed: whoever waited for this commit is gone.
                pass

    def _commit_with_retries(self, batch: list[Item]) -> Result:
        backoff = 0.1
        while True:
            try:
                return self._commit(batch)
            except Exception as e:
                log.error(
                    "cannot commit %d updates to %s, retrying in %.1fs: %s",
                    len(batch),
                    self.describe,
                    backoff,
                    e,
                    exc_info=not isinstance(e, self.expected_errors),
                )
                time.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
