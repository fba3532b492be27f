r"""Figures of the gradient-dynamics lab: ``ExperimentResult`` -> plotly figures (no Streamlit here).

Shared by the dashboard (``dashboard/views``) and the command line's export (``analysis.export``)::

    view_figures(view, results, histories=None) -> {file_safe_name: go.Figure}
    slide_layout(fig) -> fig laid out on a 1920x1080 slide with projector-sized fonts
    apply_display(fig, log_y=..., band=...)     display-only changes (never recompute anything)

Every figure keeps its numbers in its traces (x / y / z arrays) and the experiment's config in
``fig.layout.meta`` ({"config": the comparison's ExperimentConfig.to_dict(), "configs": {cell: ...},
"view", "figure"}), so an exported file can be redrawn. The numbers are the engine's: Jacobian quantities
arrive as log10 values and are shown as 10**value; the only curve computed here is the Pascanu bound
(gamma * sigma_max(W_hh))^k and, in the activations view, phi and phi' from ``rnn_models.cells``.

Notation follows the course notes: h_t = phi(W_hh h_{t-1} + W_xh x_t + b), gamma = sup|phi'|,
LSTM c_t = f_t * c_{t-1} + i_t * g_t, GRU h_t = (1 - z_t) * n_t + z_t * h_{t-1}.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from .activations import (  # noqa: F401 - re-exported: ``from analysis.figures import ...`` keeps working
    activation_figures,
)
from .cell_state import (  # noqa: F401 - re-exported: ``from analysis.figures import ...`` keeps working
    GATES_SHOWN,
    cell_state_figures,
)
from .gradient_flow import (  # noqa: F401 - re-exported: ``from analysis.figures import ...`` keeps working
    gradient_flow_figures,
    truncated_figure,
    truncation_cuts,
)
from .jacobians import (  # noqa: F401 - re-exported: ``from analysis.figures import ...`` keeps working
    jacobian_figures,
    pascanu_bound,
)
from .sensitivity import sensitivity_figures
from .spectrum import (  # noqa: F401 - re-exported: ``from analysis.figures import ...`` keeps working
    spectrum_figures,
)
from .theme import (  # noqa: F401 - re-exported: ``from analysis.figures import ...`` keeps working
    ACTIVATION_COLORS,
    CELL_COLORS,
    CELL_LABELS,
    GATE_COLORS,
    GATE_NAMES,
    LAYER_DASHES,
    MODEBAR_CONFIG,
    SAMPLES_SHOWN,
    SCREEN_HEIGHT,
    SLIDE_H,
    TITLE_CHARS_SLIDE,
    SLIDE_W,
    TEMPLATE,
    VARIANT_DASHES,
    VIEWS,
    cell_of,
    color_of,
    config_meta,
    label_of,
    layer_name,
    layer_note,
    loss_reading,
    new_figure,
    positive,
    pow10,
    safe_key,
    subplots,
    visible,
    wrap_title,
)
from .training import (  # noqa: F401 - re-exported: ``from analysis.figures import ...`` keeps working
    describe_nonfinite,
    training_figures,
)

# ---- public API ---------------------------------------------------------------------------------------------
_BUILDERS = {
    "gradient-flow": gradient_flow_figures,
    "jacobians": jacobian_figures,
    "spectrum": spectrum_figures,
    "cell-state": cell_state_figures,
    "training": training_figures,
    "activations": activation_figures,
    "sensitivity": sensitivity_figures,  # opt-in (OPT_IN_VIEWS): figures only where the result computed it
}
OPT_IN_VIEWS = ("sensitivity",)  # views whose figures need an opt-in computation (analysis.compute_views.OPT_IN)
ALL_VIEWS = VIEWS + OPT_IN_VIEWS  # what exports and decks draw (an opt-in view not computed draws nothing)


def view_figures(view: str, results: dict, histories: dict | None = None) -> dict[str, go.Figure]:
    """Every figure of one view, keyed by a file-safe name; ``histories``: {cell: Trainer.history()} or None.

    The training view needs histories (it returns {} without them); the others use them where they exist
    (gradient-flow: step x timestep heatmap; spectrum: spectral radius over training).
    """
    if view not in _BUILDERS:
        raise ValueError(f"view={view!r} is not known: choose one of {', '.join(ALL_VIEWS)}")
    return _BUILDERS[view](results, histories or None)


def apply_display(fig: go.Figure, *, log_y: bool | None = None, band: bool | None = None) -> go.Figure:
    """Display-only changes in place (no data changes): log_y=False turns log y axes linear; band on/off."""
    if band is not None:
        for tr in fig.data:
            if isinstance(tr.meta, dict) and tr.meta.get("role") == "band":
                tr.visible = bool(band)
    if log_y is False:
        for name in fig.layout:
            if name.startswith("yaxis") and fig.layout[name].type == "log":
                fig.layout[name].type = "linear"
                fig.layout[name].range = None
                fig.layout[name].autorange = True
                fig.layout[name].tickvals = fig.layout[name].ticktext = None  # the log axis's decade ticks
    return fig


def legend_below(fig: go.Figure, clearance_px: int = 115) -> go.Figure:
    """A horizontal legend ``clearance_px`` below the plot area (past the x ticks and the x axis title at slide
    sizes), from the figure's height and margins."""
    h = fig.layout.height or SLIDE_H
    plot = h - (fig.layout.margin.t or 0) - (fig.layout.margin.b or 0)
    fig.update_layout(legend=dict(y=-clearance_px / max(plot, 100), yanchor="top"))
    return fig


