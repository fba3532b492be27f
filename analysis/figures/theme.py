"""Shared look of every figure: colours, the plotly template, the layout and axis helpers, labels and meta."""
from __future__ import annotations

import math
import re

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from rnn_models.cells import by_kind, cell_names, merged
from rnn_models.config import CELLS

VIEWS = ("gradient-flow", "jacobians", "spectrum", "cell-state", "training", "activations")
SLIDE_W, SLIDE_H = 1920, 1080

# each kind's colour and label, as the cell classes declare them (rnn_models.cells; read at every use)
CELL_COLORS = by_kind("color")  # Okabe-Ito: rnn vermillion, lstm blue, gru green
CELL_LABELS = by_kind("label")
GATE_COLORS = {"h": "#D55E00", "i": "#E69F00", "f": "#56B4E9", "g": "#CC79A7", "o": "#666666",
               "r": "#E69F00", "z": "#56B4E9", "n": "#CC79A7"}


class _GateTitles(merged):
    """gate -> its figure-title name with a real subscript ("forget gate f<sub>t</sub>"), from the kinds'
    ``gate_descriptions``."""

    def __getitem__(self, gate):
        return f"{super().__getitem__(gate)} {gate}<sub>t</sub>"


GATE_NAMES = _GateTitles("gate_descriptions")
ACTIVATION_COLORS = {"tanh": "#D55E00", "relu": "#0072B2", "sigmoid": "#009E73", "linear": "#666666"}
VARIANT_DASHES = ("solid", "dash", "dot", "dashdot")
LAYER_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
SCREEN_HEIGHT = 460
SAMPLES_SHOWN = 12  # rows of the samples table (newest first)

MODEBAR_CONFIG: dict = {
    "displaylogo": False,
    "toImageButtonOptions": {"format": "png", "width": SLIDE_W, "height": SLIDE_H, "scale": 1,
                             "filename": "gradient-dynamics"},
}

_AXIS = dict(gridcolor="#E5EAF2", linecolor="#C8D0DC", ticks="", zerolinecolor="#E5EAF2", zerolinewidth=1,
             automargin=True, title=dict(standoff=12))
# a small white template: assigning plotly's own "plotly_white" costs ~60 ms per figure (it copies every trace
# type's defaults); this one costs under 1 ms
TEMPLATE = go.layout.Template(layout=dict(
    paper_bgcolor="white", plot_bgcolor="white", font=dict(color="#2a3f5f"), hoverlabel=dict(align="left"),
    colorway=list(CELL_COLORS.values()) + ["#E69F00", "#56B4E9", "#CC79A7", "#666666"],
    xaxis=_AXIS, yaxis=_AXIS, coloraxis=dict(colorbar=dict(outlinewidth=0, ticks="")),
))


def new_figure(data=None) -> go.Figure:
    return go.Figure(data=data, layout=dict(template=TEMPLATE))


def subplots(**kw) -> go.Figure:
    fig = make_subplots(figure=new_figure(), **kw)
    fig.layout.meta = {"_subplots": True}
    return fig


# ---- small helpers ------------------------------------------------------------------------------------------
def pow10(a) -> np.ndarray:
    """10**a for the engine's log10 values, for a log axis: log10 = -inf (an exact 0) becomes NaN, a gap (plotly
    would otherwise draw the line down to the axis)."""
    a = np.asarray(a, dtype=float)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        return np.where(np.isneginf(a), np.nan, np.power(10.0, a))


def positive(a) -> np.ndarray:
    """Raw values for a log axis: exact zeros become NaN (a gap); everything else unchanged."""
    a = np.asarray(a, dtype=float)
    return np.where(a == 0, np.nan, a)


def _log10(a) -> np.ndarray:
    """log10 for heatmaps (0 -> NaN: an empty cell rather than -inf)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log10(np.asarray(a, dtype=float))
    return np.where(np.isinf(out), np.nan, out)


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def cell_of(key: str) -> str:
    """The cell a results/histories key belongs to ("rnn", "lstm · clip norm" -> "lstm")."""
    head = str(key).split()[0].lower() if str(key).split() else ""
    return head if head in CELL_LABELS else cell_names()[0]  # else the first kind (the vanilla RNN)


def color_of(key: str, keys=()) -> str:
    """The cell's colour; a second run of the same cell (a variant) lighter, a third darker."""
    c = cell_of(key)
    same = [k for k in keys if cell_of(k) == c]
    i = same.index(key) if key in same else (0 if key == c else 1)
    base = CELL_COLORS[c]
    if i == 0:
        return base
    h = base.lstrip("#")
    rgb = [int(h[j:j + 2], 16) for j in (0, 2, 4)]
    mix = [v + (255 - v) * 0.55 for v in rgb] if i % 2 else [v * 0.55 for v in rgb]
    return "#" + "".join(f"{int(round(v)):02x}" for v in mix)


