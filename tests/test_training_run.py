"""The Live training's run on the timeline: the trainer's probes against an independent reference (torch.func
Jacobians of the step, multiplied out and svd'd in float64), and its records as a RunData the timeline draws."""
import copy
import math

import numpy as np
import pytest
import torch

from analysis.config import ExperimentConfig
from analysis.figures.timeline import timeline_figures
from analysis.tasks import make_batch
from analysis.training import Trainer
from analysis.training_run import layer_name, trainer_run

pytestmark = pytest.mark.usefixtures("single_thread")


def _config(cell, **kw):
    return ExperimentConfig(cell=cell, task="adding", hidden_size=6, seq_len=20, batch_size=4, dtype="float64",
                            train_steps=0, seed=3, **kw)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_probe_equals_multiplied_out_autograd_jacobians(cell):
    tr = Trainer(_config(cell))
    before = copy.deepcopy(tr.model)  # the weights step 0 runs with (the probe is taken before the update)
    tr.run(6)
    probed = [r for r in tr.records if r.probe is not None]
    assert [r.step for r in probed] == [0, 5]
    p = probed[0].probe
    c = tr.config
    batch = make_batch(c.task, c.seq_len, c.batch_size, seed=c.seed + 1000, input_size=c.input_size,
                       dtype=torch.float64, text=c.text)
    run = before.net(batch.inputs[:, :1]).runs[0][0]  # the first sequence
    T = c.seq_len
    H = c.hidden_size
    P = torch.eye(len(run.states[0]) * H, dtype=torch.float64)
    want = {}
    for k in range(1, T):
        t = T - k  # P_k = P_{k-1} J_{T-k}, J_t = d state_t / d state_{t-1} by torch.func
        P = P @ run.cell.jacobian_autograd(run.xp[t].detach(), tuple(s.detach() for s in run.states[t]))[0].detach()
        want[k] = math.log10(float(torch.linalg.svdvals(P[:H, :H])[0]))
    got = dict(zip(p["lags"], p["log10_sigma_max"]))
    assert got[0] == pytest.approx(0.0, abs=1e-12)
    for k in p["lags"][1:]:
        assert got[k] == pytest.approx(want[k], abs=1e-9), k
    below = [k for k in p["lags"] if got[k] < math.log10(c.horizon_threshold)]
    assert p["horizon"] == (below[0] if below else None)
    W = before.net.layers[0][0].weight_hh.detach().numpy()
    for g, Wg in zip(run.cell.gate_names, np.split(W, len(run.cell.gate_names), axis=0)):
        np.testing.assert_allclose(np.sort_complex(p["eigenvalues"][g]), np.sort_complex(np.linalg.eigvals(Wg)),
                                   atol=1e-10)


def test_trainer_run_is_what_the_timeline_draws():
    tr = Trainer(_config("lstm", clip="norm", clip_threshold=0.05))
    tr.run(11)
    run = trainer_run(tr, "live lstm")
    lk = layer_name(0)
    assert run.layers == [lk] and list(run.steps) == list(range(11))
    np.testing.assert_allclose(run.log10_grad_norm[lk], np.log10(np.stack([r.grad_norm_t for r in tr.records])))
    np.testing.assert_allclose(run.loss, [r.loss for r in tr.records])
    assert list(run.probe_steps) == [0, 5, 10] and run.log10_sigma_max[lk].shape == (3, len(run.lags))
    steps, clipped = run.note_series("clipped")
    assert list(clipped) == [float(r.clipped) for r in tr.records] and clipped.any()
    figs = timeline_figures({"live lstm": run})
    heat = figs["timeline"].data[0]
    np.testing.assert_allclose(np.asarray(heat.z), run.log10_grad_norm[lk].T)
    assert set(figs) == {"timeline", "eigenvalues"}
    assert len(figs["eigenvalues"].frames) == 3


@pytest.mark.parametrize("cell", ["lru", "mingru"])
def test_cells_without_w_hh_probe_their_fixed_recurrence(cell):
    tr = Trainer(_config(cell))
    lam = {g: e.detach().numpy().copy() for g, e in tr.model.net.layers[0][0].recurrent_eigenvalues().items()}
    tr.run(1)
    p = tr.records[0].probe
    assert set(p["eigenvalues"]) == set(lam)  # the LRU's lambda; none for minGRU (its factor depends on x_t)
    for g, e in lam.items():
        np.testing.assert_allclose(p["eigenvalues"][g], e, rtol=1e-12)
    assert p["log10_sigma_max"] is not None and p["log10_sigma_max"][0] == 0.0
    figs = timeline_figures({"live": trainer_run(tr, "live")})
    assert ("eigenvalues" in figs) == bool(lam)
