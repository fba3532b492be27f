r"""Issue 18's targets on the model researchers start from: PyTorch's word-language-model LSTM (benchmarks/word_lm.py:
encoder, 2-layer nn.LSTM, decoder to V words, B=20), as ratios to ITS OWN forward+backward (fused nn.LSTM,
cross-entropy over the vocabulary) measured in the same run, interleaved (median of repeats).

    python benchmarks/bench_own_model_lm.py                 # every row (the H=650, T=1000 row takes minutes)
    python benchmarks/bench_own_model_lm.py --rows 200x1000,650x35 --repeats 1
    python benchmarks/bench_own_model_lm.py --rows none --spectra 200x200,650x35     # only the fast/exact rows

| row | numerator | target |
|---|---|---|
| gradients | analyze(model, ids, embedding, readout, targets, views="gradients") | <= 1.5x at every size |
| light     | analyze(..., jacobian_detail="light"): log-spaced lags, 4 sequences, spectra fast | 200x1000 <= 3x, 650x1000 <= 10x, 650x35 <= 20x |
| spectra   | analyze(..., views="jacobians", spectra="fast") / the same with spectra="exact": the same lags and 4 sequences, timed interleaved in alternating order (``--spectra``; 16 log-spaced lags, then every lag) | "fast" never slower: < 1.0 where it takes the thin route; where it takes the exact route the two runs are the same work (the ratio is the machine's noise) |

It also prints the estimate the tool gives before each run (GFLOP and seconds at its calibrated rate) next to the
measured time. Times and ratios are printed, never asserted (benchmarks/README.md). One intra-op thread by
default (--threads N): the machine is shared.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis import analyze  # noqa: E402
from analysis.compute_views import ESTIMATE_SINK, estimate_seconds  # noqa: E402
from benchmarks.word_lm import WordLM  # noqa: E402

TARGETS = {("light", 200, 1000): 3.0, ("light", 650, 1000): 10.0, ("light", 650, 35): 20.0}
V, B = 10_000, 20


def _fb(model, ids, tg) -> float:
    t = time.perf_counter()
    model.zero_grad(set_to_none=True)
    logits, _ = model(ids)
    F.cross_entropy(logits, tg.reshape(-1)).backward()
    return time.perf_counter() - t


def _analyze(model, ids, tg, **kw) -> tuple[float, object, list]:
    costs = []
    token = ESTIMATE_SINK.set(costs.append)
    try:
        t = time.perf_counter()
        r = analyze(model, ids, embedding="encoder", readout="decoder", targets=tg, **kw)
        return time.perf_counter() - t, r, costs
    finally:
        ESTIMATE_SINK.reset(token)


def row(H: int, T: int, repeats: int) -> list[dict]:
    torch.manual_seed(0)
    model = WordLM("LSTM", V, H, H, 2, dropout=0.2).eval()  # eval: dropout off, as the analysis runs it
    ids = torch.randint(0, V, (T, B))
    tg = torch.randint(0, V, (T, B))
    _fb(model, ids, tg)  # warm-up, and the analysis's one-time start (imports, scripted cells) on a short slice
    _analyze(model, ids[:4], tg[:4], views="gradients")
    fbs, out = [], {"gradients": [], "light": []}
    info = {}
    for _ in range(repeats):  # interleaved: each analysis next to its own forward+backward
        for kind, kw in (("gradients", {"views": "gradients"}), ("light", {"jacobian_detail": "light"})):
            fbs.append(_fb(model, ids, tg))
            t, r, costs = _analyze(model, ids, tg, **kw)
            out[kind].append(t)
            info[kind] = (r, costs)
    fb = statistics.median(fbs)
    rows = []
    for kind, ts in out.items():
        r, costs = info[kind]
        t = statistics.median(ts)
        est = costs[0] if costs else None
        j = r.jac.extras.get("sigma_max_estimate") if r.jac is not None else None
        rows.append({"kind": kind, "H": H, "T": T, "fb_s": fb, "t_s": t, "ratio": t / fb,
                     "target": TARGETS.get((kind, H, T), 1.5 if kind == "gradients" else None),
                     "estimate": f"{est.gflop:,.0f} GFLOP ~{estimate_seconds(est):,.0f} s" if est else "-",
                     "route": ("thin" if j and "thin" in j["method"] else "exact") if r.jac is not None else "-"})
    return rows


def spectra_rows(H: int, T: int, repeats: int) -> list[dict]:
    """spectra="fast" / spectra="exact" on the same Jacobian settings (4 sequences; log-spaced lags, then every
    lag), the Jacobian views only, interleaved; which route "fast" took (thin, or exact where the estimate said
    the formed products were cheaper)."""
    torch.manual_seed(0)
    model = WordLM("LSTM", V, H, H, 2, dropout=0.2).eval()
    ids, tg = torch.randint(0, V, (T, B)), torch.randint(0, V, (T, B))
    _analyze(model, ids[:4], tg[:4], views="jacobians", jacobian_detail="exact", jacobian_batch=4)  # warm-up
    rows = []
    for lags in ("log", "all"):
        kw = dict(views="jacobians", jacobian_detail="exact", jacobian_batch=4, jacobian_lags=lags, num_log_lags=16)
        ts = {"fast": [], "exact": []}
        for i in range(repeats):
            for sp in (("fast", "exact") if i % 2 == 0 else ("exact", "fast")):  # alternating: no order advantage
                t, r, _ = _analyze(model, ids, tg, spectra=sp, **kw)
                ts[sp].append(t)
                if sp == "fast":
                    j = r.jac.extras.get("sigma_max_estimate")
                    route = "thin" if j and "thin" in j["method"] else "exact"
        fast, exact = statistics.median(ts["fast"]), statistics.median(ts["exact"])
        rows.append({"H": H, "T": T, "lags": lags, "fast_s": fast, "exact_s": exact, "ratio": fast / exact,
                     "route": route})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default="200x1000,650x35,650x1000", help="HxT, comma-separated")
    p.add_argument("--spectra", default="", help="HxT rows of spectra fast / exact, comma-separated (e.g. 200x200)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from analysis import limits
    limits.configure(limits.Limits(None, None, "benchmark"))  # the sizes are the point here (H=650, T=1000 ~4 GB)
    print(f"PyTorch word-LM LSTM, 2 layers, V={V}, B={B}, float32, {a.threads} intra-op thread(s), CPU")
    print(f"{'view':10s} {'H':>4s} {'T':>5s} {'fwd+bwd s':>9s} {'analysis s':>10s} {'ratio':>7s} {'target':>7s} "
          f"{'met':>4s} route  tool's estimate")
    for spec in [r for r in a.rows.split(",") if r != "none"]:
        H, T = (int(v) for v in spec.split("x"))
        for r in row(H, T, a.repeats):
            met = "-" if r["target"] is None else ("yes" if r["ratio"] <= r["target"] else "NO")
            tgt = f"{r['target']:.1f}x" if r["target"] else "-"
            print(f"{r['kind']:10s} {r['H']:4d} {r['T']:5d} {r['fb_s']:9.2f} {r['t_s']:10.2f} {r['ratio']:6.2f}x "
                  f"{tgt:>7s} {met:>4s} {r['route']:6s} {r['estimate']}", flush=True)
    if a.spectra:
        print("\nspectra fast / exact, views=jacobians, 4 sequences (fast never slower: < 1.0 on the thin route; the "
              "exact route is the same work)")
        print(f"{'H':>4s} {'T':>5s} {'lags':>4s} {'fast s':>7s} {'exact s':>8s} {'ratio':>6s} {'met':>4s} fast's route")
        for spec in a.spectra.split(","):
            H, T = (int(v) for v in spec.split("x"))
            for r in spectra_rows(H, T, a.repeats):
                met = ("yes" if r["ratio"] < 1.0 else "NO") if r["route"] == "thin" else "same"
                print(f"{r['H']:4d} {r['T']:5d} {r['lags']:>4s} {r['fast_s']:7.2f} {r['exact_s']:8.2f} "
                      f"{r['ratio']:6.2f} {met:>4s} {r['route']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
