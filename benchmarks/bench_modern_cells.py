"""The diagonal cells at long sequences, as ratios (2 shared cores: compare ratios, not seconds).

    python benchmarks/bench_modern_cells.py                  # T=10,000, H=256, B=16, one thread (a few minutes)
    python benchmarks/bench_modern_cells.py --quick          # T=500, H=64 (seconds): checks that it works

Rows:
  lru       the whole analysis of the LRU (``run_experiment``, every view: ||dL/dh_t||, the Jacobian products by
            ``analysis.diagonal``, lambda, the Lyapunov exponents)  /  a forward+backward of the same LRU (the same
            weights) written in plain torch with complex tensors, two ways:
              loop  h_t = lambda h_{t-1} + gamma B x_t, one complex multiply-add per step (a plain Python loop)
              fft   every h_t at once as the causal convolution h = K * (gamma B x), K_k = lambda^k, by FFT
                    (parallel over time; exact for the LRU's time-invariant lambda; no parallel scan is needed)
            the loss is the random probe u . h_{T-1} (summed over the batch), backward to every parameter
                                                                                         target <= 2x (vs loop)
            The reference for the target is the loop: the LRU as one writes it in plain torch, its diagonal
            structure used (an elementwise complex recurrence, no H x H product), autograd's backward. The fft
            form is printed beside it (slower on CPU at this size). The analysis uses what the LRU is: a run
            without a graph as one complex multiply-add per step (``LRUCell.run_states``), and its fixed lambda
            in closed form for ||dL/dh_t|| (``analysis.diagonal_chain``) and the products (k log|lambda|).
  gated     the same for each time-varying diagonal cell (RG-LRU, minGRU, minLSTM): the whole analysis
            (``run_experiment``: ||dL/dh_t|| per unit from the running sums of log|m_t|, ``analysis.diagonal_chain``;
            the products by ``analysis.diagonal``; every view)  /  a forward+backward of the same cell (the same
            weights) written in plain torch: every gate of every step at once (they read x_t only), then the
            elementwise recurrence h_t = a_t h_{t-1} + b_t, one fused multiply-add per step (a plain Python loop),
            autograd's backward from the probe u . h_{T-1}                                  target <= 2x (each)
            Timed interleaved as the lru row (analysis, loop, round after round).
  cells     the four cells side by side at the same size: the whole analysis, its gradient and Jacobian stages
            (``result.timings``), and / one forward+backward of our own model (``RecurrentNetwork``'s time loop)

The lru row is timed interleaved (analysis, loop, fft, our fwd+bwd, round after round; ``--rounds``, default 3):
medians, and the ratios as medians of the per-round ratios (a load change between rounds cancels). The cells
rows are one call each. A warm-up at a small size comes first. Prints one line per row; ``--json PATH`` writes
them.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_common import Plan, fwd_bwd_ours, measure_interleaved, paired_ratio  # noqa: E402

KINDS = ("lru", "rglru", "mingru", "minlstm")


def _clock(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _config(cell: str, T: int, H: int, B: int):
    from analysis.config import ExperimentConfig
    return ExperimentConfig(cell=cell, seq_len=T, hidden_size=H, batch_size=B, threads=1)


def _built(cfg):
    """The engine's own model and data for the random probe: (resolved config, batch, TaskModel)."""
    from analysis.experiment import TaskModel, resolve
    cfg, batch, _ = resolve(cfg)
    return cfg, batch, TaskModel(cfg, batch.spec, cfg.input_size)


def plain_lru(cell, readout, x, how: str):
    """A forward+backward of ``cell``'s LRU in plain torch (complex), its weights copied: a callable."""
    p = {n: t.detach().clone().requires_grad_(True) for n, t in cell.named_parameters()}
    u = readout.weight.detach()[0]  # (H,) the probe's unit vector
    T, B, _ = x.shape
    N = cell.hidden_size // 2
    cx = x.to(torch.complex64 if x.dtype == torch.float32 else torch.complex128)

    def f():
        for t in p.values():
            t.grad = None
        # lambda = exp(-exp(nu) + i exp(theta));  gamma B = exp(gamma_log) (B_re + i B_im)
        log_lam = torch.complex(-torch.exp(p["nu_log"]), torch.exp(p["theta_log"]))  # (N,)
        Bc = torch.complex(p["B_re"], p["B_im"]) * torch.exp(p["gamma_log"]).unsqueeze(-1)  # (N, I)
        v = cx @ Bc.T  # (T, B, N)
        if how == "loop":
            lam = torch.exp(log_lam)
            h = torch.zeros(B, N, dtype=v.dtype)
            for v_t in v.unbind(0):  # (indexing v[t] per step would make the backward O(T^2))
                h = lam * h + v_t  # h_t = lambda h_{t-1} + gamma B x_t
            h_last = h
        else:
            K = torch.exp(torch.arange(T, dtype=x.dtype).unsqueeze(-1) * log_lam)  # (T, N): lambda^k
            n = 2 * T
            hs = torch.fft.ifft(torch.fft.fft(v, n=n, dim=0) * torch.fft.fft(K, n=n, dim=0).unsqueeze(1), dim=0)[:T]
            h_last = hs[-1]  # (every h_t was formed: hs (T, B, N))
        loss = (torch.cat([h_last.real, h_last.imag], -1) @ u).sum()  # u . h_{T-1}
        loss.backward()
    return f


