"""The watch's probe (analysis.watch, every ``every`` steps): Jacobian sigma_max by lag, the memory horizon and the
W_hh eigenvalues per gate block, at a snapshot's weights, on its batch's first sequence.

Nothing non-finite reaches LAPACK (it aborts the process): a probe whose weights, inputs or states are not finite is
skipped and said; a LAPACK failure is said, never raised.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from rnn_models.cells import cell_type

from .jacobians import jacobian_products, report_lags
from .own_model import _module_arch, prepare_h0


@torch.no_grad()
def probe_row(step: int, snaps: dict, layers: list[str], num_lags: int, threshold: float) -> dict:
    """One line of probes.jsonl: per layer (``layers``: the run's layer names, in the modules' order) sigma_max of
    d h_{T-1} / d h_{T-1-k} at ``num_lags`` log-spaced lags on the snapshot's first sequence, the memory horizon
    (first lag below ``threshold``) and the W_hh eigenvalues per gate block; what failed is said in "messages",
    never raised."""
    sig, hz, eig, lags, msgs = {}, {}, {}, [], []
    i = 0
    for name, snap in snaps.items():
        rnn = snap.rnn
        arch, _ = _module_arch(rnn)
        x = _time_major(snap.x, rnn.batch_first)[:, :1]
        net = snap.net  # the engine's network with the step's weights, made on the training thread
        hx = _batched(snap.hx)
        if hx is not None:
            hx = tuple(h[:, :1] for h in hx) if isinstance(hx, tuple) else hx[:, :1]
        initial = None if hx is None else prepare_h0(hx, arch, 1, x.dtype)
        finite = bool(torch.isfinite(x).all()) and all(bool(torch.isfinite(p).all()) for p in rnn.parameters())
        trace = net(x.cpu(), initial) if finite else None
        if trace is not None and not all(bool(torch.isfinite(s).all()) for run in trace.runs
                                         for st in run[0].states for s in st):
            trace = None  # LAPACK must never see a NaN (it aborts the process)
        lags = report_lags(x.shape[0], "log", num_lags)
        for l in range(rnn.num_layers):
            key = layers[i]
            i += 1
            sig[key], hz[key], eig[key] = None, None, None
            try:
                eig[key] = _gate_eigenvalues(getattr(rnn, f"weight_hh_l{l}"), arch["cell"])
            except RuntimeError as e:  # LAPACK failing to converge: said, never raised
                msgs.append(f"probe at step {step}, {key}: eigenvalues failed ({' '.join(str(e).split())[:120]})")
            if trace is None:
                msgs.append(f"probe at step {step}, {key}: weights, inputs or states not finite; skipped")
                continue
            try:
                # spectra="fast": the LSTM's full [h; c] sigma_max (not recorded) by block iteration; the h->h
                # block's sigma_max recorded here stays exact svdvals
                jac = jacobian_products(trace.runs[l][0], lags=lags, batch=1, n_singular=1, lyapunov_k=0,
                                        threads=1, spectra="fast")
                sn = np.asarray(jac.spectral_norm, dtype=float)
                below = np.nonzero(sn < math.log10(threshold))[0]
                sig[key] = sn.tolist()
                hz[key] = int(jac.lag[below[0]]) if len(below) else None
            except (RuntimeError, ValueError) as e:  # e.g. LAPACK failing to converge: said, never raised
                msgs.append(f"probe at step {step}, {key}: failed ({type(e).__name__}: "
                            f"{' '.join(str(e).split())[:160]})")
    row = {"step": step, "lags": lags, "log10_sigma_max": sig, "horizon": hz, "eigenvalues": eig}
    if msgs:
        row["messages"] = msgs
    return row


def _gate_eigenvalues(W: Tensor, cell: str) -> dict | None:
    """{gate: [[re...], [im...]]} of each H x H block of W_hh, 6 significant digits; None if W is not finite
    (LAPACK must never see NaN: it aborts the process)."""
    W = W.detach().double().cpu()
    if not bool(torch.isfinite(W).all()):
        return None
    H = W.shape[1]
    out = {}
    for g, block in zip(cell_type(cell).gate_names, W.split(H, dim=0)):
        ev = torch.linalg.eigvals(block).numpy()
        out[g] = [[float(f"{v:.6g}") for v in ev.real], [float(f"{v:.6g}") for v in ev.imag]]
    return out


def _time_major(t: Tensor, batch_first: bool) -> Tensor:
    """(T, B, .) from the module's layout: (B, T, .) when batch_first; an unbatched (T, .) (torch ignores
    batch_first for it) gains B = 1."""
    if t.dim() == 2:
        return t.unsqueeze(1)
    return t.transpose(0, 1) if batch_first else t


def _batched(hx):
    """torch's h0 as (L*D, B, H) (an unbatched (L*D, H) gains B = 1), a tuple (h0, c0) likewise, or None."""
    if hx is None:
        return None
    if isinstance(hx, tuple):
        return tuple(h.unsqueeze(1) if h.dim() == 2 else h for h in hx)
    return hx.unsqueeze(1) if hx.dim() == 2 else hx