def slide_layout(fig: go.Figure) -> go.Figure:
    """A copy of ``fig`` on a 16:9 1920x1080 slide: title 44 px, axis titles 32 px, ticks 28 px, legend 26 px."""
    fig = go.Figure(fig.to_dict())  # a deep copy: go.Figure(fig) would share the trace objects
    title = fig.layout.title.text if fig.layout.title is not None else None
    title = wrap_title(title, TITLE_CHARS_SLIDE) if isinstance(title, str) else title
    extra = 55 * title.count("<br>") if isinstance(title, str) else 0  # 44 px lines: the plot moves down
    fig.update_layout(
        width=SLIDE_W, height=SLIDE_H, autosize=False,
        font=dict(size=28, family="Arial, Helvetica, sans-serif"),
        # plotly sets a wrapped title about one line too high (its first line was cut off at the top): lowered
        title=dict(text=title, font=dict(size=44), x=0.02, xanchor="left", y=0.97 - (48 / SLIDE_H if extra else 0),
                   yanchor="top"),
        legend=dict(font=dict(size=26)),
        margin=dict(l=170, r=80, t=150 + extra, b=150),
    )
    if fig.layout.legend.orientation == "h":  # under the x axis's ticks and title, never on them
        fig.update_layout(margin=dict(b=260))
        legend_below(fig)
    fig.update_xaxes(title_font=dict(size=32), tickfont=dict(size=28))
    fig.update_yaxes(title_font=dict(size=32), tickfont=dict(size=28))
    for ann in fig.layout.annotations:
        size = ann.font.size if ann.font and ann.font.size else 13
        ann.font.size = max(28, int(size * 2))
    for tr in fig.data:
        if tr.type in ("scatter", "scattergl") and tr.line is not None and tr.line.width not in (None, 0):
            tr.line.width = max(tr.line.width * 1.8, 2.5)
        if tr.type in ("scatter", "scattergl") and tr.marker is not None and tr.marker.size is not None \
                and not isinstance(tr.marker.size, (list, tuple, np.ndarray)):
            tr.marker.size = tr.marker.size * 1.8
        if tr.type == "bar" and tr.text is not None:  # value labels on bars
            tr.textfont.size = max(22, 2 * (tr.textfont.size or 12))
        if tr.type == "table":  # the samples table: projector-sized text and rows
            tr.header.font.size = 26
            tr.cells.font.size = 24
            tr.cells.height = 44
            tr.header.height = 44
        if tr.type == "heatmap" and tr.colorbar is not None:
            tr.colorbar.title.font.size = 28
            tr.colorbar.tickfont.size = 26
    if fig.layout.coloraxis is not None and fig.layout.coloraxis.colorbar is not None:
        fig.layout.coloraxis.colorbar.title.font.size = 28
        fig.layout.coloraxis.colorbar.tickfont.size = 26
    return fig


__all__ = ["VIEWS", "ALL_VIEWS", "OPT_IN_VIEWS", "SLIDE_W", "SLIDE_H", "MODEBAR_CONFIG", "CELL_COLORS", "view_figures", "slide_layout",
           "apply_display", "config_meta", "pascanu_bound", "describe_nonfinite", "pow10", "layer_name", "visible"]
