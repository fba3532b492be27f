"""analysis.alerts on constructed cases and on real runs (the presets' effects are checked in test_presets.py)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from analysis.alerts import Alert, alerts, training_alerts
from analysis.config import ExperimentConfig
from analysis.experiment import run_experiment


def fake(grad_norm, *, cell="rnn", activation="tanh", saturation=None, notes=(), nonfinite=None):
    cfg = ExperimentConfig(cell=cell, activation=activation, seq_len=len(grad_norm))
    return SimpleNamespace(config=cfg, grad=SimpleNamespace(grad_norm=np.asarray(grad_norm, float)),
                           saturation=saturation or {}, notes=list(notes), nonfinite=nonfinite)


def kinds(alist):
    return [a.kind for a in alist]


# ---- constructed cases --------------------------------------------------------------------------------------------
def test_vanishing_says_where():
    g = 10.0 ** np.linspace(-12, 0, 61)  # t = 0..60; ratio to the last step 1e-12 at t=0
    out = alerts(fake(g))
    (a,) = [x for x in out if x.kind == "vanishing"]
    assert a.level == "warning"
    t = int(np.nonzero(g / g[-1] < 1e-6)[0].max())  # 30
    assert f"t={t}" in a.message and f"lag {60 - t}" in a.message
    assert "vanish" in a.message and "RNN" in a.message
    assert "exploding" not in kinds(out)


def test_vanishing_below_float_range_says_the_exact_ratio():
    """At T = 2000 ||dL/dh_0|| underflows float32 to 0; the alert reads the exact log10 chain, not "0.0e+00"."""
    lg = np.linspace(-399.4, 0.0, 2000)  # log10 ||dL/dh_t||
    r = fake(np.where(lg < -40, 0.0, 10.0 ** lg))
    r.grad.log10_grad_norm = lg
    (a,) = [x for x in alerts(r) if x.kind == "vanishing"]
    assert "at t=0 it is 4.0e-400 times that value" in a.message
    r.grad.log10_grad_norm = np.linspace(-2.0004, 0.0, 2000)  # 10^-2.0004 = 9.99e-3: 1.0e-02, not 10.0e-03
    assert "at t=0 it is 1.0e-02 times" in [x for x in alerts(r) if x.kind == "vanishing"][0].message


def test_exploding_says_where():
    g = 10.0 ** np.linspace(9, 0, 10)
    (a,) = [x for x in alerts(fake(g)) if x.kind == "exploding"]
    assert a.level == "warning" and "t=" in a.message and "explode" in a.message
    t = int(np.nonzero(g / g[-1] > 1e6)[0].max())  # 2 (t=3 is 1e6 itself, not above)
    assert f"t={t}" in a.message and f"lag {9 - t}" in a.message
    assert "vanishing" not in kinds(alerts(fake(g)))


def test_flat_gradient_gives_no_alert():
    assert alerts(fake(np.ones(50))) == []
    assert alerts(fake(np.full(50, 1e-3))) == []  # small but not decaying relative to the last step
    assert alerts(fake([1.0])) == []


def test_zero_last_step_is_not_a_crash():
    assert "vanishing" not in kinds(alerts(fake([1.0, 0.5, 0.0])))


def test_nonfinite_is_an_error_with_place():
    out = alerts(fake(np.ones(5), nonfinite={"quantity": "grad_norm", "layer": 0, "timestep": 3, "sequence": 1}))
    assert out[0].level == "error" and out[0].kind == "nonfinite"
    assert "t=3" in out[0].message and "sequence 1" in out[0].message and "NaN" in out[0].message


def test_saturation_and_dead_units():
    out = alerts(fake(np.ones(5), saturation={"h_saturated": 0.7}))
    (a,) = out
    assert a.kind == "saturated" and "70%" in a.message and "|h| > 0.99" in a.message
    out = alerts(fake(np.ones(5), cell="lstm", saturation={"f_saturated": 0.8, "i_saturated": 0.1,
                                                             "o_saturated": 0.51}))
    assert sorted(a.message.split("the ")[1][0] for a in out) == ["f", "o"]
    out = alerts(fake(np.ones(5), activation="relu", saturation={"dead_units": 0.25, "inactive": 0.6}))
    (a,) = out
    assert a.kind == "dead" and "25%" in a.message
    assert alerts(fake(np.ones(5), activation="relu", saturation={"dead_units": 0.2})) == []
    assert alerts(fake(np.ones(5), saturation={"h_saturated": 0.5})) == []


def test_notes_become_info_and_errors_come_first():
    out = alerts(fake(10.0 ** np.linspace(-8, 0, 20), notes=["peephole applies to the LSTM only; ignored for rnn"],
                      nonfinite={"quantity": "loss", "sequence": 0}))
    assert [a.level for a in out] == ["error", "warning", "info"]
    assert "peephole applies to the LSTM only" in out[-1].message


def test_alerts_can_be_named():
    (a,) = alerts(fake(10.0 ** np.linspace(-8, 0, 20), cell="lstm"), name="LSTM · forget_bias=0")
    assert a.message.startswith("LSTM · forget_bias=0: the gradient vanishes")


def test_alert_levels_are_checked():
    with pytest.raises(ValueError):
        Alert("fatal", "x")


def test_training_alerts():
    assert training_alerts(None, None) == []
    stopped = {"quantity": "hidden_state", "layer": 0, "direction": 0, "timestep": 9, "step": 1}
    (a,) = training_alerts({"step": np.arange(2)}, stopped, "RNN")
    assert a.level == "error" and "step 1" in a.message and "t=9" in a.message and a.message.startswith("RNN")
    h = {"step": np.arange(3), "loss": np.array([1.0, np.nan, 0.5]), "grad_norm_before": np.array([1.0, np.nan, 1.0]),
         "nonfinite": [None, {"quantity": "loss", "step": 1}, None]}
    (a,) = training_alerts(h, None)
    assert a.level == "warning" and "step 1" in a.message
    h.pop("nonfinite")
    (a,) = training_alerts(h, None)
    assert "step 1" in a.message
    assert training_alerts({"step": np.arange(2), "loss": np.ones(2), "grad_norm_before": np.ones(2)}, None) == []


def test_alerts_on_a_real_nonfinite_run():
    r = run_experiment(ExperimentConfig(cell="rnn", activation="linear", init="spectral", init_scale=100.0,
                                        seq_len=40, hidden_size=8, batch_size=2))
    assert r.nonfinite is not None
    assert alerts(r)[0].level == "error"


def test_truncation_alert_says_where_the_gradient_stops():
    cfg = ExperimentConfig(cell="rnn", seq_len=12, hidden_size=6, batch_size=2, truncate=5)
    (a,) = [x for x in alerts(run_experiment(cfg)) if x.kind == "truncated"]
    assert a.level == "info" and "k=5" in a.message and "t < 7" in a.message and "exactly 0" in a.message
    every = alerts(run_experiment(cfg.replace(loss_steps="all")))
    assert any(x.kind == "truncated" and "every 5 steps" in x.message for x in every)
    assert not [x for x in alerts(run_experiment(cfg.replace(truncate=0))) if x.kind == "truncated"]
    assert not [x for x in alerts(fake(np.ones(5))) if x.kind == "truncated"]  # results without the field
