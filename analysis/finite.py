r"""Non-finite values kept away from LAPACK, and said in the result.

LAPACK-backed calls (eigvals, eigh, svd, qr) must never see a NaN or an Inf: oneMKL's DGEBAL aborts the whole
process on one (exit 134, or SIGSEGV), which on a server takes every visitor down. Every linalg call of the
analysis goes through the wrappers here, which check their input first, per matrix of a batch (b, n, m):

    finite matrices      -> the call, as torch computes it
    a non-finite matrix  -> NaN outputs for that matrix (the others computed as usual); the call never sees it

and ``input_notes`` names the non-finite entries of what the analysis was given (the weights under torch's
names, the inputs, the initial states) in the result's notes, e.g. "weight_hh_l0: 1 NaN at [3, 7]".

``sigma_max_sq`` (the largest eigenvalue of the Gram matrix M^T M, a symmetric eigensolver) falls back to
svdvals(M)[0]^2, the same number by another algorithm, where the eigensolver does not converge: a float32
product whose Gram matrix spans more than float32's range (an LSTM with init=spectral, init_scale=100 at
every lag) made ``linalg.eigh`` raise "failed to converge". The other calls retry a float32 matrix LAPACK
does not converge on in float64; where that fails too, ``NumericalFailure`` (a ValueError: one line naming
init_scale and dtype, the settings that make such matrices) instead of the engine's words.
"""
from __future__ import annotations

import torch
from torch import Tensor

LISTED = 3  # positions named per kind of value


# ---- notes --------------------------------------------------------------------------------------------------
def _positions(mask: Tensor, limit: int) -> str:
    idx = mask.nonzero()[:limit].tolist()
    return ", ".join("[" + ", ".join(map(str, i)) + "]" for i in idx)


def describe(t: Tensor, name: str, limit: int = LISTED) -> str | None:
    """'name: 1 NaN at [3, 7]', 'name: 4 NaN (first at [0, 1], [0, 2], [2, 5]), 1 Inf at [3]'; None if finite."""
    if not torch.is_tensor(t) or not (t.is_floating_point() or t.is_complex()):
        return None
    if bool(torch.isfinite(t).all()):
        return None
    parts = []
    for kind, mask in (("NaN", torch.isnan(t)), ("Inf", torch.isinf(t))):
        n = int(mask.sum())
        if n == 1:
            parts.append(f"1 {kind} at {_positions(mask, 1)}")
        elif n:
            parts.append(f"{n} {kind} (first at {_positions(mask, limit)})")
    return f"{name}: " + ", ".join(parts)


def _named_weights(model) -> dict[str, Tensor]:
    """The model's weights under torch's names where it has them (weight_hh_l0, ...), else its own."""
    net = getattr(model, "net", None)
    out = dict(net.torch_named_parameters()) if hasattr(net, "torch_named_parameters") else {}
    for name, p in model.named_parameters():
        if not name.startswith("net."):
            out[name] = p
    return out


def input_notes(model, inputs: Tensor | None = None, initial=None) -> list[str]:
    """One note naming every non-finite entry of the model's weights, the inputs and the initial states
    (empty when all are finite)."""
    found = [describe(p.detach(), n) for n, p in _named_weights(model).items()]
    if inputs is not None:
        found.append(describe(inputs, "inputs"))
    for l, layer in enumerate(initial or ()):
        for d, state in enumerate(layer):
            for i, s in enumerate(state):
                found.append(describe(s, f"initial {'hc'[i]}{'_reverse' if d else ''} of layer {l}"))
    found = [f for f in found if f]
    if not found:
        return []
    return ["non-finite values given: " + "; ".join(found) + ". What reads them (states, gradients, Jacobian "
            "products, spectra, Lyapunov exponents) is NaN where they reach it; no LAPACK call was given them"]


# ---- guarded LAPACK calls -----------------------------------------------------------------------------------
def _bad(M: Tensor) -> Tensor | None:
    """Per matrix of a batch (..., n, m): True where it holds a non-finite entry; None if all are finite.

    First one sum (a NaN or an Inf anywhere makes it non-finite): a fraction of an elementwise isfinite, which
    runs only when the sum is not finite (or finite entries overflowed it: then the same answer, slower)."""
    if M.numel() == 0 or bool(torch.isfinite(M.sum())):
        return None
    ok = torch.isfinite(M).flatten(-2).all(-1)
    return None if bool(ok.all()) else ~ok


def _fill(out, bad: Tensor):
    if isinstance(out, tuple):  # torch's return types (Q, R), (U, S, Vh) are tuples built from a sequence
        return type(out)(tuple(_fill(o, bad) for o in out))
    out = out.clone()
    if out.is_floating_point() or out.is_complex():
        out[bad] = float("nan")
    return out