def safe_key(key: str) -> str:
    """A results key as a file-safe name part ("lstm · forget_bias=0" -> "lstm_forget_bias_0")."""
    return re.sub(r"[^A-Za-z0-9]+", "_", str(key)).strip("_") or "run"


def label_of(key: str) -> str:
    """"lstm · forget_bias=0" -> "LSTM · forget_bias=0"."""
    c = cell_of(key)
    rest = str(key)[len(c):]
    return CELL_LABELS[c] + rest


def config_meta(results: dict) -> dict:
    """{"config": the comparison's config (compare = the cells shown), "configs": {key: that run's own config}}.

    Variant runs ("lstm · forget_bias=0") appear in "configs" only; "config" is the main comparison.
    """
    if not results:
        return {"config": None, "configs": {}}
    plain = [k for k in results if k in CELLS] or list(results)[:1]
    first = results[plain[0]].config
    combined = first.to_dict()
    if len(plain) > 1:
        try:
            combined = first.replace(cell=plain[0], compare=tuple(plain)).to_dict()
        except ValueError:  # a field that cannot be combined: keep the first cell's
            combined = first.to_dict()
    return {"config": combined, "configs": {k: r.config.to_dict() for k, r in results.items()}}


# ---- words shared by the figures: layers (0-based, as the API, JSON and CLI count them), where the loss is read
def layer_name(a: int, L: int) -> str:
    """"layer 0 (bottom) of 2", "layer 1 (top) of 2", "layer 1 of 3": 0-based as ``config.layer`` and the JSON."""
    where = " (top)" if a == L - 1 else " (bottom)" if a == 0 else ""
    return f"layer {a}{where} of {L}"


def layer_note(results: dict) -> str:
    """" · layer 1 (top) of 2" when the figure shows one layer of a stacked network (the analysed one, the same
    for every result); "" for single-layer networks or when the results disagree."""
    layers = {(r.config.analysed_layer, r.config.num_layers) for r in results.values() if r.config.num_layers > 1}
    if len(layers) != 1:
        return ""
    return " · " + layer_name(*layers.pop())


def loss_steps_of(result) -> str:
    """Where the result's loss is read: "last" (the last step), "all" (every step) or "callable" (a user's loss
    function on every step's outputs), from the result's own spec and config."""
    spec = getattr(result, "spec", None)
    if getattr(spec, "kind", None) == "own":
        return "callable"
    steps = getattr(result.config, "loss_steps", "auto")
    return getattr(spec, "loss_steps", "last") if steps == "auto" else steps


LOSS_READ = {"last": "the loss is read at the last step →", "all": "a loss term at every step",
             "callable": "your loss callable reads every step's output"}


def loss_reading(results: dict, who: str = "") -> str:
    """The words of the time axis: where the loss is read ("the loss is read at the last step →"); several
    cells reading it differently are named. ``who`` ("the top layer") is said after "read"."""
    by = {}
    for k, r in results.items():
        by.setdefault(loss_steps_of(r), []).append(label_of(k))
    words = {s: LOSS_READ[s].replace("read at", f"read from {who} at") if who else LOSS_READ[s] for s in by}
    if len(by) == 1:
        return next(iter(words.values()))
    return "; ".join(f"{', '.join(ks)}: {words[s]}" for s, ks in by.items())


# ---- titles: short enough to fit -----------------------------------------------------------------------------
_MARKUP = re.compile(r"<[^>]+>")
TITLE_CHARS_SCREEN = 120  # characters per title line at 17 px on a ~1200 px wide chart
TITLE_CHARS_SLIDE = 72  # at 44 px on a 1920 px slide (Arial: ~0.5 em per character, margins kept)


def visible(text: str) -> str:
    """Title markup removed (<br> becomes a space), every other character kept: what a reader sees."""
    return _MARKUP.sub(lambda m: " " if m.group(0).lower().startswith("<br") else "", text or "")


