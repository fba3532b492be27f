"""The engine's progress callback, cancellation and the gradients-only stage (the dashboard's first chart)."""
import json

import numpy as np
import pytest

from analysis import ExperimentConfig
from analysis.experiment import run_comparison, run_experiment
from analysis.figures import view_figures
from analysis.progress import Cancelled, Reporter
from rnn_models.config import ConfigError

CFG = ExperimentConfig(compare=("rnn", "lstm", "gru"), seq_len=40, hidden_size=12, batch_size=3, bidirectional=True)


def test_progress_is_monotone_from_0_to_1_and_names_each_cell():
    """The cells one after another (threads=1: no cores left for a second cell, whatever thread count an earlier
    test left torch with; side by side the bar names the least advanced running cell instead)."""
    calls = []
    run_comparison(CFG.replace(threads=1), progress=lambda f, what: calls.append((f, what)))
    fractions = [f for f, _ in calls]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert fractions == sorted(fractions)
    for cell in ("RNN", "LSTM", "GRU"):
        assert any(what.startswith(f"{cell} · ") for _, what in calls), cell
    assert any("Jacobian products" in what for _, what in calls)


def test_gradients_only_equals_the_full_run_where_both_exist():
    full = run_comparison(CFG)
    first = run_comparison(CFG, only="gradients")
    for cell, r in first.items():
        assert not r.complete and r.jac is None and r.jac_backward is None and r.memory_horizon is None
        assert full[cell].complete
        np.testing.assert_array_equal(r.grad.grad_norm, full[cell].grad.grad_norm)
        d = r.to_dict()
        json.dumps(d)
        assert d["jacobian"] is None and d["grad_norm"] == full[cell].to_dict()["grad_norm"]
        assert any("gradients only" in n for n in r.notes)
    assert "grad_norm" in view_figures("gradient-flow", first)


def test_gradients_only_with_the_dashboards_defaults():
    """The default preset analyses 4 of 16 sequences at log-spaced lags: the gradients-only pass (the first chart)
    must not need the Jacobian result for its notes."""
    from analysis.presets import PRESETS
    cfg = PRESETS["default"].config.replace(seq_len=60, hidden_size=16)
    assert cfg.jacobian_batch < cfg.batch_size and cfg.jacobian_lags == "log"
    first = run_comparison(cfg, only="gradients")
    full = run_comparison(cfg)
    for cell, r in first.items():
        assert r.jac is None
        np.testing.assert_array_equal(r.grad.log10_grad_norm, full[cell].grad.log10_grad_norm)
        assert not any("Jacobian spectra" in n for n in r.notes)
        assert any("Jacobian spectra over the first 4 of 16" in n for n in full[cell].notes)


def test_a_callback_raising_cancelled_stops_the_run():
    """The cells one after another (threads=1), where every stage reports: the run stops at the first report past
    0.3. Side by side the calling thread reports ten times a second, and a run this small can be done by then
    (cancelling side-by-side workers: test_comparison)."""
    seen = []

    def cancel(f, what):
        seen.append(f)
        if f > 0.3:
            raise Cancelled()

    with pytest.raises(Cancelled):
        run_comparison(CFG.replace(threads=1), progress=cancel)
    assert max(seen) < 0.5


def test_bad_only_is_one_line():
    with pytest.raises(ConfigError, match="only="):
        run_experiment(CFG.for_cell("rnn"), only="spectra")


def test_reporter_stages_map_into_their_range():
    got = []
    rep = Reporter(lambda f, w: got.append((round(f, 6), w)))
    rep.stage(0.5, 1.0, "b: ")(0.5, "half", force=True)
    assert got == [(0.75, "b: half")]