def lru_row(T: int, H: int, B: int, rounds: int = 3, quiet: bool = False) -> dict:
    from analysis.experiment import run_experiment
    cfg, batch, model = _built(_config("lru", T, H, B))  # the weights run_experiment builds (the same seed)
    cell, x = model.net.layers[0][0], batch.inputs
    out = {}

    def analysis():
        out["res"] = run_experiment(_config("lru", T, H, B))

    fns = {"analysis": analysis, "loop": plain_lru(cell, model.readout, x, "loop"),
           "fft": plain_lru(cell, model.readout, x, "fft"), "ours_fwd_bwd": fwd_bwd_ours(model, x)}
    m = measure_interleaved(fns, Plan(min_reps=rounds, max_reps=rounds, budget_s=0.0, once_s=math.inf))
    times = {k: v[0] for k, v in m.items()}
    res = out["res"]
    row = {"row": "lru", "T": T, "H": H, "B": B, "rounds": m["analysis"][1], **{f"{k}_s": v for k, v in times.items()},
           "analysis_over_loop": paired_ratio(m["analysis"][2], m["loop"][2]),
           "analysis_over_fft": paired_ratio(m["analysis"][2], m["fft"][2]),
           "stages": {k: round(v, 3) for k, v in res.timings.items()}, "method": res.jac.method}
    if not quiet:
        print(f"lru    T={T} H={H} B={B} ({row['rounds']} rounds)  analysis {times['analysis']:.2f} s  plain loop "
              f"fwd+bwd {times['loop']:.2f} s  "
              f"fft fwd+bwd {times['fft']:.2f} s  our fwd+bwd {times['ours_fwd_bwd']:.2f} s  analysis/loop "
              f"{row['analysis_over_loop']:.2f} (target <= 2 vs the loop)  analysis/fft {row['analysis_over_fft']:.2f}  "
              f"stages {row['stages']}", flush=True)
    return row


def plain_gated(cell, readout, x):
    """A forward+backward of a time-varying diagonal cell in plain torch, its weights copied: a callable. The papers'
    equations written out (as tests/test_modern_cells_analysis.py has them), every gate at once, then the loop."""
    from rnn_models.cells import MinGRUCell, RGLRUCell
    from rnn_models.cells.rglru import C
    p = {n: t.detach().clone().requires_grad_(True) for n, t in cell.named_parameters()}
    u = readout.weight.detach()[0]  # (H,) the probe's unit vector
    T, B, _ = x.shape
    H = cell.hidden_size

    def f():
        for t in p.values():
            t.grad = None
        pre = torch.nn.functional.linear(x, p["weight_in"], p["bias_in"])  # (T, B, G) every step's pre-activations
        if isinstance(cell, RGLRUCell):
            # a_t = sigma(Lambda)^(c r_t) = exp(-c softplus(-Lambda) r_t);  b_t = sqrt(1 - a_t^2) (i_t x~_t)
            log_a = -C * torch.nn.functional.softplus(-p["Lambda"]) * torch.sigmoid(pre[..., :H])
            xt = pre[..., 2 * H:] if pre.shape[-1] == 3 * H else x
            a, b = torch.exp(log_a), torch.sqrt(-torch.expm1(2 * log_a)) * torch.sigmoid(pre[..., H:2 * H]) * xt
        elif isinstance(cell, MinGRUCell):
            # a_t = 1 - z_t, b_t = z_t h~_t
            z = torch.sigmoid(pre[..., :H])
            a, b = 1 - z, z * pre[..., H:]
        else:  # minLSTM: a_t = f_t / (f_t + i_t), b_t = i_t / (f_t + i_t) h~_t
            fg, ig = torch.sigmoid(pre[..., :H]), torch.sigmoid(pre[..., H:2 * H])
            a, b = fg / (fg + ig), ig / (fg + ig) * pre[..., 2 * H:]
        h = torch.zeros(B, H, dtype=x.dtype)
        for a_t, b_t in zip(a.unbind(0), b.unbind(0)):  # (indexing per step would make the backward O(T^2))
            h = torch.addcmul(b_t, a_t, h)  # h_t = a_t h_{t-1} + b_t
        (h @ u).sum().backward()  # u . h_{T-1}
    f.params = p  # the copies, their .grad after a call (tests/test_diagonal_scan.py reads them)
    return f