def wrap_title(text: str, width: int) -> str:
    """``text`` with <br> between words so that no line shows more than ``width`` characters (markup not
    counted; a <br> already there is replaced). Sub/superscript tags stay whole."""
    words = re.sub(r"<br\s*/?>", " ", text, flags=re.IGNORECASE).split(" ")
    lines, cur, n = [], [], 0
    for w in words:
        wn = len(_MARKUP.sub("", w))
        if cur and n + 1 + wn > width:
            lines.append(" ".join(cur))
            cur, n = [], 0
        cur.append(w)
        n += wn + (1 if n else 0)
    lines.append(" ".join(cur))
    return "<br>".join(lines)


def _base_layout(fig: go.Figure, title: str, meta: dict, view: str, name: str, *, height: int = SCREEN_HEIGHT,
                 legend_bottom: bool = False, caption: str | None = None) -> go.Figure:
    """Title, size, margins, legend and ``meta`` (the config, view, figure name and the figure's own caption,
    which the slide deck puts under it). A title longer than a line is wrapped and the top margin grows."""
    sub = isinstance(fig.layout.meta, dict) and fig.layout.meta.get("_subplots")
    title = wrap_title(title, TITLE_CHARS_SCREEN)
    extra = 22 * title.count("<br>")
    fig.update_layout(
        title=dict(text=title, x=0.01, xanchor="left", font=dict(size=17)),
        height=height, margin=dict(l=70, r=30, t=60 + extra, b=60),
        meta={**meta, "view": view, "figure": name, **({"caption": caption} if caption else {})}, font=dict(size=13),
        legend=dict(font=dict(size=12), bgcolor="rgba(255,255,255,0.7)"),
        hoverlabel=dict(namelength=-1),
    )
    if sub:  # room for the subplot titles under the figure title
        fig.update_layout(margin=dict(t=85 + extra), title=dict(y=0.98, yanchor="top"))
    if legend_bottom:
        fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.18, xanchor="left", x=0),
                          margin=dict(b=110))
    return decade_ticks(fig)


# ---- log axes: ticks at decades (or 1-2-5 within one or two decades), never one decade and then "5, 2" ---------
_SUPER = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def tick_text(v: float) -> str:
    """0.05 -> "0.05", 2e-7 -> "2×10⁻⁷", 1e-7 -> "10⁻⁷" (plain numbers from 0.001 to 9999)."""
    if 1e-3 <= v < 1e4:
        return f"{v:g}"
    e = int(math.floor(math.log10(v) + 1e-9))
    m = round(v / 10 ** e, 6)
    power = "10" + str(e).translate(_SUPER)
    return power if m == 1 else f"{m:g}×{power}"


def log_ticks(lo: float, hi: float) -> dict:
    """Tick settings for a log axis showing [lo, hi] (plain values > 0): every decade (every 2nd, 3rd... when there
    are more than 12) from two decades up, else 1, 2, 5 times each power of ten (1..9 times when that gives fewer
    than three ticks), each labelled in full."""
    a, b = math.log10(lo), math.log10(hi)
    if b - a >= 2:
        first, last = math.floor(a), math.ceil(b)
        step = max(1, math.ceil((last - first) / 12))
        ks = list(range(first, last + 1, step))
        text = ["1" if k == 0 else "10" if k == 1 else "10" + str(k).translate(_SUPER) for k in ks]
        return {"tickvals": [10.0 ** k for k in ks], "ticktext": text, "dtick": None}
    else:
        for mantissas in ((1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9)):
            vals = [m * 10.0 ** k for k in range(math.floor(a) - 1, math.ceil(b) + 1) for m in mantissas]
            vals = [float(f"{v:.6g}") for v in vals if lo / 1.0001 <= v <= hi * 1.0001]
            if len(vals) >= 3:  # at least three labelled ticks, else finer steps
                break
        else:  # a sliver of a decade (|lambda| in [0.91, 1]): evenly spaced round values
            step = 10.0 ** math.floor(math.log10((hi - lo) / 2))
            step *= 5 if (hi - lo) / step > 12 else 2 if (hi - lo) / step > 6 else 1
            vals = [float(f"{k * step:.6g}") for k in range(math.ceil(lo / step), math.floor(hi / step) + 1)] or vals
        vals = vals or [10.0 ** round((a + b) / 2)]
    return {"tickvals": vals, "ticktext": [tick_text(v) for v in vals], "dtick": None}


