r"""Atlas: a sweep's phase diagram (``analysis.sweep`` result -> plotly figure).

    one axis      the metric's mean over seeds against the axis, a min-max band over the seeds and each seed's
                  value as a dot; a categorical axis (cell, activation) gets dots with min-max bars
    two axes      lines: one line per value of the axis with few values (cells, activations, <= 6 values), or
                  heatmap: the mean over seeds on the grid (axis 1 down, axis 2 across)

Reference levels: 0 for ``lyapunov_max`` (the edge of chaos) and ``grad_ratio`` (gradient kept), 1 for
``final_loss_over_chance`` (chance). A memory horizon beyond the sequence (censored) is drawn as a triangle at
T-1 ("beyond"). The figure carries the sweep (axes, seeds, points, summary, notes) in ``layout.meta["sweep"]``,
so its JSON export holds every number.
"""
from __future__ import annotations

import re

import numpy as np
import plotly.graph_objects as go

from ..sweep_points import METRIC_LABELS
from .theme import CELL_COLORS, CELL_LABELS, SCREEN_HEIGHT, TEMPLATE, decade_ticks, new_figure

REFERENCE = {"lyapunov_max": (0.0, "λ₁ = 0: edge of chaos"), "grad_ratio": (0.0, "gradient kept (ratio 1)"),
             "final_loss_over_chance": (1.0, "chance level")}
GROUP_MAX = 6
AXIS_LABELS = {"forget_bias": "forget-gate bias b_f",
               "seq_len": "sequence length T", "hidden_size": "hidden size H", "cell": "cell",
               "activation": "activation", "lr": "learning rate"}


INIT_SCALE_LABELS = {"spectral": "spectral radius g of W<sub>hh</sub>", "identity": "identity scale a (W<sub>hh</sub> = a·I)",
                     "xavier": "Xavier gain", "orthogonal": "orthogonal gain"}


def _axis_label(d: dict, field: str) -> str:
    if field == "init_scale":
        return INIT_SCALE_LABELS.get(d["config"].get("init"), "init scale")
    return AXIS_LABELS.get(field, field)


