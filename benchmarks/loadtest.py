"""Load test: simulated visitors (headless Chromium pages) on one dashboard server on loopback; prints results
correct, errors shown, p50/p95 time to first chart per class of visitor, server peak RSS and the server's CPU
seconds after the tabs closed.

    python -m benchmarks.loadtest --visitors 8                     (make loadtest: every scenario)
    python -m benchmarks.loadtest --scenarios visitors,heavy,uploads,sweeps,trainers

``visitors``: K visitors open different links at once (cell, dtype, size, seed). The hostile scenarios of issue 20
(ten heavy links and a plain visitor, an upload flood, sweeps, six trainers) are in benchmarks/loadtest_scenarios.py.
"correct" means the gradient-norm line drawn in a page equals ``run_experiment(only="gradients")`` of the same
config in this process (to 1e-12 relative); a hostile visitor's expected answer is one error line (no traceback).
After each scenario its tabs are closed and the server's CPU seconds are measured over the next 20 s and the 10 s
after that (a background job nobody watches stops within dashboard.background.LEASE_S = 15 s). Bounded: at most
32 visitors, --timeout per scenario (default 300 s); the server binds 127.0.0.1 on a free port and is stopped at
the end. Needs Chromium at /usr/bin/chromium (make browser) and playwright (requirements.txt).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def visitor_params(i: int) -> dict:
    cells = ("rnn", "lstm", "gru")
    return {"compare": cells[i % 3], "dtype": ("float32", "float64")[(i // 3) % 2], "seed": str(100 + i),
            "seq_len": str(40 + 10 * (i % 4)), "hidden_size": str(16 + 8 * (i % 3)), "batch_size": "8",
            "jacobian_lags": "log"}


def rss_tree(pid: int) -> int:
    """Resident bytes of the process and its children."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            kids = open(f"/proc/{p}/task/{p}/children").read().split()
            todo += [int(k) for k in kids]
        except OSError:
            continue
    return total


def start_server(env_extra: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env_extra}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard" / "app.py"), "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                return proc, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("the server did not start within 90 s")


def expected(params: dict) -> list[float]:
    """The gradient-norm line a page of these link settings draws first: its first cell's gradient pass."""
    sys.path.insert(0, str(ROOT))
    from analysis.config import ExperimentConfig
    from analysis.experiment import run_experiment
    from analysis.presets import PRESETS
    base = PRESETS["default"].config.to_dict()
    ints = ("seed", "seq_len", "hidden_size", "batch_size", "jacobian_batch")
    over = {k: (int(v) if k in ints else v) for k, v in params.items()}
    if "compare" in over:
        over["cell"], over["compare"] = over.pop("compare"), ()
    cfg = ExperimentConfig.from_dict({**base, **over})
    cfg = cfg.for_cell(cfg.cells[0])
    return [float(v) for v in run_experiment(cfg, only="gradients").grad.grad_norm]


def browser_cpu_seconds() -> float:
    """CPU seconds of every Chromium process on the machine (the simulated visitors' browser)."""
    total = 0.0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if "chrom" not in open(f"/proc/{d}/comm").read():
                continue
            fields = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            continue
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the process (all its threads) and its waited-for children."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return float("nan")


def decode(y) -> list | None:
    """A plotly array as sent to the page: a list, or {"dtype", "bdata"} (base64)."""
    if isinstance(y, dict) and "bdata" in y:
        import base64

        import numpy as np
        return np.frombuffer(base64.b64decode(y["bdata"]), dtype=np.dtype("<" + y["dtype"])).tolist()
    return y


def close(a: list, b: list, rtol: float = 1e-12) -> bool:
    a = decode(a)
    if a is None or b is None or len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x is None or y is None:
            if x != y:
                return False
        elif abs(x - y) > rtol * max(abs(x), abs(y), 1e-300):
            return False
    return True


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def visitors(browser, url: str, timeout: float, n: int = 8) -> tuple[list, list]:
    """K visitors open different links at once."""
    from benchmarks.loadtest_scenarios import open_page, wait_chart, link
    deadline = time.monotonic() + timeout
    params = [visitor_params(i) for i in range(n)]
    pages = [open_page(browser, link(url, p)) for p in params]
    recs = [{"cls": "visitor (different links)", "params": p} for p in params]
    for page, rec in zip(pages, recs):
        wait_chart(page, rec, deadline)
    return recs, pages


