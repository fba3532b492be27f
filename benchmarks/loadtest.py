"""Load test: K simulated visitors (headless Chromium pages) open different links of one dashboard server on
loopback at once; prints results correct / errors / p50-p95 time to first chart / server peak RSS.

    python -m benchmarks.loadtest --visitors 8          (make loadtest)

Each visitor's link has its own settings (cell, dtype, size, seed); "correct" means the gradient-norm line drawn in
its page equals ``run_experiment`` of the same config in this process (to 1e-12 relative). Bounded: at most 32
visitors, one --timeout for the whole run (default 300 s); the server binds 127.0.0.1 on a free port and is
stopped at the end. Needs Chromium at /usr/bin/chromium (make browser) and playwright (requirements.txt).
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
    sys.path.insert(0, str(ROOT))
    from analysis.config import ExperimentConfig
    from analysis.experiment import run_experiment
    from analysis.presets import PRESETS
    base = PRESETS["default"].config.to_dict()
    over = {k: (int(v) if k in ("seed", "seq_len", "hidden_size", "batch_size") else v) for k, v in params.items()}
    over["cell"], over["compare"] = over.pop("compare"), ()
    cfg = ExperimentConfig.from_dict({**base, **over})
    return [float(v) for v in run_experiment(cfg).grad.grad_norm]  # what the page draws


# records when the first chart appears, by the page's own clock (ms since its navigation started)
FIRST_CHART = """new MutationObserver((m, obs) => {
  if (document.querySelector('.js-plotly-plot .main-svg')) { window.__firstChart = performance.now(); obs.disconnect(); }
}).observe(document, {childList: true, subtree: true});"""

JS_GRAD = """() => { for (const gd of document.querySelectorAll('.js-plotly-plot')) {
  if (((gd.layout || {}).meta || {}).figure !== 'grad_norm') continue;
  for (const t of gd.data) if ((t.meta || {}).role === 'grad_norm') return t.y;
} return null; }"""


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--visitors", type=int, default=8, help="simulated visitors (1-32)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds for the whole run")
    ap.add_argument("--max-concurrent", type=int, default=0, help="GDLAB_MAX_CONCURRENT of the server (0: default)")
    a = ap.parse_args(argv)
    if not 1 <= a.visitors <= 32:
        ap.error("--visitors must be in [1, 32]")
    from playwright.sync_api import sync_playwright
    env = {"GDLAB_MAX_CONCURRENT": str(a.max_concurrent)} if a.max_concurrent else {}
    proc, url = start_server(env)
    peak, stop = [rss_tree(proc.pid)], threading.Event()
    idle_rss = peak[0]
    t_start = time.monotonic()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_tree(proc.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    params = [visitor_params(i) for i in range(a.visitors)]
    outs = [{} for _ in params]
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            # warm-up (not counted): the server's first script run imports torch and the app (a lecturer's server
            # is started before the class arrives)
            warm = browser.new_page()
            warm.goto(f"{url}/?seq_len=12&hidden_size=4&batch_size=2", timeout=a.timeout * 1000)
            warm.wait_for_selector(".js-plotly-plot .main-svg", timeout=a.timeout * 1000)
            warm.close()
            idle_rss = rss_tree(proc.pid)
            t_start = time.monotonic()
            # Playwright's sync API is single-threaded: open every page first, then wait on them in turn
            pages = []
            for p in params:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.add_init_script(FIRST_CHART)
                q = "&".join(f"{k}={v}" for k, v in p.items())
                page.goto(f"{url}/?{q}", wait_until="commit", timeout=a.timeout * 1000)
                pages.append((page, time.monotonic()))
            for (page, t0), out in zip(pages, outs):
                left = max(1.0, a.timeout - (time.monotonic() - t_start))
                try:
                    page.wait_for_selector(".js-plotly-plot .main-svg", timeout=left * 1000)
                    page.wait_for_function("() => window.__firstChart !== undefined", timeout=left * 1000)
                    out["first_chart_s"] = page.evaluate("() => window.__firstChart") / 1000
                    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]',
                                           timeout=left * 1000)
                    out["errors"] = page.locator('[data-testid="stException"], '
                                                 '[data-testid="stAlertContentError"]').count()
                    out["grad"] = page.evaluate(JS_GRAD)
                except Exception as e:  # noqa: BLE001
                    out["errors"] = out.get("errors", 0) + 1
                    out["failure"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
            browser.close()
    finally:
        stop.set()
        sampler.join(2)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    correct = sum(close(o.get("grad"), expected(p)) for o, p in zip(outs, params))
    errors = sum(o.get("errors", 0) for o in outs)
    times = [o["first_chart_s"] for o in outs if "first_chart_s" in o]
    print(json.dumps({"visitors": a.visitors, "results_correct": correct, "errors": errors,
                      "first_chart_p50_s": round(percentile(times, 0.5), 2),
                      "first_chart_p95_s": round(percentile(times, 0.95), 2),
                      "server_rss_idle_mb": round(idle_rss / 2**20), "server_peak_rss_mb": round(peak[0] / 2**20),
                      "wall_s": round(time.monotonic() - t_start, 1),
                      "failures": [o["failure"] for o in outs if "failure" in o]}))
    print(f"results correct {correct}/{a.visitors} · errors {errors} · time to first chart p50 "
          f"{percentile(times, 0.5):.1f} s, p95 {percentile(times, 0.95):.1f} s · server peak RSS "
          f"{peak[0] / 2**20:.0f} MB (idle {idle_rss / 2**20:.0f} MB)")
    return 0 if correct == a.visitors and errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
