r"""What an analysis computes: the views asked for, and the Jacobian detail (light or exact) it runs at.

Views (``analyze(..., views=...)``, ``run_experiment(..., views=...)``, ``python -m analysis run --views ...``)::

    gradients    ||dL/dh_t|| for every t and layer, both cell-state gradients (LSTM), the truncated comparison:
                 one forward + backward pass (alias: gradient-flow)
    activations  gate activity and saturation of the analysed layer (from the same forward pass)
    jacobians    sigma(dh_{T-1}/dh_{T-1-k}) by lag, the memory horizon, Lyapunov exponents, the cell-state flow:
                 the Jacobian products, most of the cost
    spectrum     W_hh eigenvalues and singular values per gate block, and the Lyapunov exponents (so: jacobians)
    cell-state   the LSTM's dc_{T-1}/dc_{T-1-k} next to the carousel, and the gates (so: jacobians)
    sensitivity  S_t = mean ||dh_t/dtheta||_F^2 over the recurrent parameters next to E_t = mean ||h_t||^2
                 (analysis.param_sensitivity: forward-mode, one pass per tangent): opt-in, computed only when
                 named (or with "all"), never by default
    all          every view
    (unset)      every view but the opt-in ones (OPT_IN): the default of run_experiment, analyze and the CLI

``gradients`` and ``activations`` alone skip the Jacobian products and the W_hh eigensolvers: about one forward +
backward pass (``benchmarks/bench_own_model_lm.py`` measures the ratio).

Jacobian detail (``ExperimentConfig.jacobian_detail``)::

    exact   jacobian_lags / jacobian_batch / spectra as configured (every lag, every sequence by default)
    light   about LIGHT_LAGS log-spaced lags, the first LIGHT_BATCH sequences, spectra="fast" (sigma_max
            by lag without forming the products where that is cheaper: analysis.jacobian_route)
    auto    exact for the built-in tasks; for a user's model light when the exact analysis is estimated above
            AUTO_LIGHT_SECONDS (analysis.limits at its calibrated rate), said in the notes; the result's config
            records what ran (light or exact), so re-running it gives the same numbers
"""
from __future__ import annotations

from contextvars import ContextVar

from rnn_models.config import ConfigError

VIEW_NAMES = ("gradients", "activations", "jacobians", "spectrum", "cell-state", "sensitivity")
OPT_IN = ("sensitivity",)  # computed only when asked for: the default analysis costs what it did
DEFAULT_VIEWS = tuple(v for v in VIEW_NAMES if v not in OPT_IN)
ALIASES = {"gradient-flow": "gradients", "all": None}
NEEDS_JACOBIANS = ("jacobians", "spectrum", "cell-state")
NEEDS_WEIGHT_SPECTRA = ("spectrum",)
LIGHT_BATCH = 4
LIGHT_LAGS = 16
AUTO_LIGHT_SECONDS = 10.0


def parse_views(views) -> tuple[str, ...]:
    """None / "all" -> every view; "gradients,jacobians" or an iterable of names -> those (sorted as VIEW_NAMES).
    A name not known: ConfigError, one line naming the allowed names."""
    if views is None:
        return VIEW_NAMES
    items = views.split(",") if isinstance(views, str) else list(views)
    out = set()
    for v in items:
        name = str(v).strip()
        if name in ALIASES:
            if ALIASES[name] is None:
                return VIEW_NAMES
            name = ALIASES[name]
        if name not in VIEW_NAMES:
            raise ConfigError(f"views: {name!r} is not a view: choose from {', '.join(VIEW_NAMES)}, all "
                              "(comma-separated)")
        out.add(name)
    if not out:
        raise ConfigError(f"views is empty: choose from {', '.join(VIEW_NAMES)}, all")
    return tuple(v for v in VIEW_NAMES if v in out)


def only_for(views: tuple[str, ...]) -> str | None:
    """The engine's stage switch: "gradients" when no view needs the Jacobian products, else None (everything)."""
    return None if any(v in views for v in NEEDS_JACOBIANS) else "gradients"


def views_for_only(only: str | None) -> tuple[str, ...]:
    return ("gradients", "activations") if only == "gradients" else DEFAULT_VIEWS


def light(config):
    """The light Jacobian settings of ``config`` (log-spaced lags, LIGHT_BATCH sequences)."""
    b = config.jacobian_batch
    return config.replace(jacobian_lags="log", num_log_lags=min(config.num_log_lags, LIGHT_LAGS),
                          jacobian_batch=LIGHT_BATCH if b in (0, None) or b > LIGHT_BATCH else b,
                          jacobian_detail="light", spectra="fast")


def resolve_detail(config, *, own_model: bool, only: str | None = None):
    """(config as it will run, note or None): ``jacobian_detail`` auto/light/exact resolved (module docstring)."""
    if only == "gradients":
        return config, None
    if config.jacobian_detail == "light":
        return light(config), None
    if config.jacobian_detail == "exact" or not own_model:  # a task's auto: as configured (recorded as given)
        return config, None
    from .limits import GFLOP_PER_S, estimate
    exact = estimate(config.replace(jacobian_detail="exact"))
    seconds = exact.flops / (GFLOP_PER_S * 1e9)
    if seconds <= AUTO_LIGHT_SECONDS:
        return config.replace(jacobian_detail="exact"), None
    lit = light(config)
    note = (f"light Jacobian settings (about {lit.num_log_lags} log-spaced lags, {lit.jacobian_batch} sequences, "
            f"spectra fast): the exact analysis of this "
            f"model is estimated at {exact.gflop:,.0f} GFLOP (~{seconds:,.0f} s at {GFLOP_PER_S:g} GFLOP/s), above "
            f"{AUTO_LIGHT_SECONDS:g} s; exact: jacobian_detail='exact' (--jacobian-detail exact)")
    return lit, note


# ---- the estimate, said before a long run (the command line prints it) --------------------------------------
ESTIMATE_SINK: ContextVar = ContextVar("estimate_sink", default=None)
PRINT_ABOVE_SECONDS = 10.0


def estimate_seconds(cost) -> float:
    from .limits import GFLOP_PER_S
    return cost.flops / (GFLOP_PER_S * 1e9)


def estimate_text(cost) -> str:
    from .limits import GFLOP_PER_S
    return (f"estimate: {cost.gflop:,.0f} GFLOP, ~{estimate_seconds(cost):,.0f} s at {GFLOP_PER_S:g} GFLOP/s "
            f"(the rate measured on the calibration machine), about {cost.memory_mb:,.0f} MB")


def announce(cost) -> None:
    """Hand the cost of the analysis about to run to this context's sink (the command line's), if any."""
    sink = ESTIMATE_SINK.get()
    if sink is not None:
        sink(cost)
