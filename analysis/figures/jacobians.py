"""View 2, Jacobians: singular values of the products dh_{T-1}/dh_{T-1-k} against the lag k, the Pascanu bound."""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from rnn_models.cells import cell_type
from rnn_models.config import ACTIVATION_GAMMA

from .theme import (
    _base_layout,
    _hline,
    _log_range,
    _vline,
    color_of,
    config_meta,
    label_of,
    layer_note,
    new_figure,
    pow10,
    subplots,
)


def pascanu_bound(result, lags) -> tuple[np.ndarray, float, float] | None:
    """(gamma * sigma_max(W_hh))^k for a vanilla RNN without layer norm, with gamma and sigma_max; else None
    (the kinds that declare the bound: ``gamma_bound``)."""
    c = result.config
    if not cell_type(c.cell).gamma_bound or c.layer_norm:
        return None
    gamma = ACTIVATION_GAMMA[c.activation]
    smax = float(result.spectra["h"]["sigma_max"])
    k = np.asarray(lags, dtype=float)
    if gamma * smax <= 0:
        return np.where(k == 0, 1.0, 0.0), gamma, smax
    return pow10(k * math.log10(gamma * smax)), gamma, smax


def _horizon(jac, threshold: float) -> int | None:
    """The first lag whose sigma_max is below the threshold (the engine's memory-horizon rule), or None."""
    below = np.nonzero(np.asarray(jac.spectral_norm, float) < math.log10(threshold))[0]
    return int(np.asarray(jac.lag)[below[0]]) if len(below) else None


def overlapping(sv_log10, lag, tol_decades: float = math.log10(1.05), share: float = 0.9) -> list[tuple[int, int]]:
    """Runs (i, j), j > i, of consecutive singular values sigma_i..sigma_j that lie within ``tol_decades`` of their
    neighbour at ``share`` of the lags k >= 1 (at k = 0 the product is the identity and every sigma is 1): drawn on
    a log axis many decades tall, such lines look like one."""
    sv = np.asarray(sv_log10, float)
    if sv.ndim != 2 or sv.shape[1] < 2:
        return []
    rows = sv[np.asarray(lag) >= 1]
    if not rows.size:
        return []
    with np.errstate(invalid="ignore"):
        close = [float(np.mean(np.abs(rows[:, i] - rows[:, i - 1]) < tol_decades)) >= share
                 for i in range(1, sv.shape[1])]
    runs, start = [], None
    for i, c in enumerate(close, start=1):
        if c and start is None:
            start = i - 1
        if not c and start is not None:
            runs.append((start, i - 1))
            start = None
    if start is not None:
        runs.append((start, sv.shape[1] - 1))
    return runs


def _emptiest_corner(sv_log10, lag, rng) -> tuple[float, float]:
    """The corner of a panel (x, y in its domain) whose box (60% of the width, a quarter of the height) holds the
    fewest points of the panel's lines: where a note covers no data."""
    sv = np.asarray(sv_log10, float)
    lag = np.asarray(lag, float)
    if rng is None or not sv.size or not lag.size or lag.max() <= 0:
        return 0.98, 0.97
    px = np.repeat(lag / lag.max(), sv.shape[1]) if sv.ndim == 2 else lag / lag.max()
    py = ((sv.ravel() - rng[0]) / (rng[1] - rng[0]))
    ok = np.isfinite(py)
    px, py = px[ok], py[ok]
    best = None
    for x, y in ((0.98, 0.97), (0.02, 0.03), (0.98, 0.03), (0.02, 0.97)):
        inx = (px >= 0.4) if x > 0.5 else (px <= 0.6)
        iny = (py >= 0.72) if y > 0.5 else (py <= 0.28)
        n = int(np.sum(inx & iny))
        if best is None or n < best[0]:
            best = (n, x, y)
    return best[1], best[2]


