r"""Which route computes the Jacobian spectra of a run, and the note that says so.

    spectra="exact"   the formed products P_k = P_{k-1} J_{T-k} and an SVD per reported lag
                      (analysis.jacobians.jacobian_products): sigma_max, sigma_min and the top singular values
    spectra="fast"    sigma_max by lag without forming the products (analysis.thin_sigma: thin block subspace
                      iteration through the closed-form VJP/JVP step chains), where its estimated time is below the
                      exact route's (thin_sigma.route_seconds: the counted flops weighted by their measured seconds
                      per flop, the thin sweeps' slowest measured rate); else the exact route itself, so "fast" is
                      never slower than "exact" (measured: benchmarks/bench_own_model_lm.py --spectra). The thin
                      route reports sigma_max of every block (h->h,
                      and for the LSTM c->c and [h; c]) within its tested tolerance; sigma_min and the top singular
                      values are not computed (NaN / JSON null), and the notes say so.
"""
from __future__ import annotations

from .jacobians import JacobianResult, jacobian_products
from .thin_sigma import thin_is_cheaper, thin_jacobians


def uses_thin(config, run, lags: list[int]) -> bool:
    if config.spectra != "fast" or getattr(run.cell, "diagonal", False):  # diagonal: exact and O(T H) anyway
        return False
    T, B = len(run.xp), run.xp[0].shape[0]
    b = B if config.jacobian_batch in (0, None) else min(config.jacobian_batch, B)
    return thin_is_cheaper(config.cell, config.hidden_size, T, lags, b, dense=bool(run.cell.layer_norm))


def spectra_of(run, config, lags: list[int], progress=None) -> JacobianResult:
    """The JacobianResult of one run (one layer, one direction) by the route ``config.spectra`` picks."""
    if uses_thin(config, run, lags):
        return thin_jacobians(run, lags=lags, batch=config.jacobian_batch, lyapunov_k=config.lyapunov_k)
    return jacobian_products(run, lags=lags, batch=config.jacobian_batch, n_singular=config.n_singular,
                             lyapunov_k=config.lyapunov_k, progress=progress, spectra="exact",
                             threads=config.threads)


def route_note(config, jac: JacobianResult | None) -> str | None:
    if jac is None or config.spectra != "fast":
        return None
    e = jac.extras.get("sigma_max_estimate")
    if e is None:
        return "spectra fast: the exact route (formed products, svdvals) was estimated cheaper at this size: exact"
    return (f"spectra fast: sigma_max by lag ({', '.join(e['quantities'])}) by thin block subspace iteration through "
            f"the step chains, without forming the products (within {e['tested_rtol']:g} relative of svdvals as "
            f"tested; {e['iterations']} iterations, {e['unconverged']} lags not settled to {e['change_rtol']:g}); "
            "sigma_min and the top singular values were not computed (jacobian_detail='exact' or spectra='exact')")
