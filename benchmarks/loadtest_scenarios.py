"""The load test's hostile scenarios (issue 20), each a list of simulated visitors (Chromium pages) on one server.

    heavy      ten allowed heavy links (T = 1000-3000, H = 192-384; their full analyses run as background jobs) and,
               5, 15 and 30 s later, three plain visitors on uncached default pages: their time to first chart is
               the target
    uploads    an upload flood: six visitors upload a 2 KB file of zero-stride tensors declaring an LSTM with
               H = 4096 (expected: one line, no analysis), two upload a small LSTM(8, 32) (expected: its charts)
    sweeps     three visitors run the default Atlas preset's sweep; one asks for init_scale 0.5..2 (20 values) x 20
               seeds at hidden_size = 512 (400 runs; expected: one line naming the whole estimate)
    trainers   six visitors start live training at H = 2048, B = 1024, T = 10 (one step ~10 s: expected one line)

Every record: ``cls`` (the class of visitor), ``first_s`` (time to its first chart, or to its expected one-line
answer), ``errors`` (error boxes shown), ``expected`` (an error box was the expected answer), ``grad`` (the
gradient-norm line drawn, for the correctness check) and ``params`` (its link's settings), ``opened_at`` (wall
clock when its tab was opened: benchmarks/loadtest_door.py's timelines), ``failure``.
"""
from __future__ import annotations

import io
import time

# (cell, T, H): each within the default limits (2000 GFLOP, 2048 MB) for its full analysis
HEAVY = [("rnn", 3000, 384), ("rnn", 2000, 384), ("rnn", 3000, 320), ("rnn", 1000, 384), ("lstm", 1000, 320),
         ("lstm", 2000, 256), ("lstm", 3000, 192), ("gru", 2000, 384), ("gru", 3000, 256), ("gru", 1000, 384)]
CHART = ".js-plotly-plot .main-svg"
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
ERRORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'

# the page's own clock: when the first chart, and when the first error box, appeared (ms since navigation)
OBSERVE = """new MutationObserver((m, obs) => {
  if (window.__firstChart === undefined && document.querySelector('.js-plotly-plot .main-svg'))
    window.__firstChart = performance.now();
  if (window.__firstError === undefined && document.querySelector('[data-testid="stAlertContentError"]'))
    window.__firstError = performance.now();
}).observe(document, {childList: true, subtree: true});"""

# the browsers stand for the visitors' own machines (benchmarks/loadtest_browser.py): no CSS animations or transitions
# (a page watching a background job is "running" for minutes: its status icon and bar animate; measured here, one
# such tab used 2.15 CPU s in 15 s with them and 1.41 without)
STILL = """document.addEventListener('DOMContentLoaded', () => {
  const s = document.createElement('style');
  s.textContent = '*, *::before, *::after {animation: none !important; transition: none !important;}';
  document.head.appendChild(s);
});"""

JS_GRAD = """() => { for (const gd of document.querySelectorAll('.js-plotly-plot')) {
  if (((gd.layout || {}).meta || {}).figure !== 'grad_norm') continue;
  for (const t of gd.data) if ((t.meta || {}).role === 'grad_norm') return {y: t.y, log10: !!(t.meta || {}).log10};
} return null; }"""


def heavy_params(i: int) -> dict:
    cell, T, H = HEAVY[i % len(HEAVY)]
    return {"compare": cell, "seq_len": str(T), "hidden_size": str(H), "seed": str(700 + i)}


def plain_params(seed: int) -> dict:
    return {"seed": str(seed)}  # the default preset, a seed nobody else asked for: not cached


def link(url: str, params: dict, view: str | None = None) -> str:
    q = dict(params, **({"view": view} if view else {}))
    return f"{url}/?" + "&".join(f"{k}={v}".replace(" ", "%20") for k, v in q.items())


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.add_init_script(OBSERVE)
    page.add_init_script(STILL)
    page.goto(url, wait_until="commit", timeout=60_000)
    return page


