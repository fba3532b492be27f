"""Overhead of ``analysis.watch`` on the word-level LSTM language model of examples/word_lm, as ratios in one run.

    python benchmarks/bench_watch_overhead.py [--rounds 20] [--hidden 200] [--threads 1] [--vocab 33278]

--vocab N replaces the sonnets (961 tokens) by random ids over N tokens with the same layout (33,278 is
wikitext-2's vocabulary, what PyTorch's example trains on): the decoder's share of a step grows with N, the
watch's cost does not, so the ratios depend on it; both are worth printing.

Interleaved rounds on the same batch (medians over rounds, so machine load hits every part alike):
    step     one training step unwatched: forward, loss, zero_grad, backward, clip, SGD step
    record   w.record(step) on that step's backward (every step): the per-time-step total ||dL/dh_t||, every layer
    probe    the every-N probe: Jacobian sigma_max by lag + horizon on one sequence, W_hh eigenvalues
Targets (issue 17):  record / step <= 0.05;  (record + probe / 100) / step <= 0.10  (every = 100).
Memory (a child process, glibc's mmap threshold fixed at 64 KiB so every tensor is its own mapping and the
resident set follows live tensors; the peak reset through /proc/self/clear_refs):
    activations  resident growth over one forward whose graph is kept (the whole model; the nn.LSTM alone too)
    record       peak resident growth during w.record over the state after backward
Target: record's peak extra <= 2x one batch's activations.
Times are wall clock and, in [], the process's CPU time (time.process_time: one thread, so it is the work done,
stretched less than the wall clock when other processes share the cores); the load average is printed.
Prints times and ratios and whether each target is met (on the wall clock); asserts nothing.

--background also measures ``watch(..., background=True)`` (after the rounds above, same model and batch): blocks of
--block steps alternate unwatched / watched (record handed to the worker thread), the first pair dropped; after each
watched block ``flush`` waits for the worker (so each unwatched block runs with the worker idle):
    step, worker idle      an unwatched step (median)
    watched step           step + record() on the training thread while the worker runs (median): the record()
                           call is the snapshot and the hand-over, plus any wait on the full queue (counted)
    ratio                  watched step / step - 1, the target's measure (wall clock)
    incl. tails            the same from block totals, each watched block's flush counted (conservative)
    CPU [process]          block totals of time.process_time (every thread: the worker's chain included) minus the
                           unwatched blocks': the work moved to the worker, not removed
The training runs at --threads intra-op threads (default 1) and so does the worker (torch's setting is
process-wide), so on 2 cores each holds one; other processes' load takes the worker's core away first.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "examples" / "word_lm"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--hidden", type=int, default=200)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1: 2 shared cores)")
    ap.add_argument("--vocab", type=int, default=0, help="random ids over this many tokens (0: the sonnets)")
    ap.add_argument("--background", action="store_true", help="also measure watch(..., background=True)")
    ap.add_argument("--block", type=int, default=10, help="steps per block in the --background measurement")
    ap.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        return memory_child(args)
    torch.set_num_threads(args.threads)
    from lm import WordLM, batchify, corpus, windows

    from analysis import watch

    torch.manual_seed(0)
    ids, vocab = corpus()
    data = batchify(ids, 20)
    x, y, _ = next(windows(data, 35))
    if args.vocab:
        vocab = range(args.vocab)
        x, y = torch.randint(0, args.vocab, (35, 20)), torch.randint(0, args.vocab, (35, 20))
    model = WordLM(len(vocab), args.hidden, args.hidden, args.layers)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step():
        out, _ = model(x)
        loss = F.cross_entropy(out.reshape(-1, len(vocab)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        return loss

    def finish():
        nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()

    with tempfile.TemporaryDirectory() as d:
        w = watch(model, d + "/run", every=10**9)
        times = {"step": [], "record": [], "probe": []}
        cpu = {"step": [], "record": [], "probe": []}
        for r in range(args.rounds + 2):
            t0, c0 = time.perf_counter(), time.process_time()
            loss = step()
            t1, c1 = time.perf_counter(), time.process_time()
            w.record(r, loss=loss)
            t2, c2 = time.perf_counter(), time.process_time()
            finish()
            t3, c3 = time.perf_counter(), time.process_time()
            if r % 4 == 0:
                w.probe(r)
            t4, c4 = time.perf_counter(), time.process_time()
            if r >= 2:  # warm-up rounds dropped
                for d_, (a0, a1, a2, a3, a4) in ((times, (t0, t1, t2, t3, t4)), (cpu, (c0, c1, c2, c3, c4))):
                    d_["step"].append(a1 - a0 + a3 - a2)
                    d_["record"].append(a2 - a1)
                    if r % 4 == 0:
                        d_["probe"].append(a4 - a3)
        w.close()
        bg = background(model, step, finish, d + "/bg", args) if args.background else None
    med = {k: statistics.median(v) for k, v in times.items() if v}
    cmed = {k: statistics.median(v) for k, v in cpu.items() if v}
    s, rec, pr = med["step"], med["record"], med.get("probe", 0.0)
    cs, crec, cpr = cmed["step"], cmed["record"], cmed.get("probe", 0.0)
    print(f"word LM: LSTM {args.layers}x{args.hidden}, vocab {len(vocab)}, T=35, B=20, threads={args.threads}, "
          f"{args.rounds} interleaved rounds (medians; wall clock, and in [] the process's CPU time, which other "
          f"processes' load stretches less; load average {os.getloadavg()[0]:.2f})")
    print(f"  training step        {s * 1e3:8.2f} ms   [{cs * 1e3:8.2f} ms]")
    print(f"  record (every step)  {rec * 1e3:8.2f} ms   [{crec * 1e3:8.2f} ms]   ratio {rec / s:6.3f} "
          f"[{crec / cs:6.3f}]   target <= 0.05  {'met' if rec / s <= 0.05 else 'NOT met'}")
    print(f"  probe (every N)      {pr * 1e3:8.2f} ms   [{cpr * 1e3:8.2f} ms]   ratio {pr / s:6.3f} [{cpr / cs:6.3f}]")
    tot, ctot = (rec + pr / 100) / s, (crec + cpr / 100) / cs
    print(f"  all at every=100                                    ratio {tot:6.3f} [{ctot:6.3f}]   target <= 0.10  "
          f"{'met' if tot <= 0.10 else 'NOT met'}")
    if bg:
        print(bg)
    memory(argv)
    return 0


def _sched() -> tuple[float, float]:
    """(s on a CPU, s runnable but waiting for one) of the calling thread (Linux schedstat; zeros elsewhere)."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            run, wait = f.read().split()[:2]
        return int(run) * 1e-9, int(wait) * 1e-9
    except (OSError, ValueError):
        return 0.0, 0.0