def _free_slot(fig: go.Figure, x0: float, n_chars: int, rng, taken: list) -> int:
    """The first label slot (row y = 1 - 0.075 slot of the plot, top down) where a label of ``n_chars`` starting at
    x0 crosses no drawn line and no label already placed (``taken``: [(slot, x0, x1)]); slot 0 if none is free.

    Widths are estimated for the slide (the widest case: labels twice the screen's size on a plot 1.4x as wide);
    y rows are checked in log10 units."""
    xs_all = [np.asarray(t.x, float) for t in fig.data if t.x is not None and t.visible is not False]
    x_max = max((float(np.nanmax(x)) for x in xs_all if x.size), default=1.0) or 1.0
    x1 = x0 + x_max * 0.011 * n_chars  # ~15 px per character of a 1400 px slide plot (28 px labels); wide on screens
    lo, hi = rng if rng is not None else (-10.0, 0.0)
    lines = []
    for t in fig.data:
        if t.visible is False or t.x is None or t.y is None or t.type != "scatter":
            continue
        x = np.asarray(t.x, float)
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.log10(np.asarray(t.y, float))
        inside = (x >= x0) & (x <= x1)
        probe = np.concatenate([y[inside], np.interp([x0, x1], x, y)]) if x.size > 1 else y[inside]
        lines.append(probe[np.isfinite(probe)])
    def free(slot: int) -> bool:
        return not any(s == slot and not (x1 < a or x0 > b) for s, a, b in taken)

    for slot in range(12):
        mid = hi - (hi - lo) * (0.075 * slot + 0.035)  # the label's row (top-anchored), in log10 units
        half = (hi - lo) * 0.04
        if free(slot) and all(not np.any(np.abs(v - mid) < half) for v in lines):
            taken.append((slot, x0, x1))
            return slot
    # every row crosses a line (steep lines near lag 0 at T = 2000): at least no label on another label
    slot = next((s for s in range(12) if free(s)), 0)
    taken.append((slot, x0, x1))
    return slot


def _reserve_hline_label(fig: go.Figure, y: float, n_chars: int, rng, taken: list) -> None:
    """Mark the label slots that the label of a horizontal line at ``y`` (log axis, drawn by ``_hline`` at the left,
    just above its line) covers, so no vertical marker's label is put on it."""
    lo, hi = rng if rng is not None else (-10.0, 0.0)
    xs_all = [np.asarray(t.x, float) for t in fig.data if t.x is not None and t.visible is not False]
    x_max = max((float(np.nanmax(x)) for x in xs_all if x.size), default=1.0) or 1.0
    p = (math.log10(y) - lo) / (hi - lo)  # the line's height, paper units; its label spans [p, p + 0.05]
    for slot in range(12):
        top = 1 - 0.075 * slot  # a marker label spans [top - 0.05, top]
        if top - 0.05 < p + 0.05 and top > p:
            taken.append((slot, 0.0, x_max * 0.011 * n_chars))


def _not_computed(j) -> list[str]:
    """The JacobianResult fields a route left out (the thin sigma_max route: sigma_min and the singular values)."""
    return list((j.extras.get("sigma_max_estimate") or {}).get("not_computed", []))


def _singular_values(j) -> np.ndarray:
    """(K, n) log10 top singular values; where the route computed sigma_max alone, that one column
    (sigma_1 = sigma_max), never a column of NaN drawn as an empty panel."""
    if "singular_values" in _not_computed(j):
        return np.asarray(j.spectral_norm, float)[:, None]
    return np.asarray(j.singular_values, float)


def _horizon_text(r, lag) -> str:
    """'horizon k=16', 'horizon between k=13 and 16' (log-spaced lags), or 'no horizon within N lags'."""
    d = r.horizon_detail or {}
    hz, prev = r.memory_horizon, d.get("after_lag")
    if hz is None:
        return f"no horizon within {int(lag.max()) if lag.size else 0} lags"
    if prev is not None and prev < hz - 1:
        return f"horizon between k={prev + 1} and {hz}"
    return f"horizon k={hz}"


