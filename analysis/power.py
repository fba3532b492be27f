r"""The largest singular value of a batch of matrices without an SVD: warm-started power iteration.

For M (b, n, n) and a unit vector u (b, n), sigma(u) = ||M^T u|| <= sigma_max(M) for every u (a lower bound), and
the iteration u <- M M^T u / ||M M^T u|| converges to the top left singular vector at the rate
(sigma_2 / sigma_1)^2 per step; the estimate sigma(u) converges twice as fast in relative terms.

In a product sweep P_k = P_{k-1} J the top LEFT singular vector of P_k settles (it is the direction state_{T-1}
is most sensitive in), so the previous lag's u is an excellent start: usually 1-3 iterations per lag.

Stopping rule (the stated tolerance): iterate until every sequence's estimate changed by less than ``rtol`` (relative)
in the last iteration, at most ``max_iter`` iterations; sequences that did not settle are reported (``converged``
False) so the caller can fall back to svdvals for them. Cost per iteration: two batched mat-vecs, O(b n^2),
against O(b n^3) for svdvals.

Shape legend: b sequences, n the matrix side.
"""
from __future__ import annotations

import torch
from torch import Tensor

RTOL = 1e-7  # per-iteration relative change at which the estimate is accepted
MAX_ITER = 300


def sigma_max_power(M: Tensor, u: Tensor | None, *, rtol: float = RTOL, max_iter: int = MAX_ITER):
    """(sigma (b,) float64, u (b, n) the warm start for the next call, converged (b,) bool).

    u None starts from the all-ones vector (plus the matrix's largest-norm row direction would also do)."""
    b, n, _ = M.shape
    Md = M.double()  # the iteration in float64: the estimate's rounding stays far below rtol
    if u is None:
        u = torch.ones(b, n, dtype=torch.float64, device=M.device)
    u = u.double()
    u = u / torch.linalg.vector_norm(u, dim=-1, keepdim=True).clamp_min(1e-300)
    w = (Md.mT @ u.unsqueeze(-1)).squeeze(-1)  # (b, n) = M^T u
    sigma = torch.linalg.vector_norm(w, dim=-1)  # (b,)
    converged = torch.zeros(b, dtype=torch.bool, device=M.device)
    for _ in range(max_iter):
        v = (Md @ w.unsqueeze(-1)).squeeze(-1)  # (b, n) = M M^T u
        nv = torch.linalg.vector_norm(v, dim=-1)
        u = torch.where(nv.unsqueeze(-1) > 0, v / nv.clamp_min(1e-300).unsqueeze(-1), u)
        w = (Md.mT @ u.unsqueeze(-1)).squeeze(-1)
        new = torch.linalg.vector_norm(w, dim=-1)
        converged = (new - sigma).abs() <= rtol * new.clamp_min(1e-300)
        sigma = torch.maximum(sigma, new)  # every iterate is a lower bound: keep the best
        if bool(converged.all()):
            break
    return sigma, u, converged
