"""Plain-words alerts about one analysed configuration or one training run (no Streamlit here).

    alerts(result) -> [Alert]              vanishing / exploding gradient over time, NaN/Inf, saturated units,
                                           dead ReLUs, what truncated BPTT cuts (info), and the notes on
                                           settings that do not apply to the cell
    training_alerts(history, stopped)     NaN/Inf during training (where and at which step)
    said_once([(run key, message)])       the messages of several runs, each text once, naming its cells

Thresholds (module constants): the gradient at some t below 1e-6 (above 1e6) times the last step's
||dL/dh_{T-1}||; more than half of the (unit, step) pairs saturated; more than 20% of ReLU units never active.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rnn_models.cells import cell_type

from .figures import describe_nonfinite
from .variant import SEP

VANISH_RATIO = 1e-6
EXPLODE_RATIO = 1e6
SATURATION_FRACTION = 0.5
DEAD_FRACTION = 0.2
LEVELS = ("info", "warning", "error")


@dataclass(frozen=True)
class Alert:
    level: str  # "info" | "warning" | "error"
    message: str
    kind: str = ""  # vanishing | exploding | nonfinite | saturated | dead | truncated | note | training

    def __post_init__(self):
        if self.level not in LEVELS:
            raise ValueError(f"level={self.level!r} is not allowed: choose one of {', '.join(LEVELS)}")


def _who(result) -> str:
    c = result.config
    kind = cell_type(c.cell)
    return f"{kind.label} ({c.activation})" if "activation" in kind.settings else kind.label


def _first(result, t0: float) -> str:
    """||dL/dh_0|| / ||dL/dh_{T-1}|| as "1.6e-22"; from the exact log10 chain where the float ratio underflowed to 0
    (T = 2000: "4.0e-400", not "0.0e+00")."""
    lg = getattr(result.grad, "log10_grad_norm", None)
    if t0 > 0 or lg is None or not (math.isfinite(lg[0]) and math.isfinite(lg[-1])):
        return f"{t0:.1e}"
    e = float(lg[0] - lg[-1])  # log10 of the ratio
    m, x = 10 ** (e - math.floor(e)), math.floor(e)
    if round(m, 1) >= 10:  # 9.96 -> "1.0e(x+1)"
        m, x = m / 10, x + 1
    return f"{m:.1f}e{x:+03d}"


def _gradient_alerts(result, who: str) -> list[Alert]:
    g = np.asarray(result.grad.grad_norm, dtype=float)
    T = len(g)
    if T < 2:
        return []
    ref = g[-1]
    if not math.isfinite(ref) or ref <= 0:
        return []
    out = []
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = g / ref
    small = np.nonzero(np.isfinite(ratio) & (ratio < VANISH_RATIO))[0]
    if small.size:
        t = int(small.max())  # the latest step (smallest lag) where it is already below
        lag = T - 1 - t
        t0 = _first(result, ratio[0])
        out.append(Alert("warning", (
            f"{who}: the gradient vanishes. At t={t} (lag {lag} before the last step) ||dL/dh_t|| is below one "
            f"millionth of its value at the last step, and at t=0 it is {t0} times that value: the early "
            f"steps get practically no learning signal."), "vanishing"))
    big = np.nonzero(np.isfinite(ratio) & (ratio > EXPLODE_RATIO))[0]
    if big.size:
        t = int(big.max())
        lag = T - 1 - t
        t0 = ratio[0]
        out.append(Alert("warning", (
            f"{who}: the gradient explodes. At t={t} (lag {lag} before the last step) ||dL/dh_t|| is over a million "
            f"times its value at the last step" + (f", and at t=0 {t0:.1e} times" if math.isfinite(t0) else "")
            + ": updates would be dominated by the earliest steps; gradient clipping keeps the step bounded."),
            "exploding"))
    return out


def _truncation_alerts(result, who: str) -> list[Alert]:
    """What truncated BPTT (``truncate`` = k) does to this loss's gradient, read from ``result.truncated``."""
    tr = getattr(result, "truncated", None)
    k = int(getattr(result.config, "truncate", 0) or 0)
    if tr is None or not k:
        return []
    g = np.asarray(tr.grad_norm, dtype=float)
    T = len(g)
    cut = T - k
    if cut <= 0:
        return [Alert("info", f"{who}: truncated BPTT with k={k} ≥ T={T} cuts nothing: it is full BPTT here.",
                      "truncated")]
    if np.all(g[:cut] == 0):
        return [Alert("info", (
            f"{who}: truncated BPTT with k={k}: ||dL/dh_t|| is exactly 0 for t < {cut} = T-k (the gradient stops "
            f"at the cut); those {cut} steps get no learning signal from this loss."), "truncated")]
    return [Alert("info", (
        f"{who}: truncated BPTT with k={k}: the gradient is cut every {k} steps, so each step learns only from "
        "the losses inside its own window."), "truncated")]


