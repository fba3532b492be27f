r"""The built-in trainer's run as a watched run: the Live training on the same timeline as ``analysis.watch``.

``Trainer`` (analysis.training) records at every step the loss, the clipping and the per-time-step total
||dL/dh_t|| of the analysed layer (geometric mean over the batch, from the same backward pass as the update),
and every ``radius_every`` steps a probe made here:

    probe_trace(run, threshold, num_lags)
        log10 sigma_max of d h_{T-1} / d h_{T-1-k} at about ``num_lags`` log-spaced lags k, on the step's first
        sequence (the h->h block, exact svdvals), the memory horizon (first lag with sigma_max < threshold), and
        the eigenvalues of every gate block of W_hh (a cell without W_hh: those of its fixed recurrence, the LRU's
        lambda; none for a recurrence whose factor depends on x_t, minGRU/minLSTM)

what ``Watch.probe`` records for a watched module. ``trainer_run(trainer, name)`` turns the records into the
``RunData`` that ``load_run`` gives, so ``analysis.figures.timeline`` draws the two alike.

Shapes: steps (N,), log10 grad norm (N, T) per layer, probe lags (K,).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .jacobians import jacobian_products, report_lags
from .run_files import FORMAT, VERSION, LayerDict, RunData

PROBE_LAGS = 12  # log-spaced lags of a probe (always 0, 1 and T-1), as analysis.watch's default


def layer_name(layer: int) -> str:
    return f"layer {layer}"


@torch.no_grad()
def probe_trace(run, threshold: float, num_lags: int = PROBE_LAGS) -> dict:
    """{"lags", "log10_sigma_max", "horizon", "eigenvalues", "messages"} of one layer's forward run (its first
    sequence) and its cell's recurrence (W_hh's gate blocks, or the fixed eigenvalues of a cell without W_hh).
    Non-finite weights or states are skipped and said: LAPACK must never see a NaN (it aborts the process)."""
    T = len(run.xp)
    lags = report_lags(T, "log", num_lags)
    out = {"lags": lags, "log10_sigma_max": None, "horizon": None, "eigenvalues": None, "messages": []}
    Ws = {g: W.detach().double().cpu() for g, W in run.cell.recurrent_blocks().items()}
    if all(bool(torch.isfinite(W).all()) for W in Ws.values()):
        eig = {g: torch.linalg.eigvals(W) for g, W in Ws.items()} or run.cell.recurrent_eigenvalues()
        out["eigenvalues"] = {g: e.detach().cpu().to(torch.complex128).numpy() for g, e in eig.items()}
        if not all(np.isfinite(e).all() for e in out["eigenvalues"].values()):
            out["eigenvalues"] = None
    if out["eigenvalues"] is None:
        out["messages"].append("the recurrence is not finite: eigenvalues skipped")
    states_ok = all(bool(torch.isfinite(s[:1]).all()) for st in run.states for s in st)
    if not states_ok or out["eigenvalues"] is None:
        out["messages"].append("weights or states not finite: sigma_max and horizon skipped")
        return out
    jac = jacobian_products(run, lags=lags, batch=1, n_singular=1, lyapunov_k=0, threads=1)
    sn = np.asarray(jac.spectral_norm, dtype=float)
    below = np.nonzero(sn < math.log10(threshold))[0]
    out["log10_sigma_max"] = sn
    out["horizon"] = int(jac.lag[below[0]]) if len(below) else None
    return out


def trainer_run(trainer, name: str) -> RunData:
    """The trainer's records as a ``RunData`` (one layer: the analysed one), for ``timeline_figures``."""
    c = trainer.config
    lk = layer_name(c.analysed_layer)
    recs = trainer.records
    header = {"format": FORMAT, "version": VERSION, "layers": [lk], "every": trainer.radius_every,
              "horizon_threshold": c.horizon_threshold, "source": "Live training (analysis.training.Trainer)",
              "modules": {"net": {"cell": c.cell, "hidden_size": c.hidden_size, "num_layers": c.num_layers}}}
    T = max([len(r.grad_norm_t) for r in recs] + [0])
    with np.errstate(divide="ignore", invalid="ignore"):
        lg = np.array([np.log10(np.asarray(r.grad_norm_t, dtype=float)) for r in recs]).reshape(len(recs), T)
    lg[~np.isfinite(lg)] = np.nan  # as run files store them: a non-finite value is missing
    probes = [(r.step, r.probe) for r in recs if getattr(r, "probe", None) is not None]
    lags = np.array(probes[-1][1]["lags"] if probes else [], dtype=float)
    K = len(lags)

    def sig(p):
        v = p["log10_sigma_max"]
        return np.full(K, np.nan) if v is None or len(v) != K else np.asarray(v, dtype=float)

    notes = [{"step": r.step, "grad_norm": r.grad_norm_before, "clipped": bool(r.clipped),
              **({"changed": ", ".join(r.changed)} if r.changed else {})} for r in recs]
    messages = list(dict.fromkeys(m for _, p in probes for m in p["messages"]))
    return RunData(
        name=name, header=header, steps=np.array([r.step for r in recs], dtype=int),
        loss=np.array([np.nan if r.loss is None else r.loss for r in recs], dtype=float),
        log10_grad_norm=LayerDict({lk: lg}), probe_steps=np.array([s for s, _ in probes], dtype=int), lags=lags,
        log10_sigma_max=LayerDict({lk: np.array([sig(p) for _, p in probes]).reshape(len(probes), K)}),
        horizon=LayerDict({lk: np.array([np.nan if p["horizon"] is None else p["horizon"] for _, p in probes],
                                        dtype=float)}),
        eigenvalues=LayerDict({lk: [p["eigenvalues"] or {} for _, p in probes]}), notes=notes, messages=messages)


__all__ = ["probe_trace", "trainer_run", "layer_name", "PROBE_LAGS"]
