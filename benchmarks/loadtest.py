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

The browsers stand for the visitors' own machines: the crowd's run at niceness 19 (``--browser-nice``;
benchmarks/loadtest_browser.py) and their CPU seconds are reported beside the server's; the timed visitors (heavy's
plain visitors) have a browser of their own at niceness 0 (``--timed-nice``): at 19 their pages waited for the
server's and the machine's other work to be drawn (measured: 43-46 s after the server had sent the chart). They reach the server
through a loopback proxy (benchmarks/loadtest_wire.py) that clocks the server's own time to first chart (its first
request -> the chart's message sent), printed beside the browsers' clock; benchmarks/loadtest_door.py splits each
page's time into its steps (loading the app, the script to the door, in line, in a slot, figures sent, drawn).
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
    """Resident bytes of the process and its descendants (the children of every thread: a local Ray's GCS and
    raylet are the children of the server's Ray thread, its workers the raylet's)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for tid in os.listdir(f"/proc/{p}/task"):
                todo += [int(k) for k in open(f"/proc/{p}/task/{tid}/children").read().split()]
        except OSError:
            continue
    return total


def start_server(env_extra: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env_extra}
    # the server's stderr beside the door log (a lost server says why there), else nowhere
    log = env_extra.get("GDLAB_DOOR_LOG")
    err = open(os.path.join(os.path.dirname(log), "server.err"), "w") if log else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard" / "app.py"), "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],  # a served class: no module reloads mid-run
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
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


def expected(params: dict) -> dict:
    """The gradient-norm line a page of these link settings draws first: its first cell's gradient pass, as norms
    and as exact log10 (the chart draws the latter where a norm lies below float64's range)."""
    from analysis.experiment import run_experiment
    from benchmarks.loadtest_door import page_config
    cfg = page_config(params)
    cfg = cfg.for_cell(cfg.cells[0])
    g = run_experiment(cfg, only="gradients").grad
    return {"norm": [float(v) for v in g.grad_norm], "log10": [float(v) for v in g.log10_grad_norm]}


def browser_cpu_seconds(server_pid: int) -> float:
    """CPU seconds of this harness's descendants but the server (the Playwright driver and its Chromium): the
    simulated visitors' browsers, not other users' Chromiums on the machine."""
    from benchmarks.loadtest_browser import tree_cpu_seconds
    return tree_cpu_seconds(os.getpid(), skip=server_pid)


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


def close(page, want: dict, rtol: float = 1e-12) -> bool:
    """The page's line ({"y", "log10"} from loadtest_scenarios.JS_GRAD) against ``expected``: norms, or exact log10
    values where the page's chart draws those."""
    if not isinstance(page, dict) or "y" not in page:
        return False
    a, b = decode(page["y"]), want["log10" if page.get("log10") else "norm"]
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
    recs = [{"cls": "visitor (different links)", "params": p} for p in params]
    pages = []
    for p, rec in zip(params, recs):
        rec["opened_at"] = time.time()
        pages.append(open_page(browser, link(url, p)))
    for page, rec in zip(pages, recs):
        wait_chart(page, rec, deadline)
    return recs, pages


class Server:
    """The dashboard in a subprocess, its peak RSS sampled every 0.1 s, the machine's load average every second."""

    def __init__(self, env: dict):
        self.proc, self.url = start_server(env)
        self.peak, self._stop = rss_tree(self.proc.pid), threading.Event()
        self.loads: list[tuple[float, float]] = []  # (monotonic time, 1-minute load average)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self):
        i = 0
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_tree(self.proc.pid))
            if i % 10 == 0:
                self.loads.append((time.monotonic(), os.getloadavg()[0]))
            i += 1
            time.sleep(0.1)

    def load(self, t0: float, t1: float) -> tuple[float, float]:
        """Mean and max of the 1-minute load average sampled between ``t0`` and ``t1`` (monotonic)."""
        xs = [x for t, x in self.loads if t0 <= t <= t1] or [os.getloadavg()[0]]
        return sum(xs) / len(xs), max(xs)

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
        s = [r["server_s"] for r in recs if r["cls"] == row["class"] and "server_s" in r]  # loadtest_door.timelines
        row["server_p50_s"], row["server_p95_s"] = round(percentile(s, 0.5), 2), round(percentile(s, 0.95), 2)
    return list(rows.values())


