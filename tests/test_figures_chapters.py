"""analysis.figures for the course's later chapters: stacked and bidirectional networks, truncated BPTT, the
character-level LM's training figures, the activations' gamma; the traces hold the engine's numbers
(test_figures.py's helpers)."""
from __future__ import annotations

import math

import numpy as np

from analysis import figures
from analysis.config import ExperimentConfig
from analysis.experiment import run_comparison
from analysis.training import Trainer
from rnn_models.config import ACTIVATION_GAMMA
from test_figures import SMALL, by_role, same


def test_stacked_and_bidirectional_figures():
    res = run_comparison(ExperimentConfig(compare=("rnn", "gru"), num_layers=2, bidirectional=True, **SMALL))
    figs = figures.view_figures("gradient-flow", res)
    layers = figs["grad_per_layer"]
    z = np.asarray(layers.data[0].z, float)
    assert z.shape == (2, SMALL["seq_len"])  # (L, T)
    same(z, np.log10(res["rnn"].grad.per_layer))
    np.testing.assert_array_equal(layers.data[0].y, [0, 1])  # layers numbered 0..L-1 as the API and JSON count
    lines = figs["grad_per_layer_lines"]
    for layer in (0, 1):
        (tr,) = [t for t in by_role(lines, "grad_layer", "rnn") if t.meta["layer"] == layer]
        same(tr.y, res["rnn"].grad.per_layer[layer])
        assert tr.name.startswith(f"RNN layer {layer} (")
    d = figs["grad_per_direction"]
    for cell, r in res.items():
        (fwd,) = by_role(d, "direction_forward", cell)
        (bwd,) = by_role(d, "direction_backward", cell)
        (both,) = by_role(d, "direction_combined", cell)
        same(fwd.y, r.grad.per_direction[0])
        same(bwd.y, r.grad.per_direction[1])
        same(both.y, r.grad.grad_norm)
        assert "forward direction" in fwd.name and "backward direction" in bwd.name and "[h→" in both.name
    # a last-step loss: the backward direction gets nothing before T-1, and the figure says why
    assert any("backward direction gets no gradient" in (a.text or "") for a in d.layout.annotations)


def test_truncated_figure_full_and_truncated_on_the_same_axes():
    T, k = SMALL["seq_len"], 5
    res = run_comparison(ExperimentConfig(compare=("rnn", "lstm"), truncate=k, **SMALL))
    figs = figures.view_figures("gradient-flow", res)
    assert list(figs)[:2] == ["grad_norm", "grad_truncated"]
    fig = figs["grad_truncated"]
    for cell, r in res.items():
        (full,) = by_role(fig, "grad_full", cell)
        (cut,) = by_role(fig, "grad_truncated", cell)
        assert full.line.color == cut.line.color == figures.CELL_COLORS[cell]
        assert cut.line.dash == "dash" and full.line.dash is None and cut.meta["k"] == k
        same(full.y, r.grad.grad_norm)
        y = np.asarray(cut.y, float)
        np.testing.assert_array_equal(y[T - k:], np.asarray(full.y, float)[T - k:])  # equal inside the window
        assert np.isnan(y[:T - k]).all() and (r.truncated.grad_norm[:T - k] == 0).all()  # 0: a gap on the log axis
        assert "truncated BPTT, k=5" in cut.name and "full BPTT" in full.name
    assert fig.layout.yaxis.type == "log"
    marks = [s.x0 for s in fig.layout.shapes if s.type == "line" and s.x0 == s.x1]
    assert T - k in marks
    assert any(f"T−k = {T}−{k} = {T - k}" in (a.text or "") for a in fig.layout.annotations)
    assert any(s.type == "rect" and s.x1 == T - k for s in fig.layout.shapes)  # the region where it is 0
    # a loss at every step: the gradient is cut every k steps (every cut marked), not zero before T-k
    every = run_comparison(ExperimentConfig(cell="rnn", truncate=k, loss_steps="all", **SMALL))
    fig = figures.view_figures("gradient-flow", every)["grad_truncated"]
    marks = {s.x0 for s in fig.layout.shapes if s.type == "line" and s.x0 == s.x1}
    assert marks == {T - k, T - 2 * k} and not [s for s in fig.layout.shapes if s.type == "rect"]
    assert "grad_truncated" not in figures.view_figures("gradient-flow", {"rnn": results_of(truncate=0)})