class Server:
    """The dashboard in a subprocess, its peak RSS sampled every 0.1 s."""

    def __init__(self, env: dict):
        self.proc, self.url = start_server(env)
        self.peak, self._stop = rss_tree(self.proc.pid), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_tree(self.proc.pid))
            time.sleep(0.1)

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self):
        self._stop.set()
        self._thread.join(2)
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def after_close(server: Server, pages: list) -> tuple[float, float]:
    """Close the tabs; the server's CPU seconds over the next 20 s, and over the 10 s after those."""
    for page in pages:
        try:
            page.close()
        except Exception:  # noqa: BLE001 - already gone
            pass
    c0 = server.cpu()
    time.sleep(20)
    c1 = server.cpu()
    time.sleep(10)
    return c1 - c0, server.cpu() - c1


def server_ceiling(env: dict) -> float | None:
    """The server's GDLAB_MAX_SERVER_MB (dashboard.scheduler.server_ceiling_mb of its environment)."""
    sys.path.insert(0, str(ROOT))
    from dashboard.scheduler import server_ceiling_mb
    return server_ceiling_mb({**os.environ, **env})


def door_summary(path: str, offset: int) -> tuple[list[dict], int]:
    """The server's door log (GDLAB_DOOR_LOG) from ``offset``: per kind and label, how many, the seconds waited in
    line (p50 / max) and held (p50 / max)."""
    try:
        with open(path) as f:
            f.seek(offset)
            lines = [json.loads(x) for x in f.read().splitlines() if x.strip()]
            offset = f.tell()
    except OSError:
        return [], offset
    groups: dict[tuple, list] = {}
    for x in lines:
        groups.setdefault((x["kind"], x["label"]), []).append(x)
    rows = []
    for (kind, label), xs in sorted(groups.items()):
        w, h = [x["waited_s"] for x in xs], [x["held_s"] for x in xs]
        rows.append({"kind": kind, "label": label, "n": len(xs), "wait_p50_s": round(percentile(w, 0.5), 1),
                     "wait_max_s": round(max(w), 1), "held_p50_s": round(percentile(h, 0.5), 1),
                     "held_max_s": round(max(h), 1)})
    return rows, offset


def summarize(recs: list) -> list[dict]:
    """One row per class of visitor."""
    rows = {}
    for r in recs:
        row = rows.setdefault(r["cls"], {"class": r["cls"], "n": 0, "correct": 0, "checked": 0, "errors": 0,
                                         "expected_errors": 0, "times": [], "failures": []})
        row["n"] += 1
        if "params" in r and "failure" not in r:
            row["checked"] += 1
            row["correct"] += close(r.get("grad"), expected(r["params"]))
        if r.get("expected"):
            row["expected_errors"] += r.get("errors", 0)
        else:
            row["errors"] += r.get("errors", 0)
        if "first_s" in r:
            row["times"].append(r["first_s"])
        if "failure" in r:
            row["failures"].append(r["failure"])
        if r.get("message") and "message" not in row:
            row["message"] = " ".join(r["message"].split())
    for row in rows.values():
        t = row.pop("times")
        row["p50_s"], row["p95_s"] = round(percentile(t, 0.5), 2), round(percentile(t, 0.95), 2)
    return list(rows.values())