def jacobian_figures(results: dict, histories: dict | None = None) -> dict[str, go.Figure]:
    meta = config_meta(results)
    view = "jacobians"
    fig = new_figure()
    ranges = []
    thresholds = set()
    marks = []
    for key, r in results.items():
        color, lab = color_of(key, results), label_of(key)
        j = r.jac
        lag = np.asarray(j.lag)
        hz = r.memory_horizon
        hz_text = _horizon_text(r, lag)
        direction = " forward direction" if r.jac_backward is not None else ""
        fig.add_trace(go.Scatter(x=lag, y=pow10(j.spectral_norm), name=f"{lab} σ<sub>max</sub>{direction}  ({hz_text})",
                                 legendgroup=key, line=dict(color=color, width=2.5),
                                 meta={"role": "spectral_norm", "cell": key},
                                 hovertemplate="k=%{x}<br>σ_max=%{y:.3e}<extra>" + lab + "</extra>"))
        rel = np.asarray(j.min_reliable, dtype=bool)
        if "min_singular_value" not in _not_computed(j):  # the thin route finds sigma_max alone: no sigma_min line
            symbols = np.where(rel, "circle", "circle-open")
            text = np.where(rel, "reliable", "unreliable: below float resolution")
            fig.add_trace(go.Scatter(x=lag, y=pow10(j.min_singular_value), mode="lines+markers",
                                     name=f"{lab} σ<sub>min</sub>  (hollow: unreliable)",
                                     legendgroup=key, line=dict(color=color, width=1.2, dash="dot"),
                                     marker=dict(symbol=symbols, size=5, color=color, line=dict(color=color, width=1)),
                                     text=text, meta={"role": "min_singular_value", "cell": key},
                                     hovertemplate="k=%{x}<br>σ_min=%{y:.3e}<br>%{text}<extra>" + lab + "</extra>"))
        ranges += [j.spectral_norm, np.where(rel, j.min_singular_value, np.nan)]
        if r.jac_backward is not None:
            jb = r.jac_backward
            bhz = _horizon(jb, r.config.horizon_threshold)
            bhz_text = f"horizon k={bhz}" if bhz is not None else "no horizon"
            fig.add_trace(go.Scatter(x=np.asarray(jb.lag), y=pow10(jb.spectral_norm),
                                     name=f"{lab} σ<sub>max</sub> backward direction  ({bhz_text})",
                                     legendgroup=key, line=dict(color=color, width=2, dash="dash"),
                                     meta={"role": "spectral_norm_backward", "cell": key},
                                     hovertemplate="k=%{x}<br>σ_max=%{y:.3e}<extra>" + lab + " backward</extra>"))
            ranges.append(jb.spectral_norm)
        if j.state_spectral_norm is not None:
            fig.add_trace(go.Scatter(x=lag, y=pow10(j.state_spectral_norm),
                                     name=f"{lab} σ<sub>max</sub> of the full state [h; c]", legendgroup=key,
                                     line=dict(color=color, width=1.5, dash="longdash"), visible="legendonly",
                                     meta={"role": "state_spectral_norm", "cell": key}))
        b = pascanu_bound(r, lag)
        if b is not None:
            y, gamma, smax = b
            fig.add_trace(go.Scatter(x=lag, y=y, name=f"{lab} bound (γ·σ<sub>max</sub>(W<sub>hh</sub>))<sup>k</sup>"
                                     f" = ({gamma:g}·{smax:.3g})<sup>k</sup>", legendgroup=key,
                                     line=dict(color=color, width=1.5, dash="dashdot" if r.jac_backward is not None
                                               else "dash"), meta={"role": "bound", "cell": key},
                                     hovertemplate="k=%{x}<br>bound=%{y:.3e}<extra>Pascanu bound</extra>"))
        if hz is not None:
            marks.append((hz, f"{lab} {hz_text}", color))
        thresholds.add(float(r.config.horizon_threshold))
    for th in thresholds:
        _hline(fig, th, f"horizon threshold {th:g}", log=True)
    rng = _log_range(*ranges, [math.log10(t) for t in thresholds], [0.0])
    taken: list = []
    for th in thresholds:
        _reserve_hline_label(fig, th, len(f"horizon threshold {th:g}"), rng, taken)
    for hz, text, color in marks:  # each label where no line runs (it used to sit on another cell's line)
        slot = _free_slot(fig, hz, len(text), rng, taken)
        _vline(fig, hz, text, color, slot)
    fig.update_yaxes(type="log", title="singular value of ∂h<sub>T-1</sub>/∂h<sub>T-1-k</sub>  (log)",
                     exponentformat="power", range=rng)
    fig.update_xaxes(title="lag k  (steps back from the last step)")
    rnn_bound = any(pascanu_bound(r, [0]) is not None for r in results.values())
    _base_layout(fig, "How far back can the last state feel a change?  ‖∂h<sub>T-1</sub>/∂h<sub>T-1-k</sub>‖ by lag"
                 + layer_note(results), meta, view, "jacobian_spectral_norm", height=520, legend_bottom=True,
                 caption="σ_max of ∂h_{T-1}/∂h_{T-1-k} is the most a change k steps back can still move the last "
                         "state; σ_min the least (hollow points are below float resolution). The memory horizon is "
                         "the first lag where σ_max falls under the threshold (between two reported lags when the "
                         "lags are log-spaced)."
                         + ("" if not any("min_singular_value" in _not_computed(r.jac) for r in results.values())
                            else " σ_min is not drawn where only σ_max was computed (light detail: the thin route; "
                                 "jacobian_detail='exact' computes it).")
                         + (" For the vanilla RNN the dashed line is the bound (γ·σ_max(W_hh))^k that no lag can "
                            "exceed." if rnn_bound else ""))
    figs = {"jacobian_spectral_norm": fig}

    # top singular values per lag, one panel per cell
    keys = list(results)
    fig = subplots(rows=1, cols=len(keys), shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=[label_of(k) for k in keys])
    all_sv = []
    for ci, key in enumerate(keys, start=1):
        r = results[key]
        color = color_of(key, results)
        sv = _singular_values(r.jac)
        lag = np.asarray(r.jac.lag)
        all_sv.append(sv)
        if "singular_values" in _not_computed(r.jac):
            ax = "" if ci == 1 else ci
            fig.add_annotation(text="only σ<sub>1</sub> = σ<sub>max</sub> computed (light detail, thin route);<br>"
                                    "jacobian_detail='exact' computes the top n", xref=f"x{ax} domain",
                               yref=f"y{ax} domain", x=0.98, y=0.98, xanchor="right", yanchor="top", showarrow=False,
                               align="right", font=dict(size=11, color=color), bgcolor="rgba(255,255,255,0.8)")
        n = sv.shape[1] if sv.ndim == 2 else 0
        for i in range(n):
            fig.add_trace(go.Scatter(x=lag, y=pow10(sv[:, i]), name=f"{label_of(key)} σ<sub>{i + 1}</sub>",
                                     legendgroup=key, showlegend=False,
                                     line=dict(color=color, width=2.5 if i == 0 else 1.2),
                                     opacity=1.0 if i == 0 else max(0.3, 0.9 - 0.08 * i),
                                     hovertemplate=f"σ_{i + 1}" + "<br>k=%{x}<br>%{y:.3e}<extra>" + label_of(key) + "</extra>"),
                          row=1, col=ci)
        fig.update_xaxes(title_text="lag k", row=1, col=ci)
    rng = _log_range(*all_sv)
    tol = max(math.log10(1.05), 0.015 * (rng[1] - rng[0])) if rng else math.log10(1.05)
    for ci, key in enumerate(keys, start=1):
        sv = _singular_values(results[key].jac)
        groups = overlapping(sv, results[key].jac.lag, tol)
        if not groups:
            continue
        # lines drawn on top of each other look like one: say so, on the side of the panel the lines leave free
        text = ", ".join(f"σ<sub>{a + 1}</sub>–σ<sub>{b + 1}</sub>" for a, b in groups) + " overlap"
        x, y = _emptiest_corner(sv, results[key].jac.lag, rng)
        ax = "" if ci == 1 else ci
        fig.add_annotation(text=text + f"<br>(within {tol:.2g} decades)", xref=f"x{ax} domain",
                           yref=f"y{ax} domain", x=x, y=y, xanchor="right" if x > 0.5 else "left",
                           yanchor="top" if y > 0.5 else "bottom", showarrow=False, align="right" if x > 0.5 else
                           "left", font=dict(size=11, color=color_of(key, results)), bgcolor="rgba(255,255,255,0.8)")
    fig.update_yaxes(type="log", exponentformat="power", range=rng)
    fig.update_yaxes(title_text="σ<sub>i</sub>(∂h<sub>T-1</sub>/∂h<sub>T-1-k</sub>)", row=1, col=1)
    n_sv = max((s.shape[1] for s in all_sv if s.ndim == 2), default=0)
    _base_layout(fig, f"Top {n_sv} singular values per lag (thick: the largest): how many directions survive"
                 + layer_note(results), meta, view, "jacobian_singular_values",
                 caption="Each line is one singular value σ_i of ∂h_{T-1}/∂h_{T-1-k}: how many directions of the "
                         "state a change k steps back can still move. Lines that fall together are directions "
                         "forgotten at the same rate.")
    figs["jacobian_singular_values"] = fig
    return figs


