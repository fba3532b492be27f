"""The spectra computed without a full SVD, against svdvals: sigma_max from the Gram matrix (the exact route for
the blocks of which only sigma_max is shown) and spectra="fast" (warm-started block subspace iteration with a
residual certificate, analysis.power), within their stated tolerances."""
import numpy as np
import pytest
import torch


# ---- jacobian_products(spectra="fast"): the LSTM state's sigma_max by block subspace iteration on the formed
# products, within its stated tolerance (the config's spectra="fast" now picks the cheaper of the thin route and
# the exact one: tests/test_thin_sigma.py) ----
@pytest.mark.parametrize("kw", [{}, {"peephole": True}, {"layer_norm": True}, {"peephole": True, "layer_norm": True},
                                {"init": "orthogonal"}, {"init_scale": 3.0}, {"init": "chrono", "task": "adding"},
                                {"hidden_size": 40, "init_scale": 0.5}])
def test_fast_sigma_max_within_tolerance_of_exact(kw):
    from analysis import ExperimentConfig
    from analysis.experiment import TaskModel, resolve
    from analysis.gradient_stage import _detached
    from analysis.jacobians import jacobian_products, report_lags
    base = dict(cell="lstm", seq_len=60, hidden_size=12, batch_size=3, dtype="float64")
    base.update(kw)
    cfg, batch, _ = resolve(ExperimentConfig(**base))
    with torch.no_grad():
        trace, _ = TaskModel(cfg, batch.spec, cfg.input_size)(batch.inputs)
    run = _detached(trace.runs[0][0])
    lags = report_lags(cfg.seq_len)
    ex = jacobian_products(run, lags=lags, spectra="exact")
    fa = jacobian_products(run, lags=lags, spectra="fast")
    tol = fa.extras["sigma_max_estimate"]["tested_rtol"]
    np.testing.assert_allclose(fa.state_spectral_norm, ex.state_spectral_norm, rtol=0, atol=np.log10(1 + tol))
    np.testing.assert_array_equal(fa.singular_values, ex.singular_values)  # h->h stays exact
    np.testing.assert_array_equal(fa.cell_full, ex.cell_full)  # c->c stays exact
    assert "block subspace iteration" in fa.extras["sigma_max_estimate"]["method"]


@pytest.mark.parametrize("seed", range(4))
def test_block_iteration_on_random_matrices(seed):
    from analysis.power import RTOL, sigma_max_block
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(5, 40, 40, generator=g, dtype=torch.float64) * torch.logspace(0, -3, 40, dtype=torch.float64)
    s, U, ok = sigma_max_block(M, None)
    ref = torch.linalg.svdvals(M)[:, 0]
    assert bool((s <= ref * (1 + 1e-12)).all())  # a Ritz value: always a lower bound
    assert bool(ok.all())
    np.testing.assert_allclose(s.numpy(), ref.numpy(), rtol=RTOL)
    s2, _, ok2 = sigma_max_block(M, U)  # warm start from the converged block: settles at once
    assert bool(ok2.all())
    np.testing.assert_allclose(s2.numpy(), ref.numpy(), rtol=RTOL)


def test_spectra_threads_device_fields_validate():
    from analysis import ExperimentConfig
    from rnn_models.config import ConfigError
    for bad in ({"spectra": "quick"}, {"threads": -1}, {"device": "tpu"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            ExperimentConfig(**bad)


@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_sigma_max_from_the_gram_is_exact_to_rounding(dtype, rtol):
    """sigma_max from the Gram's largest eigenvalue (analysis.jacobians._log10_sigma_max) against float64 svdvals
    of the same matrices: products with singular values spread over 12 decades, and an exactly zero matrix."""
    from analysis.jacobians import _log10_sigma_max
    g = torch.Generator().manual_seed(0)
    U = torch.linalg.qr(torch.randn(6, 96, 96, generator=g, dtype=torch.float64)).Q
    V = torch.linalg.qr(torch.randn(6, 96, 96, generator=g, dtype=torch.float64)).Q
    s = torch.logspace(0, -12, 96, dtype=torch.float64)
    M = (U * s) @ V.mT
    M[-1] = 0.0
    M = M.to(dtype)
    shift = torch.linspace(-50, 50, 6, dtype=torch.float64)
    got = _log10_sigma_max(M, shift)
    ref = torch.log10(torch.linalg.svdvals(M.double())[:, 0]) + shift / np.log(10)
    np.testing.assert_allclose(got[:-1].numpy(), ref[:-1].numpy(), rtol=0, atol=np.log10(1 + rtol))
    assert got[-1] == -np.inf  # a zero product: -inf, as svdvals gives