def main(argv=None) -> int:
    from benchmarks.loadtest_browser import census, descendants, launcher
    from benchmarks.loadtest_door import STEPS, door_summary, read_door, timeline_rows, timelines
    from benchmarks.loadtest_scenarios import SCENARIOS
    from benchmarks.loadtest_wire import Wire
    scenarios = {"visitors": visitors, **SCENARIOS}
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--visitors", type=int, default=8, help="visitors of the 'visitors' scenario (1-32)")
    ap.add_argument("--scenarios", default=",".join(scenarios), help="comma-separated: " + ", ".join(scenarios))
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per scenario")
    ap.add_argument("--max-concurrent", type=int, default=0, help="GDLAB_MAX_CONCURRENT of the server (0: default)")
    ap.add_argument("--browser-nice", type=int, default=19, help="niceness of the browsers (0-19; default 19: the "
                    "lowest priority, as if each visitor's browser ran on its own machine)")
    ap.add_argument("--timed-nice", type=int, default=0, help="niceness of the timed visitors' browser (heavy's "
                    "plain visitors; 0-19; default 0: the crowd's browsers do not draw their pages)")
    ap.add_argument("--ray", default="", help="GDLAB_RAY_ADDRESS of the server ('local': a Ray it starts itself)")
    a = ap.parse_args(argv)
    if not 1 <= a.visitors <= 32:
        ap.error("--visitors must be in [1, 32]")
    for flag, value in (("--browser-nice", a.browser_nice), ("--timed-nice", a.timed_nice)):
        if not 0 <= value <= 19:
            ap.error(f"{flag} must be in [0, 19]")
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
    wire = Wire(int(server.url.rsplit(":", 1)[1]))  # the browsers talk to the server through it (its clock)
    idle_rss, out, t_start = server.peak, [], time.monotonic()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=launcher(os.path.dirname(door_log), a.browser_nice),
                                         args=ARGS)
            timed = pw.chromium.launch(executable_path=launcher(os.path.dirname(door_log), a.timed_nice),
                                       args=ARGS) if a.timed_nice != a.browser_nice else browser
            # warm-up (not counted): the first script run imports torch and the app (a lecturer's server is
            # started before the class arrives)
            warm = browser.new_page()
            warm.goto(f"{wire.url}/?seq_len=12&hidden_size=4&batch_size=2", timeout=a.timeout * 1000)
            warm.wait_for_selector(".js-plotly-plot .main-svg", timeout=a.timeout * 1000)
            warm.close()
            idle_rss = rss_tree(server.proc.pid)
            for name in chosen:
                fn = scenarios[name]
                pid = server.proc.pid
                t0, c0, b0 = time.monotonic(), server.cpu(), browser_cpu_seconds(pid)
                recs, pages = fn(browser, wire.url, a.timeout, a.visitors) if name == "visitors" else \
                    fn(browser, wire.url, a.timeout, timed=timed) if name == "heavy" else fn(browser, wire.url, a.timeout)
                wall = time.monotonic() - t0
                server_cpu, browser_cpu = server.cpu() - c0, browser_cpu_seconds(pid) - b0
                nice = census(descendants(os.getpid(), skip=pid))
                load_mean, load_max = server.load(t0, time.monotonic())
                cpu20, cpu30 = after_close(server, pages)
                lines, log_at = read_door(door_log, log_at)
                timelines(recs, lines, wire)
                out.append({"scenario": name, "wall_s": round(wall, 1), "cpu_s_0_20_after_close": round(cpu20, 1),
                            "cpu_s_20_30_after_close": round(cpu30, 1), "load_avg": round(load_mean, 2),
                            "load_avg_max": round(load_max, 2), "server_cpu_s": round(server_cpu, 1),
                            "browser_cpu_s": round(browser_cpu, 1), "browser_threads_by_niceness": dict(nice),
                            "rows": summarize(recs), "door": door_summary(lines), "timelines": timeline_rows(recs)})
                print(json.dumps(out[-1]), flush=True)
            for b in {browser, timed}:
                b.close()
    finally:
        wire.close()
        server.stop()
    ceiling = server_ceiling(env)
    print(f"\nserver peak RSS {server.peak / 2**20:.0f} MB (idle {idle_rss / 2**20:.0f} MB; ceiling "
          f"GDLAB_MAX_SERVER_MB {'off' if ceiling is None else f'{ceiling:,.0f} MB'}"
          f"{'' if ceiling is None else (', under it' if server.peak / 2**20 < ceiling else ', ABOVE it')}) · "
          f"{time.monotonic() - t_start:.0f} s · load average now {os.getloadavg()[0]:.2f} · the server's stderr: "
          f"{os.path.join(os.path.dirname(door_log), 'server.err')}")
    print(f"{'scenario':9} {'class of visitor':30} {'n':>3} {'correct':>8} {'errors':>6} {'one-line':>8} "
          f"{'p50 s':>7} {'p95 s':>7} {'server p50/p95 s':>17} {'CPU s after close (0-20 / 20-30 s)':>36}")
    ok = True
    for sc in out:
        for row in sc["rows"]:
            correct = f"{row['correct']}/{row['checked']}" if row["checked"] else "-"
            print(f"{sc['scenario']:9} {row['class'][:30]:30} {row['n']:>3} {correct:>8} {row['errors']:>6} "
                  f"{row['expected_errors']:>8} {row['p50_s']:>7} {row['p95_s']:>7} "
                  f"{row['server_p50_s']:>8} / {row['server_p95_s']:<6} "
                  f"{sc['cpu_s_0_20_after_close']:>24} / {sc['cpu_s_20_30_after_close']}")
            ok &= row["errors"] == 0 and row["correct"] == row["checked"]
            for f in row["failures"]:
                print(f"          failure: {f}")
            if row.get("message"):
                print(f"          one line shown: {row['message'][:230]}")
        for d in sc["door"]:
            print(f"          door: {d['kind']:11} {d['label'][:34]:34} n={d['n']:<3} waited p50 {d['wait_p50_s']} s, "
                  f"max {d['wait_max_s']} s · held p50 {d['held_p50_s']} s, max {d['held_max_s']} s")
        for t in sc["timelines"]:
            print(f"          time to first chart, {t['class'][:24]} (n={t['n']}; p50 / max s): "
                  + " · ".join(f"{name} {t[k][0]} / {t[k][1]}" for k, name in STEPS.items()))
        nice = sc["browser_threads_by_niceness"]
        print(f"          wall {sc['wall_s']} s · CPU s: server {sc['server_cpu_s']}, browsers {sc['browser_cpu_s']} "
              f"(their threads at niceness {min(nice) if nice else '-'}..{max(nice) if nice else '-'}) · load average "
              f"{sc['load_avg']:.1f} (max {sc['load_avg_max']:.1f}; the whole machine's, other users included)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