def background(model, step, finish, run_dir: str, args) -> str:
    """The --background measurement (see the module docstring); returns its lines."""
    from analysis import watch

    K = args.block
    nblocks = max(1, args.rounds // K) + 1  # the first pair is a warm-up (the thread, the chain's buffers)
    wb = watch(model, run_dir, every=10**9, background=True)
    plain, watched, call, tcpu_step, tcpu_call = [], [], [], [], []
    split = {"plain": [], "watched": []}  # the training thread's wall per step: (on a CPU, runnable, off)
    blk = {"plain": [0.0, 0.0], "watched": [0.0, 0.0]}  # wall, process CPU (tails included)
    n = 1  # step ids from 1: step 0 would probe
    for b in range(nblocks):
        for kind in ("plain", "watched"):
            w0, p0 = time.perf_counter(), time.process_time()
            for _ in range(K):
                s0 = _sched()
                t0, c0 = time.perf_counter(), time.thread_time()
                loss = step()
                t1, c1 = time.perf_counter(), time.thread_time()
                if kind == "watched":
                    wb.record(n, loss=loss)
                    n += 1
                t2, c2 = time.perf_counter(), time.thread_time()
                finish()
                t3, c3 = time.perf_counter(), time.thread_time()
                s1 = _sched()
                if b == 0:
                    continue
                on, queued = s1[0] - s0[0], s1[1] - s0[1]
                split[kind].append((on, queued, t3 - t0 - on - queued))
                if kind == "plain":
                    plain.append(t3 - t0)
                else:
                    watched.append(t3 - t0)
                    call.append(t2 - t1)
                    tcpu_step.append(c1 - c0 + c3 - c2)
                    tcpu_call.append(c2 - c1)
            if kind == "watched":
                wb.flush()  # the worker catches up: the next unwatched block runs with it idle
            if b > 0:
                blk[kind][0] += time.perf_counter() - w0
                blk[kind][1] += time.process_time() - p0
    blocked, blocked_s = wb._worker.blocked, wb._worker.blocked_s
    wb.close()
    med = statistics.median
    s, ws, rc = med(plain), med(watched), med(call)
    ratio, tails = ws / s - 1, blk["watched"][0] / blk["plain"][0] - 1
    cpu = blk["watched"][1] / blk["plain"][1] - 1
    m = len(plain)
    return "\n".join([
        f"  background=True: {nblocks - 1} x {K} unwatched and {K} watched steps alternating (first pair dropped), "
        f"load average {os.getloadavg()[0]:.2f}",
        f"    step, worker idle    {s * 1e3:8.2f} ms",
        f"    watched step         {ws * 1e3:8.2f} ms   of which record() {rc * 1e3:6.2f} ms (training thread CPU: "
        f"step {med(tcpu_step) * 1e3:.2f} ms, record() {med(tcpu_call) * 1e3:.2f} ms); record() blocked "
        f"{blocked} of {n - 1} times, {blocked_s * 1e3:.0f} ms in all",
        f"    ratio (wall)         {ratio:6.3f}   target <= 0.05  {'met' if ratio <= 0.05 else 'NOT met'}   "
        f"(incl. tails {tails:6.3f})",
        f"    CPU [process]        [{cpu:6.3f}]   the worker's chain: moved to another core, not removed "
        f"({m} steps each)",
        "    training thread per step (schedstat medians): " + "; ".join(
            f"{k} {med(v[0] for v in split[k]) * 1e3:.1f} ms on a CPU, {med(v[1] for v in split[k]) * 1e3:.1f} ms "
            f"runnable waiting for one, {med(v[2] for v in split[k]) * 1e3:.1f} ms off (GIL, queue)"
            for k in ("plain", "watched"))])


def memory(argv) -> None:
    """Run the memory measurement in a child with a fixed mmap threshold and print its lines."""
    import subprocess
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    cmd = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--memory-child"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    print(out.stdout.rstrip() or f"  memory: the child failed: {out.stderr.strip()[-300:]}")


def _rss() -> dict:
    vals = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, v = line.split(":", 1)
            if k in ("VmRSS", "VmHWM"):
                vals[k] = int(v.split()[0]) * 1024
    return vals


def memory_child(args) -> int:
    torch.set_num_threads(args.threads)
    from lm import WordLM, batchify, corpus, windows

    from analysis import watch

    torch.manual_seed(0)
    ids, vocab = corpus()
    x, y, _ = next(windows(batchify(ids, 20), 35))
    V = args.vocab or len(vocab)
    if args.vocab:
        x, y = torch.randint(0, V, (35, 20)), torch.randint(0, V, (35, 20))
    model = WordLM(V, args.hidden, args.hidden, args.layers)
    with tempfile.TemporaryDirectory() as d:
        w = watch(model, d + "/run", every=10**9)
        for r in range(3):  # warm-up: every buffer the loop and the watch keep exists before measuring
            out, _ = model(x)
            loss = F.cross_entropy(out.reshape(-1, V), y.reshape(-1))
            model.zero_grad()
            loss.backward()
            w.record(r, loss=loss)
            del out, loss
        r0 = _rss()["VmRSS"]
        out, _ = model(x)
        loss = F.cross_entropy(out.reshape(-1, V), y.reshape(-1))
        acts = _rss()["VmRSS"] - r0  # the whole model's activations kept for backward (and the logits)
        emb = model.encoder(x).detach()
        ra = _rss()["VmRSS"]
        h, _ = model.rnn(emb)
        acts_rnn = _rss()["VmRSS"] - ra
        del h, emb
        model.zero_grad()
        loss.backward()
        del out
        r2 = _rss()["VmRSS"]
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident set
        w.record(99, loss=loss)
        extra = _rss()["VmHWM"] - r2
        w.close()
    mb = 2**20
    print(f"  memory: one batch's activations {acts / mb:7.1f} MB (the nn.LSTM's own {acts_rnn / mb:.1f} MB); "
          f"record's peak extra {extra / mb:.1f} MB = {extra / max(acts, 1):.2f}x the batch's "
          f"({extra / max(acts_rnn, 1):.2f}x the LSTM's)   target <= 2x  {'met' if extra <= 2 * acts else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
