"""The entry points: ``run_experiment(config)`` and ``run_comparison(config)``, from a configuration to results.

    run_experiment   one cell: a built-in configuration (task data, the network, optionally a state_dict) is
                     checked against the host's limits, built and analysed by the engine; a user's files
                     (``state_dict_path`` with the random task) go to ``analysis.own_model``
    run_comparison   every cell of ``config.cells`` on the same data and settings, side by side where cores allow
                     (``analysis.comparison``)

Imports run one way: this module -> (own_model, comparison) -> engine (the analysis of one built model and its
``ExperimentResult``, re-exported here for the callers that name it from this module).
"""
from __future__ import annotations

import time

from .compute_views import announce, resolve_detail
from .config import ExperimentConfig
from .device import resolve_device
from .engine import (DTYPES, ONLY, ExperimentResult, TaskModel, _check_only, _detached,  # noqa: F401 - re-exported
                     analyse_model, build_batch, choose, resolve)
from .progress import Progress, Reporter, reporter


def run_experiment(config: ExperimentConfig, *, progress: Progress | Reporter | None = None,
                   only: str | None = None, views=None) -> ExperimentResult:
    """Analyse one configuration (see the engine's docstring). Raises ConfigError for bad input.

    progress  optional ``Progress`` callback ``(fraction, what)``; if it raises ``analysis.progress.Cancelled``
              the run stops there and the exception propagates (nothing is returned).
    only      None / "all": everything; "gradients": the forward/backward pass, ||dL/dh_t|| (and the truncated
              comparison), W_hh spectra and gate activity, leaving ``jac``, ``jac_backward`` and
              ``memory_horizon`` None (``result.complete`` is False): what the gradient-flow view needs, at about
              the cost of one forward+backward pass.
    views     what to compute (analysis.compute_views): None = every view (or what ``only`` implies), e.g.
              "gradients" (about one forward+backward, no W_hh eigensolvers either) or "gradients,jacobians"
    """
    _check_only(only)
    only, views = choose(only, views)
    own = bool(config.state_dict_path and config.task == "random")
    if not own:  # a user's files are checked once their shapes are read (analysis.own_model.analyse_own)
        from .limits import check
        from .own_files import with_file_arch
        config, _ = resolve_detail(config, own_model=False, only=only)
        # LimitExceeded (a ConfigError) before anything is allocated, on a state_dict file's own sizes (metadata)
        announce(check(with_file_arch(config), only=only, views=views))
    return _run_experiment(config, reporter(progress), only, views)


def _run_experiment(config: ExperimentConfig, rep: Reporter, only: str | None = None,
                    views: tuple[str, ...] | None = None) -> ExperimentResult:
    t0 = time.perf_counter()
    if config.state_dict_path and config.task == "random":  # a user's model, its readout, targets and h0
        from .own_model import run_files
        return run_files(config, rep, only, views)
    rep(0.0, "building the model and the data", force=True)
    config, batch, sd = resolve(config)
    _, device_note = resolve_device(config.device)  # cpu (see analysis.device)
    dtype = DTYPES[config.dtype]
    model = TaskModel(config, batch.spec, config.input_size).to(dtype)
    if sd is not None:
        model.net.load_torch_state_dict(sd)
    return analyse_model(config, batch, model, t0=t0, rep=rep, only=only, views=views,
                         notes=(device_note,) if device_note else ())


def run_comparison(config: ExperimentConfig, *, progress: Progress | Reporter | None = None,
                   only: str | None = None, views=None) -> dict[str, ExperimentResult]:
    """run_experiment for each cell of ``config.cells`` (same data, seed and settings), keyed by cell; the cells
    run side by side where cores allow (analysis.comparison). ``progress``, ``only`` and ``views`` as in
    ``run_experiment``."""
    from .comparison import run_cells
    return run_cells(config, run_experiment, progress=progress, only=only, views=views)