def wait_chart(page, rec: dict, deadline: float, grad: bool = True) -> None:
    """Fill ``rec`` from a page expected to draw a chart."""
    try:
        left = max(1.0, deadline - time.monotonic()) * 1000
        page.wait_for_function("() => window.__firstChart !== undefined", timeout=left)
        rec["first_s"] = page.evaluate("() => window.__firstChart") / 1000
        if grad:
            page.wait_for_function(f"() => ({JS_GRAD})() !== null", timeout=left)
            rec["grad"] = page.evaluate(JS_GRAD)
        rec["errors"] = page.locator(ERRORS).count()
    except Exception as e:  # noqa: BLE001
        rec["errors"] = rec.get("errors", 0) + 1
        rec["failure"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"


def wait_refusal(page, rec: dict, deadline: float, t0: float) -> None:
    """Fill ``rec`` from a page expected to answer with one error line (and keep serving)."""
    try:
        left = max(1.0, deadline - time.monotonic()) * 1000
        page.wait_for_selector('[data-testid="stAlertContentError"]', timeout=left)
        rec["first_s"] = time.monotonic() - t0
        rec["errors"] = page.locator(ERRORS).count()
        rec["expected"] = page.locator('[data-testid="stException"]').count() == 0
        rec["message"] = page.locator('[data-testid="stAlertContentError"]').first.inner_text()[:300]
    except Exception as e:  # noqa: BLE001
        rec["errors"] = rec.get("errors", 0) + 1
        rec["failure"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"


# ---- the scenarios -----------------------------------------------------------------------------------------
PLAIN_AFTER = (5, 10, 15)  # seconds between the heavy links (then each plain visitor) and the next plain visitor


def heavy(browser, url: str, timeout: float, n: int = 10, timed=None) -> tuple[list, list]:
    """``timed``: the browser of the plain visitors (the timed ones; default ``browser``)."""
    deadline = time.monotonic() + timeout
    recs, pages = [], []
    for i in range(n):
        p = heavy_params(i)
        recs.append({"cls": "heavy link", "params": p, "opened_at": time.time()})
        pages.append(open_page(browser, link(url, p)))
    for k, pause in enumerate(PLAIN_AFTER):  # their gradient passes, then their background jobs, are under way
        time.sleep(pause)
        p = plain_params(4242 + k)
        recs.append({"cls": "plain (with 10 heavy)", "params": p, "opened_at": time.time()})
        pages.append(open_page(timed or browser, link(url, p)))
    for page, rec in zip(pages[::-1], recs[::-1]):  # the plain visitors first: their clock is the page's own anyway
        wait_chart(page, rec, deadline)
    return recs, pages


def zero_stride_lstm(H: int = 4096, I: int = 8) -> bytes:
    import torch
    z = torch.zeros(1)
    sd = {"weight_ih_l0": z.expand(4 * H, I), "weight_hh_l0": z.expand(4 * H, H), "bias_ih_l0": z.expand(4 * H),
          "bias_hh_l0": z.expand(4 * H)}
    buf = io.BytesIO()
    torch.save(sd, buf)
    return buf.getvalue()


def small_lstm() -> bytes:
    import torch
    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save(torch.nn.LSTM(8, 32).state_dict(), buf)
    return buf.getvalue()


def _upload(page, name: str, data: bytes) -> None:
    page.wait_for_selector(IDLE, timeout=120_000)
    box = page.locator('[data-testid="stFileUploader"]').filter(has_text="state_dict (.pt)")
    box.locator('input[type="file"]').set_input_files({"name": name, "mimeType": "application/octet-stream",
                                                       "buffer": data})


def uploads(browser, url: str, timeout: float, hostile: int = 6, good: int = 2) -> tuple[list, list]:
    deadline = time.monotonic() + timeout
    files = [("zero-stride-h4096.pt", zero_stride_lstm(), True)] * hostile + [("lstm-8-32.pt", small_lstm(), False)] * good
    recs, pages = [], []
    for i, (name, data, bad) in enumerate(files):
        page = open_page(browser, link(url, {"seq_len": "40", "hidden_size": "8", "batch_size": "4", "compare": "rnn",
                                             "seed": str(900 + i)}))
        pages.append(page)
        recs.append({"cls": "upload: zero-stride H=4096" if bad else "upload: LSTM(8, 32)", "bytes": len(data)})
    for page, rec, (name, data, bad) in zip(pages, recs, files):
        try:
            _upload(page, name, data)
            rec["t0"] = time.monotonic()
        except Exception as e:  # noqa: BLE001
            rec["errors"], rec["failure"] = 1, f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    for page, rec, (name, data, bad) in zip(pages, recs, files):
        if "failure" in rec:
            continue
        if bad:
            wait_refusal(page, rec, deadline, rec["t0"])
        else:
            try:
                page.wait_for_selector("text=What the file decided", timeout=max(1.0, deadline - time.monotonic()) * 1000)
                rec["first_s"] = time.monotonic() - rec["t0"]
                rec["errors"] = page.locator(ERRORS).count()
            except Exception as e:  # noqa: BLE001
                rec["errors"], rec["failure"] = 1, f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    return recs, pages


def _click(page, name: str) -> None:
    """Click the button once it is there (a page whose full analysis runs in the background never goes idle)."""
    page.get_by_role("button", name=name).first.click(timeout=120_000)


def sweeps(browser, url: str, timeout: float, n: int = 3) -> tuple[list, list]:
    deadline = time.monotonic() + timeout
    recs, pages = [], []
    for i in range(n):
        page = open_page(browser, link(url, {"seed": str(300 + i)}, view="Atlas"))
        pages.append(page)
        recs.append({"cls": "sweep: default Atlas preset"})
    hostile = open_page(browser, link(url, {"hidden_size": "512", "compare": "rnn", "seed": "333", "atlas": "custom"},
                                      view="Atlas"))
    pages.append(hostile)
    recs.append({"cls": "sweep: 400 runs at H=512"})
    for page, rec in zip(pages[:n], recs[:n]):
        try:
            _click(page, "Run the sweep")
            rec["t0"] = time.monotonic()
        except Exception as e:  # noqa: BLE001
            rec["errors"], rec["failure"] = 1, f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    rec = recs[-1]
    try:
        hostile.wait_for_selector(IDLE, timeout=120_000)
        box = hostile.get_by_label("values (start:stop:count, log:…, or a,b,c)")
        box.fill("0.5:2.0:20")
        box.press("Enter")
        hostile.wait_for_timeout(1500)
        seeds = hostile.get_by_label("seeds")
        seeds.fill("20")
        seeds.press("Enter")
        rec["t0"] = time.monotonic()
        wait_refusal(hostile, rec, deadline, rec["t0"])
    except Exception as e:  # noqa: BLE001
        rec["errors"], rec["failure"] = 1, f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    for page, rec in zip(pages[:n], recs[:n]):
        if "failure" in rec:
            continue
        try:
            page.wait_for_function("() => [...document.querySelectorAll('.js-plotly-plot')].some(gd => "
                                   "((gd.layout || {}).meta || {}).view === 'atlas')",
                                   timeout=max(1.0, deadline - time.monotonic()) * 1000)
            rec["first_s"] = time.monotonic() - rec["t0"]
            rec["errors"] = page.locator(ERRORS).count()
        except Exception as e:  # noqa: BLE001
            rec["errors"], rec["failure"] = 1, f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    return recs, pages


def trainers(browser, url: str, timeout: float, n: int = 6) -> tuple[list, list]:
    deadline = time.monotonic() + timeout
    recs, pages = [], []
    for i in range(n):
        p = {"compare": "rnn", "hidden_size": "2048", "batch_size": "1024", "seq_len": "10", "jacobian_batch": "1",
             "seed": str(500 + i)}  # an analysis within the limits; one training step ~10 s (estimate)
        pages.append(open_page(browser, link(url, p, view="Live training")))
        recs.append({"cls": "trainer: H=2048, B=1024"})
    for page, rec in zip(pages, recs):
        try:
            _click(page, "Start")
            rec["t0"] = time.monotonic()
        except Exception as e:  # noqa: BLE001
            rec["errors"], rec["failure"] = 1, f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    for page, rec in zip(pages, recs):
        if "failure" not in rec:
            wait_refusal(page, rec, deadline, rec["t0"])
    return recs, pages


SCENARIOS = {"heavy": heavy, "uploads": uploads, "sweeps": sweeps, "trainers": trainers}
