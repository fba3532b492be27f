"""analysis.presets: every preset is a valid configuration with two lines of what to look for, and each one's
promised effect is really there (quantitative checks on the engine's numbers, seed 0 as in the presets).

The new presets' checks run at their own T and H but skip the Jacobian sweep where only gradients matter
(``FAST``: log-spaced lags, no Lyapunov exponents: the gradient norms do not depend on them). The training claims
that take minutes (truncated-bptt, charlm-text) have a cheap check here and a full one with RUN_SLOW=1.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from analysis.alerts import alerts
from analysis.config import ExperimentConfig
from analysis.experiment import run_comparison, run_experiment
from analysis.presets import DEFAULT_PRESET, PRESETS
from analysis.training import Trainer

FAST = dict(jacobian_lags="log", num_log_lags=6, n_singular=1, lyapunov_k=0)
slow = pytest.mark.skipif(not os.environ.get("RUN_SLOW"), reason="minutes of training: set RUN_SLOW=1")


def kinds(alist):
    return [a.kind for a in alist]


# ---- every preset: valid and well formed ---------------------------------------------------------------------
@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_validates(name):
    p = PRESETS[name]
    assert DEFAULT_PRESET in PRESETS
    assert p.name == name and p.title
    assert isinstance(p.config, ExperimentConfig)
    assert ExperimentConfig.from_json(p.config.to_json()) == p.config  # the JSON round trip validates again
    assert len(p.what_to_look_for.splitlines()) == 2 and all(line.strip() for line in p.lines)
    if p.variant:
        p.config.replace(**p.variant)
    if p.train:
        assert set(p.train) <= {"steps", "variants", "steps_per_tick"}
        for over in p.train.get("variants", {}).values():
            p.config.replace(**over)
    json.dumps(p.train)  # plain data


def test_every_preset_lists_its_cells_in_the_sidebar_order():
    """The sidebar lists the selected cells in the registry's order: a preset in another order would read as
    'settings changed since this preset was chosen' the moment it opens."""
    from rnn_models.config import CELLS
    for p in PRESETS.values():
        assert list(p.config.cells) == [c for c in CELLS if c in p.config.cells], p.name


def test_every_preset_has_an_effect_check():
    assert set(EFFECT_CHECKS) == set(PRESETS), "a new preset needs a check of its effect below"
    assert all(callable(f) and f.__name__.startswith("test_") for f in EFFECT_CHECKS.values())


# ---- the classic presets -------------------------------------------------------------------------------------
def ratio(r):
    g = r.grad.grad_norm
    return g[0] / g[-1]


@pytest.fixture(scope="module")
def default_results():
    return run_comparison(PRESETS["default"].config)


def test_default_preset_one_collapses_the_others_hold(default_results):
    r = default_results
    assert set(r) == {"rnn", "lstm", "gru"}
    assert ratio(r["rnn"]) < 1e-15  # collapses
    assert ratio(r["lstm"]) > 1e-5 and ratio(r["gru"]) > 1e-2  # hold up
    assert r["rnn"].memory_horizon is not None and r["rnn"].memory_horizon < 30
    assert r["lstm"].memory_horizon is None and r["gru"].memory_horizon is None
    assert "vanishing" in kinds(alerts(r["rnn"]))
    assert "vanishing" not in kinds(alerts(r["lstm"])) + kinds(alerts(r["gru"]))


def _run(name, **over):
    return run_experiment(PRESETS[name].config.replace(**over))


def test_vanishing_preset():
    r = _run("vanishing-tanh")
    assert ratio(r) < 1e-15 and "vanishing" in kinds(alerts(r))
    assert r.memory_horizon is not None and r.memory_horizon < 30


def test_exploding_preset():
    r = _run("exploding")
    c = r.config
    assert r.spectra["h"]["sigma_max"] > 1 / 1.0 and c.activation == "linear"
    assert ratio(r) > 1e6 and "exploding" in kinds(alerts(r))


def test_irnn_preset_keeps_the_gradient():
    r = _run("irnn")
    assert 0.1 < ratio(r) <= 1.5
    assert not {"vanishing", "exploding"} & set(kinds(alerts(r)))
    assert abs(r.spectra["h"]["sigma_max"] - 1) < 1e-6


def test_orthogonal_linear_preset_keeps_the_norm_exactly():
    r = _run("orthogonal-linear")
    np.testing.assert_allclose(r.grad.grad_norm / r.grad.grad_norm[-1], 1.0, rtol=1e-4)
    np.testing.assert_allclose(10.0 ** r.jac.singular_values, 1.0, rtol=1e-3)
    assert r.memory_horizon is None


def test_forget_bias_preset_stretches_the_horizon():
    p = PRESETS["forget-bias"]
    one, zero = _run("forget-bias"), _run("forget-bias", **p.variant)
    assert one.config.forget_bias == 1.0 and zero.config.forget_bias == 0.0
    assert ratio(one) > 1e6 * ratio(zero)
    assert one.memory_horizon > 2 * zero.memory_horizon


def test_layer_norm_preset_keeps_the_jacobian_in_range():
    p = PRESETS["layer-norm"]
    ln, raw = _run("layer-norm"), _run("layer-norm", **p.variant)
    assert ln.config.layer_norm and not raw.config.layer_norm
    assert ratio(raw) > 1e6
    assert 1e-1 < ratio(ln) < 1e2
    assert "exploding" in kinds(alerts(raw)) and "exploding" not in kinds(alerts(ln))


def test_clipping_preset_rescues_training():
    p = PRESETS["clipping"]
    variants = p.train["variants"]
    none = Trainer(p.config.replace(**variants["clip=none"]))
    none.run(5)
    assert none.stopped is not None and none.stopped["step"] <= 2
    clip = Trainer(p.config.replace(**variants["clip=norm"]))
    clip.run(60)
    h = clip.history()
    assert clip.stopped is None and np.isfinite(h["loss"]).all()
    assert h["clipped"][:5].all()
    assert h["loss"][-10:].mean() < h["loss"][0] / 100
    assert h["loss"][-10:].mean() < 5 * clip.chance_loss


# ---- the presets of the course's later chapters ----------------------------------------------------------------
def test_truncated_bptt_preset_cuts_at_t_minus_k():
    p = PRESETS["truncated-bptt"]
    r = run_experiment(p.config.replace(**FAST))
    T, k = r.config.seq_len, r.config.truncate
    assert (T, k) == (100, 20)
    full, cut = r.grad.grad_norm, r.truncated.grad_norm
    np.testing.assert_allclose(cut[T - k:], full[T - k:], rtol=1e-6)  # identical inside the window
    assert np.all(cut[:T - k] == 0) and np.all(full[:T - k] > 0)  # exactly zero before the cut
    assert full[0] / full[-1] < 1e-10  # the full gradient is there, only tiny
    assert "truncated" in kinds(alerts(r))
    # the training comparison: the same cell trained with full BPTT and with k = 20
    v = p.train["variants"]
    assert v == {"full BPTT": {"truncate": 0}, "truncated k=20": {"truncate": 20}}
    a = Trainer(p.config.replace(**v["full BPTT"])).step()
    b = Trainer(p.config.replace(**v["truncated k=20"])).step()
    assert a.loss == b.loss  # same data and weights: only the gradient differs
    assert np.all(b.grad_norm_t[:T - k] == 0) and (a.grad_norm_t[:T - k] > 0).all()
    np.testing.assert_allclose(b.grad_norm_t[T - k:], a.grad_norm_t[T - k:], rtol=1e-5)


@slow
def test_truncated_bptt_preset_full_learns_first():
    p = PRESETS["truncated-bptt"]
    runs = {}
    for label, over in p.train["variants"].items():
        tr = Trainer(p.config.replace(**over))
        tr.run(p.train["steps"])
        loss = tr.history()["loss"]
        smooth = np.convolve(loss, np.ones(20) / 20, mode="valid")
        runs[label] = (int(np.argmax(smooth < 0.05)) + 20 if (smooth < 0.05).any() else None, loss[-50:].mean())
    (full_at, full_end), (cut_at, cut_end) = runs["full BPTT"], runs["truncated k=20"]
    assert full_at is not None and full_at <= 260, runs
    assert cut_at is None or cut_at >= full_at + 40, runs
    assert cut_end > 2 * full_end, runs


def test_bidirectional_preset_draws_a_u():
    p = PRESETS["bidirectional"]
    one = run_experiment(p.config.replace(**FAST))
    flat = run_experiment(p.config.replace(**FAST, **p.variant))
    c = one.grad.grad_norm  # ||dL/d[h_fwd; h_bwd]||
    T = len(c)
    low = c[T // 4: 3 * T // 4].min()
    assert c[0] > 6 * low and c[-1] > 3.5 * low  # measured ~9x and ~5x
    fwd, bwd = one.grad.per_direction
    assert fwd[0] > 10 * fwd[-1] and bwd[-1] > 10 * bwd[0]  # each direction grows toward its own far end
    f = flat.grad.grad_norm  # forget bias 0: no memory, no U
    assert f.max() < 1.5 * f.min()
    assert one.jac_backward is not None and one.jac_backward.spectral_norm.shape == one.jac.spectral_norm.shape


def test_stacked_preset_vanishes_through_depth_and_time():
    r = run_experiment(PRESETS["stacked"].config.replace(**FAST))
    pl = r.grad.per_layer  # (L, T), row 0 = the bottom layer
    assert pl.shape == (3, 100)
    last = pl[:, -1]
    assert last[2] > last[1] > last[0] and 0.15 < last[0] / last[2] < 0.5  # depth: ~1/3 at t = T-1
    for layer in range(3):
        rate = -math.log10(pl[layer, 0] / pl[layer, -1]) / 99  # decades per step back in time
        assert 0.15 < rate < 0.35 and pl[layer, 0] < 1e-18


def test_charlm_hello_preset_learns_to_perplexity_one():
    p = PRESETS["charlm-hello"]
    tr = Trainer(p.config)
    tr.run(p.train["steps"])
    ppl = np.array([rec.perplexity for rec in tr.records])
    assert tr.spec.output_size == 4 and p.config.hidden_size == 3
    assert 3 < ppl[0] < 5.5  # about the uniform guess, V = 4
    assert ppl[-10:].mean() < 1.1 and (ppl[:100] < 1.1).any()
    assert "hellohello" in tr.sample(40, temperature=0.5, seed=0)


def test_charlm_text_preset_starts_at_the_vocabulary_size():
    p = PRESETS["charlm-text"]
    assert p.config.cells == ("rnn", "lstm") and p.config.text == "shipped"
    rnn = Trainer(p.config.for_cell("rnn"))
    rnn.run(25)
    ppl = [rec.perplexity for rec in rnn.records]
    assert rnn.spec.output_size == 60 and 40 < ppl[0] < 90
    assert np.mean(ppl[-5:]) < 0.6 * 60


@slow
def test_charlm_text_preset_falls_below_ten():
    p = PRESETS["charlm-text"]
    for cell in p.config.cells:
        tr = Trainer(p.config.for_cell(cell))
        tr.run(p.train["steps"])
        ppl = np.array([rec.perplexity for rec in tr.records])
        assert ppl[110:130].mean() < 10.5 and ppl[-20:].mean() < 8, (cell, ppl[::50])
        words = tr.sample(200, temperature=0.8, seed=1).split()
        assert sum(w.strip(",.;:!?'").lower() in {"the", "and", "thou", "thy", "of", "to", "my", "that"}
                   for w in words) >= 2, words


def test_curse_of_memory_preset_sensitivity_outgrows_the_state():
    """r = 0.99 vs 0.9: no gradient explodes (they vanish less); the RNN's sensitivity to W_hh, b_hh grows ~2.4
    decades, its size ~0.9, the ratio ~1.5; the LRU's size and nu-sensitivity stay, its phase's grows ~1.9
    (numbers in analysis.presets)."""
    p = PRESETS["curse-of-memory"]
    far, near = (run_comparison(p.config.replace(**over), views="gradients,sensitivity") for over in ({}, p.variant))

    def last(cell, k, block=None):
        f, n = far[cell].param_sensitivity, near[cell].param_sensitivity
        if block is not None:
            return f.blocks[block][k][-1] - n.blocks[block][k][-1]
        return getattr(f, k)[-1] - getattr(n, k)[-1]
    for r in list(far.values()) + list(near.values()):
        assert r.grad.grad_norm[0] < r.grad.grad_norm[-1]  # no explosion back in time
    S, E, Q = (last("rnn", k) for k in ("log10_sensitivity", "log10_state_energy", "log10_ratio"))
    assert 2.0 < S < 2.8 and 0.6 < E < 1.2 and 1.1 < Q < 1.9 and S > 2 * E
    assert far["rnn"].param_sensitivity.rel_se[-1] < 0.1  # W_hh (32 x 32) is a Hutchinson estimate: a few percent
    assert abs(last("lru", "log10_state_energy")) < 0.2  # gamma-normalised: the size does not grow
    assert abs(last("lru", "log10_sensitivity", "nu_log")) < 0.3  # exp(-exp(nu)): the modulus is tamed
    assert last("lru", "log10_sensitivity", "theta_log") > 1.5  # the phase is not
    assert far["lru"].param_sensitivity.method == "exact"  # unit-wise blocks: one tangent each


def _lambda_max(config) -> float:
    """max_j |lambda_j| of the LRU the engine builds for ``config`` (the same seed, the same weights)."""
    from analysis.experiment import TaskModel, resolve
    c, batch, _ = resolve(config.for_cell("lru"))
    cell = TaskModel(c, batch.spec, c.input_size).net.layers[0][0]
    return float(cell.recurrent_eigenvalues()["λ"].abs().max())


def test_lru_t2000_preset_the_lru_holds_the_gated_cells_decay(lru_t2000):
    """T = 2000: the LRU's gradient falls ~4.4 decades, far back at log10 max|lambda| per step, its sigma_max at
    lag k is max|lambda|^k; the LSTM's and GRU's fall ~400 and ~370 decades (log space), horizons 17 and 20;
    chrono init holds theirs (numbers in analysis.presets)."""
    from analysis import limits
    p = PRESETS["lru-t2000"]
    c = p.config
    assert c.cells == ("lstm", "gru", "lru") and c.seq_len == 2000 and c.jacobian_lags == "log"
    cost = limits.estimate(c)  # light settings: well inside the default host limits
    assert cost.memory_bytes < limits.DEFAULT_MAX_MEMORY_MB * 2**20 / 2 and cost.flops < 1e9 * limits.DEFAULT_MAX_GFLOP / 5
    r = lru_t2000  # run_comparison(c), shared with test_figure_labels (conftest)
    lam = _lambda_max(c)
    assert 0.99 < lam <= 0.999
    lg = {k: r[k].grad.log10_grad_norm for k in r}
    lru = lg["lru"] - lg["lru"][-1]
    assert -5 < lru[0] < -4  # ~4.4 decades over 2000 steps
    np.testing.assert_allclose((lru[1000] - lru[0]) / 1000, -math.log10(lam), rtol=1e-3)  # the slope far back
    L = np.asarray(r["lru"].jac.lag)
    np.testing.assert_allclose(r["lru"].jac.spectral_norm, L * math.log10(lam), atol=1e-9)  # |lambda|^k exactly
    assert 1500 < 3 / -math.log10(lam) < 2000 and r["lru"].memory_horizon >= 1500  # the horizon ~1,800
    for cell, lo, hi, horizon in (("lstm", -430, -370, 17), ("gru", -400, -340, 20)):
        d = lg[cell] - lg[cell][-1]
        assert lo < d[0] < hi, (cell, d[0])  # ~0.2 decades per step
        assert np.isfinite(d).all() and r[cell].grad.grad_norm[0] == 0  # exact in log space, 0 in float32
        assert abs(r[cell].memory_horizon - horizon) <= 3
    (warn,) = [a for a in alerts(r["lstm"]) if a.kind == "vanishing"]
    assert "at t=0 it is 3.8e-400 times" in warn.message  # from the exact log10 chain (float32 says 0)
    chrono = run_comparison(c.replace(init="chrono", compare=("lstm", "gru"), cell="lstm", **FAST))
    for cell in ("lstm", "gru"):  # chrono init holds the gated cells' gradient too
        d = chrono[cell].grad.log10_grad_norm
        assert d[0] - d[-1] > -6, cell


def test_mingru_preset_diagonal_jacobian_cannot_explode():
    """minGRU vs GRU: the minGRU's Jacobian is the kept-share path prod(1 - z_t) <= 1 and the same with any W_hh
    init (it has none); the GRU's full Jacobian is ~7 decades above its gate path, and with W_hh at spectral radius 5
    it explodes (numbers in analysis.presets)."""
    p = PRESETS["mingru"]
    assert p.config.cells == ("gru", "mingru") and p.variant == {"init": "spectral", "init_scale": 5.0}
    base, big = run_comparison(p.config), run_comparison(p.config.replace(**p.variant))
    m, g = base["mingru"], base["gru"]
    assert -26 < math.log10(ratio(m)) < -22 and m.memory_horizon is not None  # vanishes: ~0.24 decades per step
    np.testing.assert_allclose(m.jac.spectral_norm, m.jac.update_gate_path, atol=1e-5)  # every path is the gate's
    assert m.jac.spectral_norm.max() <= 1e-6  # sigma_max <= 1 at every lag: diag(1 - z_t), 0 < 1 - z_t < 1
    np.testing.assert_array_equal(big["mingru"].grad.grad_norm, m.grad.grad_norm)  # no W_hh: the variant is moot
    assert "exploding" not in kinds(alerts(big["mingru"]))
    assert 5 < g.jac.spectral_norm[-1] - g.jac.update_gate_path[-1] < 9  # W_hh paths: ~7 decades above prod z_t
    assert math.log10(ratio(g)) > -21 and "vanishing" in kinds(alerts(g))
    gb = big["gru"]
    assert ratio(gb) > 1e5 and gb.jac.spectral_norm[-1] > 6 and "exploding" in kinds(alerts(gb))


EFFECT_CHECKS = {
    "default": test_default_preset_one_collapses_the_others_hold,
    "vanishing-tanh": test_vanishing_preset,
    "exploding": test_exploding_preset,
    "irnn": test_irnn_preset_keeps_the_gradient,
    "orthogonal-linear": test_orthogonal_linear_preset_keeps_the_norm_exactly,
    "forget-bias": test_forget_bias_preset_stretches_the_horizon,
    "layer-norm": test_layer_norm_preset_keeps_the_jacobian_in_range,
    "clipping": test_clipping_preset_rescues_training,
    "truncated-bptt": test_truncated_bptt_preset_cuts_at_t_minus_k,
    "bidirectional": test_bidirectional_preset_draws_a_u,
    "stacked": test_stacked_preset_vanishes_through_depth_and_time,
    "charlm-hello": test_charlm_hello_preset_learns_to_perplexity_one,
    "charlm-text": test_charlm_text_preset_starts_at_the_vocabulary_size,
    "curse-of-memory": test_curse_of_memory_preset_sensitivity_outgrows_the_state,
    "lru-t2000": test_lru_t2000_preset_the_lru_holds_the_gated_cells_decay,
    "mingru": test_mingru_preset_diagonal_jacobian_cannot_explode,
}
