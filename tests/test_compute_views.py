"""What an analysis computes (views), the Jacobian detail it runs at, and the cost check on a user's real shapes
(analysis.compute_views, analysis.own_model.check_own; issue 18 items 1 and 3)."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from analysis import ExperimentConfig, analyze, compute_views, limits, run_experiment
from analysis.limits import LimitExceeded, Limits
from analysis.own_model import check_own
from rnn_models.config import ConfigError

SMALL = dict(cell="lstm", hidden_size=6, seq_len=10, batch_size=3, dtype="float64")


@pytest.mark.parametrize("views,want", [(None, compute_views.VIEW_NAMES), ("all", compute_views.VIEW_NAMES),
                                        ("gradient-flow", ("gradients",)),
                                        ("jacobians, gradients", ("gradients", "jacobians")),
                                        (["cell-state"], ("cell-state",))])
def test_parse_views(views, want):
    assert compute_views.parse_views(views) == want


@pytest.mark.parametrize("bad", ["gradient", "gradients,,x", ""])
def test_bad_views_one_line(bad):
    with pytest.raises(ConfigError) as e:
        compute_views.parse_views(bad)
    assert "\n" not in str(e.value) and "views" in str(e.value)


def test_gradients_view_skips_the_jacobians_and_eigensolvers_same_numbers():
    full = run_experiment(ExperimentConfig(**SMALL))
    g = run_experiment(ExperimentConfig(**SMALL), views="gradients")
    assert g.jac is None and g.memory_horizon is None and g.spectra == {} and g.views == ("gradients",)
    np.testing.assert_array_equal(g.grad.grad_norm, full.grad.grad_norm)
    np.testing.assert_array_equal(g.grad.cell_grad_norm, full.grad.cell_grad_norm)
    d = g.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["views"] == ["gradients"] and d["jacobian"] is None and d["spectral_radius"] is None
    assert "not computed" in repr(g)
    both = run_experiment(ExperimentConfig(**SMALL), views="gradients,jacobians")
    np.testing.assert_array_equal(both.jac.spectral_norm, full.jac.spectral_norm)
    assert both.spectra  # the jacobians view draws the Pascanu bound from sigma_max(W_hh)


def _lstm_model(H=8):
    torch.manual_seed(0)
    return nn.LSTM(3, H, num_layers=1)


def test_auto_light_above_the_size_exact_one_setting_away(monkeypatch):
    model, x = _lstm_model(), torch.randn(40, 6, 3)
    exact = analyze(model, x, dtype="float64")  # tiny: auto stays exact
    assert exact.config.jacobian_detail == "exact" and exact.jac.batch_analysed == 6 and len(exact.jac.lag) == 40
    monkeypatch.setattr(compute_views, "AUTO_LIGHT_SECONDS", 0.0)  # every model is "above the size" now
    light = analyze(model, x, dtype="float64", num_log_lags=8)
    c = light.config
    assert (c.jacobian_detail, c.jacobian_lags, c.jacobian_batch) == ("light", "log", 4)
    assert light.jac.batch_analysed == 4 and len(light.jac.lag) < 40
    assert any("light Jacobian settings" in n and "jacobian_detail='exact'" in n for n in light.notes)
    again = analyze(model, x, dtype="float64", jacobian_detail="exact")
    assert again.config.jacobian_detail == "exact" and again.jac.batch_analysed == 6
    np.testing.assert_allclose(again.jac.spectral_norm, exact.jac.spectral_norm, rtol=1e-12)
    # light values are the exact ones at the lags and sequences they cover
    sub = analyze(model, x[:, :4], dtype="float64", jacobian_lags="log", num_log_lags=8)
    np.testing.assert_allclose(light.jac.spectral_norm, sub.jac.spectral_norm, rtol=1e-12)


def test_api_checks_the_real_shapes():
    model = _lstm_model(96)
    x = torch.randn(1000, 4, 3)  # the config's defaults (T=100, B=16) would pass; the inputs' shape does not
    shape = dict(cell="lstm", hidden_size=96, input_size=3)
    cfg_default = limits.estimate(ExperimentConfig(**shape))
    real = ExperimentConfig(**shape, seq_len=1000, batch_size=4, jacobian_detail="exact")
    grads_only = limits.estimate(real, only="gradients")
    limit = 1.2 * max(cfg_default.gflop, grads_only.gflop)
    assert limits.estimate(real).gflop > 1.5 * limit
    limits.configure(Limits(max_memory_mb=None, max_gflop=limit))
    try:
        with pytest.raises(LimitExceeded) as e:
            analyze(model, x, jacobian_detail="exact")
        msg = str(e.value)
        assert "\n" not in msg and "T=1000" in msg and "GFLOP" in msg and "views='gradients'" in msg
        check_own(real, "gradients")  # the way down it names (about one forward+backward) passes the check
    finally:
        limits.configure(None)


def test_cli_checks_the_inputs_file_and_prints_the_estimate(tmp_path, cli_inproc, monkeypatch):
    for k in ("GDLAB_LIMITS", "GDLAB_MAX_MEMORY_MB"):  # only the arithmetic limit, as the host would set it
        monkeypatch.delenv(k, raising=False)
    model = _lstm_model(96)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((1000, 4, 3)))
    base = ["run", "--load-state-dict", tmp_path / "m.pt", "--inputs", tmp_path / "x.npy", "--jacobian-detail",
            "exact"]  # python -m analysis, its main() in this process (conftest.run_main)
    env = {"GDLAB_MAX_GFLOP": "150"}  # above the config's defaults, below the file's real shape
    p = cli_inproc(*base, env=env)
    assert p.returncode == 2 and "T=1000" in p.stderr and "GFLOP" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    # a run estimated above ~10 s says its estimate first (here: a small file, the threshold lowered to 0 s)
    monkeypatch.setattr(compute_views, "PRINT_ABOVE_SECONDS", 0.0)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((20, 2, 3)))
    p = cli_inproc(*base, "--views", "gradients")
    assert p.returncode == 0, p.stderr
    assert "estimate:" in p.stderr and "GFLOP" in p.stderr and "GFLOP/s" in p.stderr


def test_memory_horizon_says_its_resolution_and_sequences():
    cfg = ExperimentConfig(cell="rnn", hidden_size=16, seq_len=120, batch_size=6, init="orthogonal", init_scale=0.9,
                           dtype="float64")
    exact = run_experiment(cfg)
    d = exact.horizon_detail
    assert d["exact"] and d["lag"] == exact.memory_horizon and "from all 6 sequences" in d["text"]
    assert f"lag {exact.memory_horizon}," in d["text"] and "exact:" not in d["text"]
    light = run_experiment(cfg.replace(jacobian_lags="log", num_log_lags=12, jacobian_batch=4))
    ld = light.to_dict()["memory_horizon_detail"]
    lags = light.jac.lag
    assert not ld["exact"] and "from 4 of 6 sequences" in ld["text"] and "jacobian_batch=0" in ld["text"]
    if ld["lag"] is not None and ld["after_lag"] is not None and ld["after_lag"] < ld["lag"] - 1:
        assert f"between lags {ld['after_lag'] + 1} and {ld['lag']} (log-spaced lags)" in ld["text"]
        assert ld["after_lag"] in lags and ld["lag"] in lags
        # the exact horizon of the same 4 sequences lies in that interval
        sub = run_experiment(cfg.replace(jacobian_batch=4))
        assert ld["after_lag"] < sub.memory_horizon <= ld["lag"]
    assert "memory horizon" in repr(light) and ld["text"].split(": ", 1)[1] in repr(light)
