"""The load test's reading of the server's door log (GDLAB_DOOR_LOG, dashboard/scheduler.py: one JSON line per piece
of work given back, with its estimate, seconds waited in line and held, and the wall-clock time it joined the line).

``door_summary``: per kind and label, how many, the seconds waited (p50 / max) and held (p50 / max).
``timelines``: where a page's time to first chart went, from the wall-clock time its tab was opened (``opened_at``)
to the first chart in the browser (``first_s``, the page's own clock), with the websocket's times that
benchmarks/loadtest_wire.py noted (``request_at``, ``chart_at``):

    load       opened -> the browser has loaded the app and sends its first request (browser, static files)
    to_door    request -> its analysis joins the door's line (the script run up to the door)
    waited     in the door's line
    held       its analysis running in a slot
    sent       the analysis done -> the chart's message leaves the server (figures built and sent)
    drawn      the chart's message sent -> the first chart drawn in the browser
    server     request -> chart sent (to_door + waited + held + sent): the server's time to first chart

A page's interactive ticket is found by its estimate: the gradient pass (``only="gradients"``) or the whole
analysis of its link's settings, as ``analysis.limits.estimate`` gives them (rounded as the log writes them).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def read_door(path: str, offset: int) -> tuple[list[dict], int]:
    """The door log's lines from ``offset``, and the offset after them."""
    try:
        with open(path) as f:
            f.seek(offset)
            lines = [json.loads(x) for x in f.read().splitlines() if x.strip()]
            return lines, f.tell()
    except OSError:
        return [], offset


def door_summary(lines: list[dict]) -> list[dict]:
    from benchmarks.loadtest import percentile
    groups: dict[tuple, list] = {}
    for x in lines:
        groups.setdefault((x["kind"], x["label"]), []).append(x)
    rows = []
    for (kind, label), xs in sorted(groups.items()):
        w, h = [x["waited_s"] for x in xs], [x["held_s"] for x in xs]
        rows.append({"kind": kind, "label": label, "n": len(xs), "wait_p50_s": round(percentile(w, 0.5), 1),
                     "wait_max_s": round(max(w), 1), "held_p50_s": round(percentile(h, 0.5), 1),
                     "held_max_s": round(max(h), 1)})
    return rows


def page_config(params: dict):
    """The ExperimentConfig of a link's settings (the default preset and the link's fields)."""
    sys.path.insert(0, str(ROOT))
    from analysis.config import ExperimentConfig
    from analysis.presets import PRESETS
    base = PRESETS["default"].config.to_dict()
    ints = ("seed", "seq_len", "hidden_size", "batch_size", "jacobian_batch")
    over = {k: (int(v) if k in ints else v) for k, v in params.items()}
    if "compare" in over:
        over["cell"], over["compare"] = over.pop("compare"), ()
    return ExperimentConfig.from_dict({**base, **over})


def _estimates(params: dict) -> set[float]:
    from analysis.limits import GFLOP_PER_S, estimate
    cfg = page_config(params)
    return {round(estimate(cfg, only=only).flops / (GFLOP_PER_S * 1e9), 3) for only in ("gradients", None)}


def timelines(recs: list[dict], lines: list[dict], wire=None) -> None:
    """Add the steps of STEPS (and ``server_s``) to each record with ``params`` and ``opened_at`` whose interactive
    ticket is in ``lines`` (each line used once, the earliest that fits) and whose chart the websocket proxy
    ``wire`` (benchmarks/loadtest_wire.py) saw pass (``drawn_s`` only with the browser's ``first_s``)."""
    from benchmarks.loadtest_scenarios import link
    used: set[int] = set()
    for rec in sorted(recs, key=lambda r: r.get("opened_at", 0.0)):
        if not {"params", "opened_at"} <= rec.keys():
            continue
        ws = wire.find(link("", rec["params"]).split("?", 1)[1]) if wire is not None else None
        if ws is None or "chart_at" not in ws:
            continue
        ests = _estimates(rec["params"])
        fits = [i for i, x in enumerate(lines) if i not in used and x["kind"] == "interactive"
                and x["est_s"] in ests and x.get("queued_at", 0.0) >= ws["request_at"] - 0.5]
        if not fits:
            continue
        i = min(fits, key=lambda i: lines[i]["queued_at"])
        used.add(i)
        x = lines[i]
        done = x["queued_at"] + x["waited_s"] + x["held_s"]
        rec["load_s"] = round(ws["request_at"] - rec["opened_at"], 2)
        rec["to_door_s"] = round(x["queued_at"] - ws["request_at"], 2)
        rec["waited_s"], rec["held_s"] = x["waited_s"], x["held_s"]
        rec["sent_s"] = round(ws["chart_at"] - done, 2)
        if "first_s" in rec:  # a page its browser did not draw in time still has the server's clock
            rec["drawn_s"] = round(rec["first_s"] - (ws["chart_at"] - rec["opened_at"]), 2)
        rec["server_s"] = round(ws["chart_at"] - ws["request_at"], 2)


def timeline_rows(recs: list[dict]) -> list[dict]:
    """Per class of visitor: p50 (and max) of each step of the time to first chart."""
    from benchmarks.loadtest import percentile
    rows: dict[str, dict] = {}
    for r in recs:
        if "drawn_s" in r:
            rows.setdefault(r["cls"], {"class": r["cls"], "n": 0, **{k: [] for k in STEPS}})
            rows[r["cls"]]["n"] += 1
            for k in STEPS:
                rows[r["cls"]][k].append(r[k])
    for row in rows.values():
        for k in STEPS:
            xs = row[k]
            row[k] = (round(percentile(xs, 0.5), 1), round(max(xs), 1))
    return list(rows.values())


STEPS = {"load_s": "browser loads the app", "to_door_s": "script to the door", "waited_s": "in line",
         "held_s": "in a slot", "sent_s": "figures built and sent", "drawn_s": "browser draws"}