def alerts(result, name: str | None = None) -> list[Alert]:
    """Alerts about one ExperimentResult, most severe first; ``name`` (e.g. "LSTM · forget_bias=0") begins each
    message (default: the cell, and the RNN's activation)."""
    out: list[Alert] = []
    who = name or _who(result)
    nf = result.nonfinite
    if nf:
        out.append(Alert("error", f"{who}: a NaN or infinite value appeared: {describe_nonfinite(nf)}. "
                                  "Numbers after that point are not meaningful; lower init_scale, use a "
                                  "saturating activation or float64.", "nonfinite"))
    out += _gradient_alerts(result, who)
    out += _truncation_alerts(result, who)
    sat = result.saturation or {}
    h_sat = sat.get("h_saturated")
    if h_sat is not None and h_sat > SATURATION_FRACTION:
        what = "|h| > 0.99" if result.config.activation == "tanh" else "h within 0.01 of 0 or 1"
        out.append(Alert("warning", f"{who}: {100 * h_sat:.0f}% of the hidden units are saturated ({what}) over the "
                                    "sequence; there phi' is nearly 0, so the gradient through them vanishes.",
                         "saturated"))
    for gate in ("f", "i", "o", "z", "r"):
        v = sat.get(f"{gate}_saturated")
        if v is not None and v > SATURATION_FRACTION:
            out.append(Alert("warning", f"{who}: the {gate} gate is within 0.01 of 0 or 1 for {100 * v:.0f}% of "
                                        "(unit, step) pairs: a saturated gate passes no gradient to its own weights.",
                             "saturated"))
    dead = sat.get("dead_units")
    if dead is not None and dead > DEAD_FRACTION:
        out.append(Alert("warning", f"{who}: {100 * dead:.0f}% of the ReLU units never switch on in this sequence "
                                    "(dead units): they pass no gradient at all.", "dead"))
    for note in result.notes or []:
        out.append(Alert("info", f"{who}: {note}", "note"))
    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(out, key=lambda a: order[a.level])


def said_once(messages) -> list[str]:
    """[(run key, "who: text")] of several runs -> ["who, who2: text"], each text once, in first-seen order.

    A text said by several runs of one cell (a variant's run repeating its base run's note: "lru_r_min applies to
    the LRU only; ignored for rnn") names that cell once, as its first run said it; a text said only by a
    variant's run names that run ("RNN · layer_norm=true"). Runs are told apart by their key's cell, the part
    before " · "."""
    grouped: dict[str, dict[str, str]] = {}
    for key, message in messages:
        who, _, text = str(message).partition(": ")
        grouped.setdefault(text, {}).setdefault(str(key).split(SEP)[0], who)
    return [f"{', '.join(names.values())}: {text}" for text, names in grouped.items()]


def training_alerts(history: dict | None, stopped: dict | None, name: str = "") -> list[Alert]:
    """NaN/Inf during training: the step and the place, and whether the run stopped."""
    who = f"{name}: " if name else ""
    out = []
    if stopped:
        out.append(Alert("error", f"{who}training stopped at step {stopped.get('step', '?')}: a NaN or infinite "
                                  f"value appeared in the {describe_nonfinite(stopped)}. Reset, then lower the "
                                  "learning rate or turn on gradient clipping.", "training"))
        return out
    if not history:
        return out
    steps = np.asarray(history.get("step", []))
    nf = history.get("nonfinite")
    bad = []
    if nf is not None:
        bad = [(int(s), d) for s, d in zip(steps, nf) if d]
    else:
        loss = np.asarray(history.get("loss", []), float)
        gb = np.asarray(history.get("grad_norm_before", []), float)
        bad = [(int(s), {"quantity": "loss or gradient"}) for i, s in enumerate(steps)
               if (i < len(loss) and not np.isfinite(loss[i])) or (i < len(gb) and not np.isfinite(gb[i]))]
    if bad:
        s, d = bad[0]
        more = f" ({len(bad)} steps in all, skipped)" if len(bad) > 1 else " (the update was skipped)"
        out.append(Alert("warning", f"{who}a NaN or infinite value appeared at step {s} in the "
                                    f"{describe_nonfinite(d)}{more}.", "training"))
    return out


__all__ = ["Alert", "alerts", "training_alerts", "said_once", "VANISH_RATIO", "EXPLODE_RATIO"]