def gated_rows(T: int, H: int, B: int, rounds: int = 3) -> list[dict]:
    from analysis.experiment import run_experiment
    rows = []
    for kind in KINDS[1:]:
        cfg, batch, model = _built(_config(kind, T, H, B))
        out = {}

        def analysis():
            out["res"] = run_experiment(_config(kind, T, H, B))

        fns = {"analysis": analysis, "loop": plain_gated(model.net.layers[0][0], model.readout, batch.inputs)}
        m = measure_interleaved(fns, Plan(min_reps=rounds, max_reps=rounds, budget_s=0.0, once_s=math.inf))
        times = {k: v[0] for k, v in m.items()}
        res = out["res"]
        row = {"row": "gated", "cell": kind, "T": T, "H": H, "B": B, "rounds": m["analysis"][1],
               **{f"{k}_s": v for k, v in times.items()},
               "analysis_over_loop": paired_ratio(m["analysis"][2], m["loop"][2]),
               "stages": {k: round(v, 3) for k, v in res.timings.items()}, "gradient_method": res.grad.method,
               "method": res.jac.method}
        print(f"gated  {kind:8s} T={T} H={H} B={B} ({row['rounds']} rounds)  analysis {times['analysis']:.2f} s  plain "
              f"loop fwd+bwd {times['loop']:.2f} s  analysis/loop {row['analysis_over_loop']:.2f} (target <= 2)  "
              f"stages {row['stages']}", flush=True)
        rows.append(row)
    return rows


def cell_rows(T: int, H: int, B: int) -> list[dict]:
    from analysis.experiment import run_experiment
    rows = []
    for kind in KINDS:
        cfg, batch, model = _built(_config(kind, T, H, B))
        fb = _clock(fwd_bwd_ours(model, batch.inputs))
        t0 = time.perf_counter()
        res = run_experiment(_config(kind, T, H, B))
        total = time.perf_counter() - t0
        st = res.timings
        rows.append({"row": "cells", "cell": kind, "T": T, "H": H, "B": B, "analysis_s": total,
                     "gradients_s": st["gradients_s"], "jacobians_s": st["jacobians_s"], "fwd_bwd_s": fb,
                     "analysis_over_fwd_bwd": total / fb})
        print(f"cells  {kind:8s} T={T} H={H} B={B}  analysis {total:.2f} s (gradients {st['gradients_s']:.2f}, "
              f"jacobians {st['jacobians_s']:.2f})  our fwd+bwd {fb:.2f} s  analysis/fwd+bwd {total / fb:.2f}",
              flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="T=500, H=64: checks that it works (seconds)")
    p.add_argument("--T", type=int, default=10_000)
    p.add_argument("--H", type=int, default=256)
    p.add_argument("--B", type=int, default=16)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the lru row (default 3)")
    p.add_argument("--skip-cells", action="store_true", help="the LRU and gated rows only")
    p.add_argument("--skip-lru", action="store_true", help="no LRU row")
    p.add_argument("--skip-gated", action="store_true", help="no rows for RG-LRU, minGRU, minLSTM")
    p.add_argument("--json", default=None, metavar="PATH")
    a = p.parse_args(argv)
    T, H = (500, 64) if a.quick else (a.T, a.H)
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    import analysis.limits as lim
    lim.configure(lim.Limits(None, None, "benchmark"))  # the host's memory limit would refuse the long rows
    lru_row(50, 8, 2, rounds=1, quiet=True)  # warm-up: imports, first calls
    rows = [] if a.skip_lru else [lru_row(T, H, a.B, a.rounds)]
    if not a.skip_gated:
        rows += gated_rows(T, H, a.B, a.rounds)
    if not a.skip_cells:
        rows += cell_rows(T, H, a.B)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