def results_of(**kw):
    return run_comparison(ExperimentConfig(cell="rnn", **{**SMALL, **kw}))["rnn"]


def test_jacobians_of_both_directions_and_of_the_chosen_layer():
    res = run_comparison(ExperimentConfig(compare=("rnn", "lstm"), bidirectional=True, **SMALL))
    fig = figures.view_figures("jacobians", res)["jacobian_spectral_norm"]
    for cell, r in res.items():
        (b,) = by_role(fig, "spectral_norm_backward", cell)
        same(b.y, 10.0 ** np.asarray(r.jac_backward.spectral_norm))
        assert b.line.dash == "dash" and "backward direction" in b.name and b.line.color == figures.CELL_COLORS[cell]
        (f,) = by_role(fig, "spectral_norm", cell)
        assert "forward direction" in f.name
    (bound,) = by_role(fig, "bound", "rnn")
    assert bound.line.dash != "dash"  # dashed means the backward direction here
    bottom = results_of(num_layers=3, layer=0)
    top = results_of(num_layers=3)
    fb = figures.view_figures("jacobians", {"rnn": bottom})["jacobian_spectral_norm"]
    ft = figures.view_figures("jacobians", {"rnn": top})["jacobian_spectral_norm"]
    assert "layer 0 (bottom) of 3" in fb.layout.title.text and "layer 2 (top) of 3" in ft.layout.title.text
    same(by_role(fb, "spectral_norm", "rnn")[0].y, 10.0 ** bottom.jac.spectral_norm)
    assert not np.allclose(bottom.jac.spectral_norm, top.jac.spectral_norm)


def test_charlm_training_shows_perplexity_against_the_vocabulary_size():
    cfg = ExperimentConfig(cell="rnn", task="charlm", text="hello", **SMALL)
    res = run_comparison(cfg)
    tr = Trainer(cfg)
    tr.run(4)
    h = tr.history()  # as the command line's export passes it: no perplexity column, no samples
    figs = figures.view_figures("training", res, {"rnn": h})
    assert "charlm_samples" not in figs
    ppl = figs["training_perplexity"]
    (line,) = by_role(ppl, "perplexity", "rnn")
    same(line.y, [rec.perplexity for rec in tr.records])
    assert ppl.layout.yaxis.type == "log"
    assert any(s.y0 == s.y1 == 4.0 and s.line.dash == "dash" for s in ppl.layout.shapes)  # V = 4
    assert any("V = 4" in (a.text or "") for a in ppl.layout.annotations)
    h.update(task="charlm", vocab=["h", "e", "l", "o"], vocab_size=4, perplexity=[r.perplexity for r in tr.records],
             samples=[{"step": 4, "temperature": 0.5, "text": "hello\nhe"}])
    figs = figures.view_figures("training", res, {"rnn": h})
    assert any("h, e, l, o" in (a.text or "") for a in figs["training_perplexity"].layout.annotations)
    table = figs["charlm_samples"].data[0]
    assert list(table.cells.values[0]) == [4] and list(table.cells.values[3]) == ["hello↵he"]
    assert table.meta["samples"][0]["text"] == "hello\nhe"  # verbatim in the JSON export
    adding = figures.view_figures("training", {"rnn": results_of(task="adding")}, {"rnn": {**h, "task": "adding"}})
    assert "training_perplexity" not in adding


def test_truncated_training_variants_are_labelled():
    cfg = ExperimentConfig(cell="gru", task="adding", **SMALL)
    hist = {}
    for label, k in (("full BPTT", 0), ("truncated k=5", 5)):
        tr = Trainer(cfg.replace(truncate=k))
        tr.run(2)
        hist[f"gru · {label}"] = tr.history()
    loss = figures.view_figures("training", run_comparison(cfg), hist)["training_loss"]
    names = [t.name for t in by_role(loss, "loss")]
    assert names == ["GRU · full BPTT loss", "GRU · truncated k=5 loss"]
    assert [t.line.dash for t in by_role(loss, "loss")] == ["solid", "dash"]


def test_activations_gamma():
    fig = figures.view_figures("activations", {})["activations"]
    deriv = {t.legendgroup: np.asarray(t.y) for t in fig.data if t.name.endswith("′")}
    for name, gamma in ACTIVATION_GAMMA.items():
        assert math.isclose(float(np.max(np.abs(deriv[name]))), gamma, rel_tol=1e-3)
    names = [t.name for t in fig.data]
    assert any("γ = 1/4" in n for n in names)