def main(argv=None) -> int:
    from benchmarks.loadtest_scenarios import SCENARIOS
    scenarios = {"visitors": visitors, **SCENARIOS}
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--visitors", type=int, default=8, help="visitors of the 'visitors' scenario (1-32)")
    ap.add_argument("--scenarios", default=",".join(scenarios), help="comma-separated: " + ", ".join(scenarios))
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per scenario")
    ap.add_argument("--max-concurrent", type=int, default=0, help="GDLAB_MAX_CONCURRENT of the server (0: default)")
    ap.add_argument("--ray", default="", help="GDLAB_RAY_ADDRESS of the server ('local': a Ray it starts itself)")
    a = ap.parse_args(argv)
    if not 1 <= a.visitors <= 32:
        ap.error("--visitors must be in [1, 32]")
    chosen = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    bad = [s for s in chosen if s not in scenarios]
    if bad:
        ap.error(f"--scenarios: {bad[0]!r} is not a scenario; choose from {', '.join(scenarios)}")
    from playwright.sync_api import sync_playwright
    env = {"GDLAB_MAX_CONCURRENT": str(a.max_concurrent)} if a.max_concurrent else {}
    if a.ray:
        env["GDLAB_RAY_ADDRESS"] = a.ray
    import tempfile
    door_log = env["GDLAB_DOOR_LOG"] = os.path.join(tempfile.mkdtemp(prefix="gdlab-loadtest-"), "door.jsonl")
    log_at = 0
    server = Server(env)
    idle_rss, out, t_start = server.peak, [], time.monotonic()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            # warm-up (not counted): the first script run imports torch and the app (a lecturer's server is
            # started before the class arrives)
            warm = browser.new_page()
            warm.goto(f"{server.url}/?seq_len=12&hidden_size=4&batch_size=2", timeout=a.timeout * 1000)
            warm.wait_for_selector(".js-plotly-plot .main-svg", timeout=a.timeout * 1000)
            warm.close()
            idle_rss = rss_tree(server.proc.pid)
            for name in chosen:
                fn = scenarios[name]
                t0, c0, b0 = time.monotonic(), server.cpu(), browser_cpu_seconds()
                recs, pages = fn(browser, server.url, a.timeout, a.visitors) if name == "visitors" else \
                    fn(browser, server.url, a.timeout)
                wall = time.monotonic() - t0
                server_cpu, browser_cpu = server.cpu() - c0, browser_cpu_seconds() - b0
                cpu20, cpu30 = after_close(server, pages)
                door, log_at = door_summary(door_log, log_at)
                out.append({"scenario": name, "wall_s": round(wall, 1), "cpu_s_0_20_after_close": round(cpu20, 1),
                            "cpu_s_20_30_after_close": round(cpu30, 1), "load_avg": os.getloadavg()[0],
                            "server_cpu_s": round(server_cpu, 1), "browser_cpu_s": round(browser_cpu, 1),
                            "rows": summarize(recs), "door": door})
                print(json.dumps(out[-1]), flush=True)
            browser.close()
    finally:
        server.stop()
    ceiling = server_ceiling(env)
    print(f"\nserver peak RSS {server.peak / 2**20:.0f} MB (idle {idle_rss / 2**20:.0f} MB; ceiling "
          f"GDLAB_MAX_SERVER_MB {'off' if ceiling is None else f'{ceiling:,.0f} MB'}"
          f"{'' if ceiling is None else (', under it' if server.peak / 2**20 < ceiling else ', ABOVE it')}) · "
          f"{time.monotonic() - t_start:.0f} s · load average now {os.getloadavg()[0]:.2f}")
    print(f"{'scenario':9} {'class of visitor':30} {'n':>3} {'correct':>8} {'errors':>6} {'one-line':>8} "
          f"{'p50 s':>7} {'p95 s':>7} {'CPU s after close (0-20 / 20-30 s)':>36}")
    ok = True
    for sc in out:
        for row in sc["rows"]:
            correct = f"{row['correct']}/{row['checked']}" if row["checked"] else "-"
            print(f"{sc['scenario']:9} {row['class'][:30]:30} {row['n']:>3} {correct:>8} {row['errors']:>6} "
                  f"{row['expected_errors']:>8} {row['p50_s']:>7} {row['p95_s']:>7} "
                  f"{sc['cpu_s_0_20_after_close']:>24} / {sc['cpu_s_20_30_after_close']}")
            ok &= row["errors"] == 0 and row["correct"] == row["checked"]
            for f in row["failures"]:
                print(f"          failure: {f}")
            if row.get("message"):
                print(f"          one line shown: {row['message'][:230]}")
        for d in sc["door"]:
            print(f"          door: {d['kind']:11} {d['label'][:34]:34} n={d['n']:<3} waited p50 {d['wait_p50_s']} s, "
                  f"max {d['wait_max_s']} s · held p50 {d['held_p50_s']} s, max {d['held_max_s']} s")
        print(f"          wall {sc['wall_s']} s · CPU s: server {sc['server_cpu_s']}, browser {sc['browser_cpu_s']} · "
              f"load average {sc['load_avg']:.1f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
