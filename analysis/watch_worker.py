r"""The one worker thread of ``watch(..., background=True)``: runs the records' chains in the order handed over.

    training thread                                  worker thread
    record(s): checks, snapshot (weights, x, h0,     ──► queue (at most ``pending`` jobs) ──► chain, norms,
               y, dL/dy), put ── blocks when full                                           write the record line

Torch ops release the GIL, so the chain runs on another core while the training thread goes on; it is the same
work (the CPU time does not shrink: it moves). The worker uses torch's intra-op setting as it finds it (the
process-wide ``torch.set_num_threads``; a new thread takes it on its first op): at one intra-op thread the
training thread and the worker hold one core each; with torch's default (every core) the two compete.

The queue is bounded: when ``pending`` jobs wait, ``submit`` blocks until the worker takes one (memory stays at
``pending`` + 1 snapshots), and ``blocked`` / ``blocked_s`` count how often and how long. A job that raises is
kept as one line (``WatchError``) raised by the next ``submit`` / ``flush`` / ``close``; the jobs after it still
run. The thread is a daemon: the owner drains it at close (and from ``atexit`` at interpreter exit); a kill -9
loses the jobs still queued, never a line already written.

``Snap`` is what a record hands over per module; ``frozen(rnn)`` the module with copies of its weights (taken
before opt.step() changes them in place), ``cloned`` the copies of its inputs, output and gradient.
"""
from __future__ import annotations

import copy
import queue
import threading
import time
from typing import NamedTuple

from torch import Tensor, nn


class WatchError(RuntimeError):
    """A background record failed; the message is one line naming the step and the cause."""


class RecordWorker:
    """One daemon thread running ``fn(*args)`` jobs in submission order from a queue of at most ``pending``."""

    def __init__(self, pending: int = 2, name: str = "gdlab-watch"):
        self._q: queue.Queue = queue.Queue(maxsize=pending)
        self.pending = pending
        self.blocked, self.blocked_s, self.done, self.failed = 0, 0.0, 0, 0
        self._error: WatchError | None = None  # the first failure not yet raised
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._q.get()
            try:
                if job is None:  # close(): nothing is queued after it
                    return
                what, fn, args = job
                try:
                    fn(*args)
                    self.done += 1
                except Exception as e:  # kept, raised in the training thread at its next call
                    self.failed += 1
                    msg = " ".join(str(e).split())[:240]
                    with self._lock:
                        if self._error is None:
                            self._error = WatchError(f"watch: the background {what} failed: {type(e).__name__}: "
                                                     f"{msg} (background=False runs it on the training thread, "
                                                     "with the full traceback)")
                            self._error.__cause__ = e
            finally:
                self._q.task_done()

    def raise_error(self) -> None:
        """Raise the first job failure not yet raised (once), as one line."""
        with self._lock:
            err, self._error = self._error, None
        if err is not None:
            raise err

    def submit(self, what: str, fn, *args) -> None:
        """Queue ``fn(*args)``; blocks while ``pending`` jobs wait (counted). Raises an earlier job's failure
        first (then this job is not queued)."""
        self.raise_error()
        if not self._thread.is_alive():
            raise WatchError("watch: the background worker has stopped (closed?)")
        try:
            self._q.put_nowait((what, fn, args))
        except queue.Full:  # the worker is behind: wait for it rather than pile up snapshots
            t0 = time.perf_counter()
            self._q.put((what, fn, args))
            self.blocked += 1
            self.blocked_s += time.perf_counter() - t0

    def wait(self) -> None:
        """Until every queued job has run (raises nothing)."""
        if self._thread.is_alive():
            self._q.join()

    def close(self) -> None:
        """Run what is queued, stop the thread (raises nothing; ``raise_error`` after it for a failure)."""
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()


# ---- the snapshot a record hands over ----------------------------------------------------------------------
class Snap(NamedTuple):
    """What the chain and the probe read of one module at one step: the module (its weights), x, h0 (torch's
    layouts), its output y and the gradient e = dL/dy it received. Live objects on the training thread; copies
    taken at ``record`` in the background mode (the optimizer changes the weights in place after it). ``net``: the
    engine's network with the weights (``_engine_net``) for a probe or a bidirectional module, else None."""
    rnn: nn.RNNBase
    x: Tensor
    hx: object
    out: Tensor | None
    grad: Tensor | None
    net: object = None


def frozen(rnn: nn.RNNBase) -> nn.RNNBase:
    """A shallow copy of ``rnn`` holding copies of its parameters (detached): what the chain and the probe read of
    it, at this step's weights, whatever opt.step() does to the original next. Never run forward (it shares the
    original's hooks); 0.2 ms less than copy.deepcopy on the word LM's 2x200 LSTM."""
    new = copy.copy(rnn)  # a new __dict__ with the same values
    new._parameters = {k: None if p is None else p.detach().clone() for k, p in rnn._parameters.items()}
    if hasattr(rnn, "_flat_weights_names"):  # what the fused forward reads: the copies too
        new._flat_weights = [new._parameters.get(n) for n in rnn._flat_weights_names]
    return new


def cloned(t):
    """A copy of a tensor, a tuple of tensors (h0, c0) or None."""
    if t is None:
        return None
    return tuple(v.clone() for v in t) if isinstance(t, tuple) else t.clone()
