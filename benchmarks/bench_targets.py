"""Benchmark parts: the targets of bench.py's table, each met / NOT met."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # noqa: F841
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


from bench_common import TARGETS  # noqa: E402


# ---------------------------------------------------------------------------------------------------------------
# targets
# ---------------------------------------------------------------------------------------------------------------
def verdict(ok) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def targets(rows, training, view, long) -> list[dict]:
    out = []
    ab = [r for r in rows if r.get("b_over_a") is not None]
    if ab:
        worst = max(ab, key=lambda r: r["b_over_a"])
        out.append({"target": f"(b)/(a) <= {TARGETS['b_over_a']} every cell and size",
                    "measured": f"max {worst['b_over_a']:.2f} ({worst['cell']} T={worst['T']} H={worst['H']}); "
                                f"{sum(r['b_over_a'] > TARGETS['b_over_a'] for r in ab)} of {len(ab)} over",
                    "ok": worst["b_over_a"] <= TARGETS["b_over_a"]})
    Tc, Hc = TARGETS["c_size"]
    cs = [r for r in rows if r["T"] == Tc and r["H"] == Hc]
    for r in cs:
        ex = " (extrapolated)" if r.get("c_extrapolated") else ""
        out.append({"target": f"(c)/(a) <= {TARGETS['c_over_a']:g} at T={Tc}, H={Hc}, {r['cell']}",
                    "measured": f"{r['c_over_a']:.2f}{ex}", "ok": r["c_over_a"] <= TARGETS["c_over_a"]})
    if not cs:
        out.append({"target": f"(c)/(a) <= {TARGETS['c_over_a']:g} at T={Tc}, H={Hc}", "measured": "not measured",
                    "ok": None})
    dc = [r for r in rows if r.get("d_over_c") is not None]
    if dc:
        worst = min(dc, key=lambda r: r["d_over_c"])
        out.append({"target": f"(d)/(c) >= {TARGETS['d_over_c']:g} wherever (d) runs",
                    "measured": f"min {worst['d_over_c']:.1f} ({worst['cell']} T={worst['T']} H={worst['H']}, "
                                "(d) extrapolated)", "ok": worst["d_over_c"] >= TARGETS["d_over_c"]})
    else:
        out.append({"target": f"(d)/(c) >= {TARGETS['d_over_c']:g}", "measured": "not measured", "ok": None})
    if long and "peak_rss_kib" in long:
        gib = long["peak_rss_kib"] / 2**20
        fb = " (fallback config, see above)" if long.get("fallback") else ""
        out.append({"target": f"long case peak RSS <= {TARGETS['long_rss_gib']:g} GiB",
                    "measured": f"{gib:.2f} GiB{fb}", "ok": gib <= TARGETS["long_rss_gib"]})
        fin = long.get("nonfinite") is None and long.get("spectral_norm_finite", False)
        out.append({"target": "long case nonfinite is null and spectral norms finite",
                    "measured": f"nonfinite={long.get('nonfinite')}, spectral norms finite="
                                f"{long.get('spectral_norm_finite')}{fb}", "ok": fin})
    elif long:
        polled = long.get("vmhwm_polled_kib", 0) / 2**20
        out.append({"target": f"long case peak RSS <= {TARGETS['long_rss_gib']:g} GiB",
                    "measured": f"{long.get('error')}; peak RSS so far {polled:.2f} GiB", "ok": None})
    else:
        out.append({"target": f"long case peak RSS <= {TARGETS['long_rss_gib']:g} GiB", "measured": "skipped",
                    "ok": None})
    for c, t in (training or {}).items():
        out.append({"target": f"training >= {TARGETS['train_steps_s']:g} steps/s ({c})",
                    "measured": f"{t['steps_per_s']:.1f} steps/s", "ok": t["steps_per_s"] >= TARGETS["train_steps_s"]})
    if view and "times_s" in view:
        cold = view["times_s"][0]
        out.append({"target": f"default view (cold run_comparison) <= {TARGETS['default_view_s']:g} s",
                    "measured": f"{cold:.2f} s", "ok": cold <= TARGETS["default_view_s"]})
    elif view:
        out.append({"target": f"default view <= {TARGETS['default_view_s']:g} s", "measured": view.get("error"),
                    "ok": None})
    return out