def _axis_values(fig: go.Figure, axis_name: str, shown_only: bool = False) -> np.ndarray:
    """Every finite positive value the traces draw on ``axis_name`` ("yaxis", "yaxis2", "xaxis"...); with
    ``shown_only`` not those of traces hidden until their legend entry is clicked ("legendonly")."""
    letter, suffix = axis_name[0], axis_name[5:]
    ref = letter + suffix
    vals = []
    for tr in fig.data:
        if (getattr(tr, f"{letter}axis", None) or letter) != ref:
            continue
        v = getattr(tr, letter, None)
        if v is None or tr.type in ("heatmap", "table") or tr.visible is False or (
                shown_only and tr.visible == "legendonly"):
            continue
        a = np.asarray(v, dtype=object)
        try:
            a = a.astype(float)
        except (TypeError, ValueError):
            continue
        vals.append(a[np.isfinite(a) & (a > 0)])
    return np.concatenate(vals) if vals else np.zeros(0)


def decade_ticks(fig: go.Figure) -> go.Figure:
    """Give every log axis without its own ticks decade (or 1-2-5) ticks, from its range or its data."""
    for name in list(fig.layout):
        if not (name.startswith("xaxis") or name.startswith("yaxis")):
            continue
        ax = fig.layout[name]
        if ax.type != "log" or ax.tickvals is not None:
            continue
        if ax.range is not None and None not in ax.range:
            lo, hi = 10.0 ** ax.range[0], 10.0 ** ax.range[1]
            if hi > lo > 0:
                ax.update(**log_ticks(lo, hi))
            continue
        # autorange: ticks for every trace (a hidden one may be shown from the legend) and enough of them for
        # the range the shown traces take (it was one label when a hidden trace widened the span ticks were cut for)
        ticks = {}
        for v in (_axis_values(fig, name), _axis_values(fig, name, shown_only=True)):
            if v.size and float(v.max()) > float(v.min()) > 0:
                t = log_ticks(float(v.min()), float(v.max()))
                ticks.update(zip(t["tickvals"], t["ticktext"]))
        if ticks:
            vals = sorted(ticks)
            ax.update(tickvals=vals, ticktext=[ticks[k] for k in vals], dtick=None)
    return fig


def _log_range(*arrays, floor_decades: float = 60.0, pad: float = 0.4) -> list[float] | None:
    """A log10 y-range covering the finite values of the log10 arrays (at most floor_decades deep)."""
    vals = np.concatenate([np.asarray(a, dtype=float).ravel() for a in arrays if a is not None] or [np.zeros(0)])
    vals = vals[np.isfinite(vals)]
    if not vals.size:
        return None
    hi, lo = float(vals.max()), float(vals.min())
    lo = max(lo, hi - floor_decades)
    if hi - lo < 1:
        lo, hi = lo - 0.5, hi + 0.5
    return [lo - pad, hi + pad]


def _vline(fig, x, text, color, slot):
    """A vertical marker with its label near the top (labels staggered by slot)."""
    fig.add_shape(type="line", x0=x, x1=x, y0=0, y1=1, yref="paper", line=dict(color=color, width=1.5, dash="dot"))
    fig.add_annotation(x=x, y=1 - 0.075 * slot, yref="paper", text=text, showarrow=False, xanchor="left",
                       yanchor="top", xshift=3, font=dict(color=color, size=12), bgcolor="rgba(255,255,255,0.75)")


def _hline(fig, y, text, *, log=False, color="#888", position="left", row=None, col=None):
    """A dashed horizontal reference line with its label just above it (log axes take log10 positions)."""
    kw = {} if row is None else {"row": row, "col": col}
    fig.add_hline(y=y, line=dict(color=color, dash="dash", width=1.2), **kw)
    xref = "paper" if row is None else (f"x{'' if col == 1 else col} domain")
    yref = "y" if row is None else f"y{'' if col == 1 else col}"
    fig.add_annotation(x=0.01 if position == "left" else 0.99, xref=xref, y=math.log10(y) if log else y, yref=yref,
                       text=text, showarrow=False, xanchor=position, yanchor="bottom",
                       font=dict(color="#555", size=12), bgcolor="rgba(255,255,255,0.7)")


