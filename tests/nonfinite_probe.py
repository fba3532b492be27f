"""Every analysis of the engine on weights holding a NaN or an Inf, one parameter at a time (run in a subprocess by
tests/test_finite.py, so that a LAPACK abort (exit 134, SIGSEGV) is seen as a failed exit, not a dead test run).

For rnn, lstm and gru, each parameter of torch's nn.RNN/LSTM/GRU(I, H) with one entry set to NaN, then to +Inf:
    analyze()            the user's model under the random probe, the whole analysis
    analyze(readout=)    with its readout and targets (the model's own loss)
    run_experiment       a state_dict file on a task (the engine's readout), full and only="gradients"
    the views            every figure of every view (analysis.figures.VIEWS), the alerts, the summary, the JSON
    Trainer              two training steps (the spectral radius over training) and the training view
    sweep point          every metric of one sweep point
``python tests/nonfinite_probe.py [all]``: with ``all`` every figure of every result of every case, else every
view of analyze()'s result for weight_hh_l0's cases only (the figures are most of the time); then a 2-layer
bidirectional LSTM's cases. Prints the reproduction's line ("repro {json}": analyze() on LSTM(8, 32) with one NaN
in weight_hh_l0), one line per case ("ok <case> | <the note naming the entry>"), "done", and exits 0.
"""
import json
import os
import sys
import tempfile

import torch
from torch import nn

from analysis import ExperimentConfig, analyze, run_experiment
from analysis.alerts import alerts, training_alerts
from analysis.figures import VIEWS, view_figures
from analysis.sweep_points import METRICS, evaluate_point
from analysis.training import Trainer

I, H, T, B = 2, 4, 6, 2  # I = 2: the adding task's inputs
CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
SMALL = dict(jacobian_lags="all", n_singular=2, lyapunov_k=2)


def _note(r, name: str, value: str) -> str:
    found = [n for n in r.notes if n.startswith("non-finite values given") and name in n and value in n]
    if not found:
        raise AssertionError(f"no note names {name} ({value}): {r.notes}")
    return found[0]


def _views(r, views=VIEWS) -> int:
    n = 0
    for view in views:
        n += len(view_figures(view, {r.config.cell: r}))
    json.dumps(r.to_dict(), allow_nan=False)
    alerts(r)
    repr(r)
    r._repr_html_()
    return n


def probe(cell: str, param: str, value: float, where: str, figures: bool = True, every: bool = True) -> str:
    """One case; ``figures``: every view of analyze()'s result, ``every``: of every result too."""
    torch.manual_seed(0)
    m = CELLS[cell](I, H)
    with torch.no_grad():
        p = getattr(m, param)
        idx = (3, 1) if p.dim() == 2 else (3,)
        p[idx] = value
    at = "[" + ", ".join(map(str, idx)) + "]"
    kind = "NaN" if value != value else "Inf"
    x = torch.randn(T, B, I)
    r = analyze(m, x, **SMALL)
    note = _note(r, f"{param}: 1 {kind} at {at}", kind)
    n = _views(r, VIEWS if figures else ())
    lin = nn.Linear(H, 2)
    holder = nn.Module()
    holder.rnn, holder.out = m, lin
    r2 = analyze(holder, x, readout="out", targets=torch.randint(0, 2, (T, B)), **SMALL)
    _note(r2, param, kind)
    sd_path = os.path.join(where, f"{cell}_{param}.pt")
    torch.save(m.state_dict(), sd_path)
    cfg = ExperimentConfig(cell=cell, hidden_size=H, task="adding", seq_len=T, batch_size=B,
                           state_dict_path=sd_path, **SMALL)
    r3 = run_experiment(cfg)
    _note(r3, param, kind)
    n += _views(r3, VIEWS if every else ())
    r4 = run_experiment(cfg, only="gradients")
    _note(r4, param, kind)
    # the views drawn from the gradient pass alone (dashboard.views: NEEDS_FULL = False)
    n += _views(r4, [v for v in VIEWS if v not in ("jacobians", "cell-state", "spectrum")] if every else ())
    tr = Trainer(cfg.replace(train_steps=2))
    tr.radius_every = 1
    tr.run(2)
    hist = {cell: tr.history()}
    n += len(view_figures("training", {cell: r3}, histories=hist)) if figures else 0
    training_alerts(hist[cell], tr.stopped)
    point = evaluate_point({"config": cfg.replace(train_steps=2).to_dict(), "metrics": list(METRICS),
                            "key": {"seed": 0}})
    assert point["status"] in ("ok", "nonfinite", "failed"), point
    return f"ok {cell} {param} {kind}: {n} figures, point {point['status']} | {note}"


def reproduction() -> str:
    """Issue 20's reproduction: LSTM(8, 32) with one NaN in weight_hh_l0 through analyze(); the spectral radii and
    torch's own eigenvalues of the gate blocks without the NaN, as a JSON line."""
    torch.manual_seed(0)
    m = nn.LSTM(8, 32)
    with torch.no_grad():
        m.weight_hh_l0[3, 7] = float("nan")
    r = analyze(m, torch.randn(20, 2, 8))
    W = m.weight_hh_l0.detach().double()
    ref = {g: float(torch.linalg.eigvals(W[k * 32:(k + 1) * 32]).abs().max()) for k, g in enumerate("ifgo") if k}
    d = r.to_dict()
    return "repro " + json.dumps({"notes": r.notes, "radius": d["spectral_radius"], "ref": ref,
                                  "nonfinite": r.nonfinite}, allow_nan=False)


def stacked(param: str, value: float, figures: bool) -> str:
    """A 2-layer bidirectional LSTM with the non-finite entry in ``param``, analysed at each layer."""
    torch.manual_seed(0)
    m = nn.LSTM(I, H, num_layers=2, bidirectional=True)
    with torch.no_grad():
        getattr(m, param)[3] = value
    kind = "NaN" if value != value else "Inf"
    n = 0
    for layer in (0, -1):
        r = analyze(m, torch.randn(T, B, I), layer=layer, **SMALL)
        _note(r, f"{param}: {H if getattr(m, param).dim() == 2 else 1} {kind}", kind)
        n += _views(r, VIEWS if figures else ())
    return f"ok stacked lstm {param} {kind}: {n} figures"


def main(argv) -> int:
    """``all``: every figure of every result of every case (slow: ~40 s on 2 cores); else every view of
    analyze()'s result for weight_hh_l0's cases, and every analysis (with its JSON, alerts, summary) of all."""
    every = "all" in argv
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead
    print(reproduction(), flush=True)
    with tempfile.TemporaryDirectory() as where:
        for cell, cls in CELLS.items():
            for param, _ in cls(I, H).named_parameters():
                for value in (float("nan"), float("inf")):
                    print(probe(cell, param, value, where, figures=every or param == "weight_hh_l0", every=every),
                          flush=True)
        for param in ("weight_hh_l1_reverse", "bias_ih_l0"):
            for value in (float("nan"), float("inf")):
                print(stacked(param, value, every), flush=True)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