def _numeric(values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _log_spaced(values) -> bool:
    v = np.asarray(values, dtype=float)
    if len(v) < 3 or (v <= 0).any():
        return False
    r = v[1:] / v[:-1]
    return bool(np.allclose(r, r[0], rtol=0.02) and abs(r[0] - 1) > 0.05)


def _label(v) -> str:
    return CELL_LABELS.get(v, str(v)) if isinstance(v, str) else f"{v:g}" if isinstance(v, float) else str(v)


def _stat(summary_row: dict, metric: str, key: str) -> float:
    v = summary_row[metric][key]
    return np.nan if v is None else float(v)


def _series(d: dict, metric: str, where: dict, along: str):
    """(x values, mean, min, max, [(x, seed value)], [(x, censored bound)]) along one axis, the others fixed."""
    rows = [s for s in d["summary"] if all(s[k] == v for k, v in where.items())]
    xs = [s[along] for s in rows]
    mean = np.array([_stat(s, metric, "mean") for s in rows])
    lo = np.array([_stat(s, metric, "min") for s in rows])
    hi = np.array([_stat(s, metric, "max") for s in rows])
    pts = [p for p in d["points"] if all(p[k] == v for k, v in where.items())]
    seeds = [(p[along], p[metric]) for p in pts if p.get(metric) is not None]
    cens = [(p[along], p["censored"][metric]) for p in pts if metric in (p.get("censored") or {})]
    return xs, mean, lo, hi, seeds, cens


def _color(group_field: str | None, value, i: int) -> str:
    if group_field == "cell" and value in CELL_COLORS:
        return CELL_COLORS[value]
    return TEMPLATE.layout.colorway[i % len(TEMPLATE.layout.colorway)]


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    return f"rgba({int(h[0:2], 16)}, {int(h[2:4], 16)}, {int(h[4:6], 16)}, {alpha})"


def _band(x: list, lo: np.ndarray, hi: np.ndarray) -> tuple[list, list]:
    """The min-max band as closed polygons over each run of finite values (None separates them), so a point
    without a value (failed, or a horizon beyond T-1 for every seed) leaves a gap instead of a stray wedge."""
    bx, by, run = [], [], []
    for i in range(len(x) + 1):
        if i < len(x) and np.isfinite(lo[i]) and np.isfinite(hi[i]):
            run.append(i)
            continue
        if run:
            if bx:
                bx.append(None)
                by.append(None)
            bx += [x[j] for j in run] + [x[j] for j in run[::-1]]
            by += [float(hi[j]) for j in run] + [float(lo[j]) for j in run[::-1]]
            run = []
    return bx, by


def _add_series(fig: go.Figure, d: dict, metric: str, where: dict, along: str, name: str, color: str,
                numeric: bool, group: str | None = None) -> None:
    """``name``: the mean line's legend entry; ``group``: the prefix of the other traces' names (None: none)."""
    pre = f"{group}: " if group else ""
    xs, mean, lo, hi, seeds, cens = _series(d, metric, where, along)
    counts = [s[metric]["n"] for s in d["summary"] if all(s[k] == v for k, v in where.items())]
    x = xs if numeric else [_label(v) for v in xs]
    n = len(d["seeds"])
    if numeric and n > 1:
        bx, by = _band(x, lo, hi)
        fig.add_trace(go.Scatter(x=bx, y=by, fill="toself", mode="lines",
                                 line=dict(width=0), fillcolor=_rgba(color, 0.18), hoverinfo="skip",
                                 name=f"{pre}min–max over {n} seeds", showlegend=False, legendgroup=name,
                                 meta={"role": "band"}))
    err = dict(type="data", symmetric=False, array=hi - mean, arrayminus=mean - lo, color=color, width=6)
    fig.add_trace(go.Scatter(x=x, y=mean, name=name, mode="lines+markers" if numeric else "markers",
                             line=dict(color=color, width=3), marker=dict(size=8 if numeric else 12, color=color),
                             error_y=None if numeric or n == 1 else err, legendgroup=name, meta={"role": "mean"},
                             customdata=counts,
                             hovertemplate=f"{name}<br>%{{x}}: mean %{{y:.4g}} over %{{customdata}} of {n} seeds"
                                           "<extra></extra>"))
    if n > 1 and seeds:
        sx = [sx if numeric else _label(sx) for sx, _ in seeds]
        fig.add_trace(go.Scatter(x=sx, y=[v for _, v in seeds], mode="markers", name=f"{pre}each seed",
                                 marker=dict(size=5, color=_rgba(color, 0.55)), showlegend=False,
                                 legendgroup=name, meta={"role": "seeds"}, hovertemplate="%{x}: %{y:.4g}<extra></extra>"))
    if cens:
        cx = [c if numeric else _label(c) for c, _ in cens]
        fig.add_trace(go.Scatter(x=cx, y=[b for _, b in cens], mode="markers", name=f"{pre}beyond T-1 (no horizon within the sequence)",
                                 marker=dict(symbol="triangle-up", size=11, color=color, line=dict(width=1, color="white")),
                                 legendgroup=name, meta={"role": "censored"},
                                 hovertemplate="%{x}: horizon beyond %{y} (never below the threshold)<extra></extra>"))


def _layout(fig: go.Figure, title: str, x_title: str, y_title: str, log_x: bool) -> None:
    fig.update_layout(title=dict(text=title, x=0.01), height=SCREEN_HEIGHT, margin=dict(l=70, r=30, t=70, b=60),
                      legend=dict(orientation="h", y=-0.18), hovermode="closest")
    fig.update_xaxes(title_text=x_title, type="log" if log_x else None)
    fig.update_yaxes(title_text=y_title)


def _lines(d: dict, metric: str, along: str, group: str | None) -> go.Figure:
    fig = new_figure()
    numeric = _numeric(d["axes"][along])
    groups = d["axes"][group] if group else [None]
    for i, g in enumerate(groups):
        where = {group: g} if group else {}
        n = len(d["seeds"])
        spread = f"mean of {n} seeds (band: min–max, dots: each seed)" if n > 1 else "one seed"
        name = f"{_axis_label(d, group)} = {_label(g)}" if group and group != "cell" else (
            _label(g) if group else spread)
        _add_series(fig, d, metric, where, along, name, _color(group, g, i), numeric, name if group else None)
    if metric in REFERENCE:
        y0, text = REFERENCE[metric]
        fig.add_hline(y=y0, line=dict(color="#888", dash="dash", width=1.5), annotation_text=text,
                      annotation_position="top left")
    _layout(fig, "", _axis_label(d, along), METRIC_LABELS[metric],
            numeric and _log_spaced(d["axes"][along]))
    return fig


def _heatmap(d: dict, metric: str) -> go.Figure:
    a0, a1 = list(d["axes"])
    v0, v1 = d["axes"][a0], d["axes"][a1]
    z = np.full((len(v0), len(v1)), np.nan)  # (axis-1 values, axis-2 values)
    ns = np.zeros_like(z, dtype=int)
    for s in d["summary"]:
        i, j = v0.index(s[a0]), v1.index(s[a1])
        z[i, j], ns[i, j] = _stat(s, metric, "mean"), s[metric]["n"]
    zmid = REFERENCE.get(metric, (None,))[0]
    fig = new_figure(go.Heatmap(
        x=[_label(v) for v in v1] if not _numeric(v1) else v1, y=[_label(v) for v in v0] if not _numeric(v0) else v0,
        z=z, customdata=ns, zmid=zmid, colorscale="RdBu_r" if zmid is not None else "Viridis",
        colorbar=dict(title=dict(text=METRIC_LABELS[metric], side="right")),
        hovertemplate=f"{a0} %{{y}}, {a1} %{{x}}<br>mean %{{z:.4g}} over %{{customdata}} seeds<extra></extra>"))
    _layout(fig, "", _axis_label(d, a1), _axis_label(d, a0), _numeric(v1) and _log_spaced(v1))
    if _numeric(v0) and _log_spaced(v0):
        fig.update_yaxes(type="log")
    return fig


def _caption(d: dict, metric: str) -> str:
    """The figure's own caption: what was swept, over how many seeds, and how to read the marks."""
    axes = " and ".join(re.sub(r"<sub>(.*?)</sub>", r"_{\1}", _axis_label(d, a)) for a in d["axes"])
    ns = len(d["seeds"])
    return (f"{METRIC_LABELS[metric]} as {axes} {'move' if len(d['axes']) > 1 else 'moves'}: each point is a full "
            f"analysis at one setting for each of {ns} seed{'s' if ns > 1 else ''}; the line is the mean over seeds"
            + (", the band their min–max" if ns > 1 else "") + "."
            + (" A triangle is a horizon beyond the sequence (no lag fell under the threshold)."
               if metric == "memory_horizon" else ""))


def atlas_figure(d: dict, metric: str, kind: str = "auto") -> go.Figure:
    """The phase diagram of ``metric`` from a sweep result ``d``; ``kind``: auto | lines | heatmap."""
    if metric not in d["metrics"]:
        raise ValueError(f"metric={metric!r} was not computed by this sweep: choose one of {', '.join(d['metrics'])}")
    if kind not in ("auto", "lines", "heatmap"):
        raise ValueError(f"kind={kind!r} is not allowed: choose auto, lines or heatmap")
    axes = list(d["axes"])
    if len(axes) == 1:
        if kind == "heatmap":
            raise ValueError("a heatmap needs two axes: this sweep has one")
        fig = _lines(d, metric, axes[0], None)
    else:
        few = [a for a in axes if not _numeric(d["axes"][a]) or len(d["axes"][a]) <= GROUP_MAX]
        group = next((a for a in axes if not _numeric(d["axes"][a])), few[-1] if few else None)
        if kind == "heatmap" or (kind == "auto" and group is None):
            fig = _heatmap(d, metric)
        else:
            group = group or axes[0]
            fig = _lines(d, metric, next(a for a in axes if a != group), group)
    n_bad = sum(p["status"] != "ok" for p in d["points"])
    ns = len(d["seeds"])
    sub = f"{len(d['points'])} runs, {ns} seed{'s' if ns > 1 else ''} each" + (f", {n_bad} failed" if n_bad else "")
    fig.update_layout(title=dict(text=f"{METRIC_LABELS[metric]} ({sub})"))
    fig.layout.meta = {"config": d["config"], "view": "atlas", "figure": f"atlas-{metric}",
                       "caption": _caption(d, metric),
                       "sweep": {k: d[k] for k in ("axes", "seeds", "metrics", "points", "summary", "notes")}}
    return decade_ticks(fig)