class NumericalFailure(ValueError):
    """A LAPACK routine did not converge on finite input, in float64 too: one line naming the settings."""


def _converging(fn, M: Tensor, *args, **kwargs):
    """``fn(M)``; where LAPACK does not converge on a float32 M, again in float64 (cast back); where float64 fails
    too, NumericalFailure naming the settings that make matrices that ill-conditioned."""
    try:
        return fn(M, *args, **kwargs)
    except torch.linalg.LinAlgError as e:
        first = e
    if M.dtype in (torch.float32, torch.complex64):
        try:
            out = fn(M.double() if M.dtype == torch.float32 else M.cdouble(), *args, **kwargs)
            return _cast(out, M.dtype)
        except torch.linalg.LinAlgError:
            pass
    what = " ".join(str(first).split())[:160]
    raise NumericalFailure(
        f"the analysis stopped: LAPACK did not converge on a Jacobian product or weight matrix ({what}). Matrices "
        "this ill-conditioned come from the settings that scale the weights: init_scale (allowed (0, 100]; 1.0, "
        "the default, is well within what converges) with init spectral / orthogonal / identity / xavier: lower "
        "init_scale, or use dtype=float64") from None


def _cast(out, dtype):
    if isinstance(out, tuple):
        return type(out)(tuple(_cast(o, dtype) for o in out))
    if out.is_complex():
        return out.to(torch.complex64 if dtype in (torch.float32, torch.complex64) else out.dtype)
    return out.to(torch.float32) if out.is_floating_point() else out


def guarded(fn, M: Tensor, *args, **kwargs):
    """``fn(M, ...)`` with every non-finite matrix of M replaced by zeros before the call and its outputs set to
    NaN after it (the outputs' leading dimensions are M's batch dimensions); a float32 M that LAPACK does not
    converge on is retried in float64, and NumericalFailure (a ValueError, one line) if that fails too."""
    bad = _bad(M)
    if bad is None:
        return _converging(fn, M, *args, **kwargs)
    if M.dim() == 2:
        return _fill(_converging(fn, torch.zeros_like(M), *args, **kwargs), torch.ones((), dtype=torch.bool))
    clean = torch.where(bad[..., None, None], torch.zeros((), dtype=M.dtype), M)
    return _fill(_converging(fn, clean, *args, **kwargs), bad)


def svdvals(M: Tensor) -> Tensor:
    return guarded(torch.linalg.svdvals, M)


def svd(M: Tensor, full_matrices: bool = False):
    return guarded(torch.linalg.svd, M, full_matrices=full_matrices)


def eigvals(M: Tensor) -> Tensor:
    return guarded(torch.linalg.eigvals, M)


def qr(M: Tensor):
    return guarded(torch.linalg.qr, M)


def sigma_max_sq(M: Tensor) -> Tensor:
    """sigma_max(M)^2 per matrix of M (b, n, m): the largest eigenvalue of M^T M, or svdvals(M)[0]^2 where the
    symmetric eigensolver does not converge or the Gram matrix overflows (see the module docstring); NaN for a
    non-finite matrix. One check in the common case: a finite Gram matrix means a finite M."""
    G = M.mT @ M
    bad_g = _bad(G)
    if bad_g is None:
        try:
            return torch.linalg.eigvalsh(G)[..., -1]
        except torch.linalg.LinAlgError:  # "failed to converge": every matrix of the batch by svdvals
            s = svdvals(M)[..., 0]
            return s * s
    bad_m = _bad_rows(M)
    try:
        lam = _with_nan(torch.linalg.eigvalsh, G)[..., -1]
        redo = bad_g & ~bad_m  # a finite M whose Gram matrix overflowed
    except torch.linalg.LinAlgError:
        lam = torch.full(M.shape[:-2], float("nan"), dtype=M.dtype)
        redo = ~bad_m
    if bool(redo.any()):
        s = svdvals(M[redo])[..., 0]
        lam = lam.clone()
        lam[redo] = (s * s).to(lam.dtype)
    return lam


def _with_nan(fn, M: Tensor):
    """``guarded`` without the retries: a LinAlgError propagates (sigma_max_sq has its own fallback)."""
    bad = _bad(M)
    if bad is None:
        return fn(M)
    return _fill(fn(torch.where(bad[..., None, None], torch.zeros((), dtype=M.dtype), M)), bad)


def _bad_rows(M: Tensor) -> Tensor:
    """_bad as a mask over M's batch dimensions (all False when every matrix is finite)."""
    bad = _bad(M)
    return torch.zeros(M.shape[:-2], dtype=torch.bool) if bad is None else bad
