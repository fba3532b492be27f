r"""run_cells (behind analysis.experiment.run_comparison): the cells of a comparison analysed side by side, one worker thread per cell where cores allow.

Cells are independent analyses of the same data. With ``w`` workers (``w = min(cells, threads // intra-op
threads)``, threads = ``config.threads`` or every core) each cell runs in its own thread; torch releases the GIL
inside each op, so on 2 cores with one intra-op thread two cells run at once. Each cell keeps ``threads`` for its
own SVD pool (single-core LAPACK calls in plain threads, no OpenMP spinning): when one worker finishes early
(an RNN next to an LSTM) the other's SVDs use the freed core. With one worker (intra-op threads already use every core) the cells run one after the other.

Progress from the workers is gathered and reported by the CALLING thread (a front end draws it there: Streamlit
allows page updates only from the script's thread), about ten times a second: the mean fraction over the cells and
what the least advanced one is computing. If the caller's callback raises (``Cancelled``, or Streamlit's stop on a
rerun), every worker stops at its next progress call and the exception propagates; a worker's error stops the
others the same way. Each cell's result is bit-identical to its solo ``run_experiment`` (no shared state).
"""
from __future__ import annotations

import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import torch

from rnn_models.cells import cell_type

from .engine import _check_only, choose
from .progress import Cancelled, Progress, Reporter, reporter, resolve_threads

POLL_S = 0.1
WAITING = "waiting for a worker"


def cell_workers(config, n_cells: int) -> int:
    """Worker threads for a comparison of ``n_cells`` cells (each cell's spectra pool keeps ``config.threads``)."""
    return max(1, min(n_cells, resolve_threads(config.threads) // max(1, torch.get_num_threads())))


def run_cells(config, run_experiment, *, progress: Progress | Reporter | None = None, only: str | None = None,
              views=None) -> dict:
    """``run_experiment(config.for_cell(cell), progress=, only=, views=)`` for each cell of ``config.cells`` (same
    data, seed and settings), keyed by cell (``analysis.experiment.run_comparison`` passes its run_experiment).

    ``progress``, ``only`` and ``views`` as in ``run_experiment``; the bar covers every cell.
    """
    _check_only(only)
    rep = reporter(progress)
    cells = list(config.cells)
    workers = cell_workers(config, len(cells))
    if workers <= 1:
        out = {}
        for i, cell in enumerate(cells):
            stage = rep.stage(i / len(cells), (i + 1) / len(cells), f"{cell_type(cell).label} · ")
            out[cell] = run_experiment(config.for_cell(cell), progress=stage, only=only, views=views)
        return out
    from .limits import check
    for cell in cells:  # every cell within the host's limits before any starts
        check(config.for_cell(cell), only=only, views=choose(only, views)[1])

    state = {cell: (0.0, WAITING) for cell in cells}
    stop = threading.Event()

    def one(cell: str):
        def cb(fraction: float, what: str) -> None:
            if stop.is_set():
                raise Cancelled("stopped: the caller cancelled, or another cell failed")
            state[cell] = (fraction, what)

        result = run_experiment(config.for_cell(cell), progress=cb, only=only, views=views)
        state[cell] = (1.0, "done")
        return result

    rep(0.0, f"starting {len(cells)} cells side by side", force=True)
    ex = ThreadPoolExecutor(workers, thread_name_prefix="cell")
    futures = {cell: ex.submit(one, cell) for cell in cells}
    try:
        pending = set(futures.values())
        while pending:
            done, pending = wait(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
            for f in done:
                f.result()  # a worker's error: raised here, the others stopped below
            fractions = {c: s[0] for c, s in state.items()}
            waiting = [c for c in cells if state[c][1] == WAITING]
            running = [c for c in cells if not futures[c].done() and c not in waiting]
            n_done = sum(futures[c].done() for c in cells)
            # the least advanced running cell says what it computes; cells not started yet are named after it
            what = "".join(f"{cell_type(c).label} · {state[c][1]}" for c in sorted(running, key=lambda c: fractions[c])[:1])
            if waiting:
                what += f"{'; ' if what else ''}{', '.join(cell_type(c).label for c in waiting)} next"
            rep(sum(fractions.values()) / len(cells), f"{what or 'done'}  ({n_done} of {len(cells)} cells done)")
    except BaseException:
        stop.set()
        ex.shutdown(wait=True, cancel_futures=True)
        raise
    ex.shutdown(wait=True)
    rep(1.0, f"done ({len(cells)} of {len(cells)} cells done)", force=True)
    return {cell: futures[cell].result() for cell in cells}
