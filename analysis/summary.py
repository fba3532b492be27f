"""A short summary of one ExperimentResult: its repr in Python and its HTML in Jupyter (no Streamlit).

    summary_lines(result) -> [str]   cell, settings, gradient ratio, memory horizon, spectral radius, alerts
    summary_html(result) -> str      the same as a small HTML table (Jupyter's ``_repr_html_``)
"""
from __future__ import annotations

import html
import math

import numpy as np

from .guides import describe
from .provenance import provenance_lines


def _rows(r) -> list[tuple[str, str]]:
    c = r.config
    logs = r.grad.log10_grad_norm if r.grad.log10_grad_norm is not None else np.log10(np.asarray(r.grad.grad_norm))
    first, last = float(logs[0]), float(logs[-1])
    ratio = f"10^{first - last:.1f}" if math.isfinite(first) and math.isfinite(last) else "not finite"
    if r.jac is None:
        hz = "not computed (no Jacobian view asked for)"
    else:
        hz = r.horizon_detail["text"].split(": ", 1)[1]
    computed = any(v in (r.views or ()) for v in ("spectrum", "jacobians"))  # the W_hh eigensolvers ran
    radius = ("no fixed recurrent matrix (the step's Jacobians are its own at each state)" if computed else
              "not computed (views without spectrum)") if not r.spectra else \
        f"{r.spectra['h']['spectral_radius']:.3g}" if list(r.spectra) == ["h"] else \
        ", ".join(f"{k} {v['spectral_radius']:.3g}" for k, v in r.spectra.items())
    from .alerts import alerts
    found = alerts(r)
    prov = getattr(r, "provenance", None) or {}
    if prov.get("source") in ("python", "files", "upload"):  # a user's model: no task, no seed that matters
        settings = (f"your model ({prov['source']}) · T={c.seq_len} · H={c.hidden_size} · B={c.batch_size} · "
                    f"{c.dtype} · {prov['layer_text']} · loss: {prov['loss']}")
    else:
        settings = " · ".join(describe(c).split(" · ")[1:])
    return [
        ("cell", describe(c).split(" · ")[0]),
        ("settings", settings),
        ("‖∂L/∂h_0‖ / ‖∂L/∂h_T-1‖", ratio),
        (f"memory horizon (‖∂h_T-1/∂h_T-1-k‖ < {c.horizon_threshold:g})", hz),
        ("spectral radius of W_hh", radius),
        ("alerts", " | ".join(f"{a.level}: {a.message}" for a in found) if found else "none"),
    ] + [("note", n) for n in r.notes] + [("provenance", line) for line in provenance_lines(prov)[1:]]


def summary_lines(result) -> list[str]:
    return [f"{k}: {v}" for k, v in _rows(result)]


def summary_html(result) -> str:
    rows = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th>"
                   f"<td style='text-align:left'>{html.escape(v)}</td></tr>" for k, v in _rows(result))
    return f"<div><b>ExperimentResult</b> <small>(.figures(view) draws it)</small><table>{rows}</table></div>"
