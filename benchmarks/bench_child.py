"""Benchmark parts: measurements in a fresh subprocess with peak RSS ((e), default view, long case), and the
dashboard's default config."""
from __future__ import annotations

import gc
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # noqa: F841
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench_common import B, CHILD_MARK, setup_torch  # noqa: E402


# ---------------------------------------------------------------------------------------------------------------
# subprocess measurements: (e), the default view, the long case
# ---------------------------------------------------------------------------------------------------------------
def _vm_kib(field: str, pid: str | int = "self") -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def child_main(spec: dict) -> None:
    """Runs in a fresh interpreter; prints one CHILD_MARK line of JSON."""
    setup_torch()
    t0 = time.perf_counter()
    from analysis.config import ExperimentConfig
    from analysis.experiment import run_comparison, run_experiment
    import_s = time.perf_counter() - t0
    cfg = ExperimentConfig.from_dict(spec["config"])
    base_kib = _vm_kib("VmRSS")
    out = {"import_s": import_s, "base_rss_kib": base_kib}
    times = []
    res = None
    for _ in range(max(1, spec.get("repeats", 1))):
        res = None
        gc.collect()
        t = time.perf_counter()
        res = run_comparison(cfg) if spec["kind"] == "comparison" else run_experiment(cfg)
        times.append(time.perf_counter() - t)
    out["times_s"] = times
    # The peak RSS is VmHWM, the high-water mark of this process's own memory. ru_maxrss is kept for reference
    # only: Linux carries the parent's RSS at fork across exec into it, so it over-reports in a child.
    out["ru_maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    out["vmhwm_kib"] = _vm_kib("VmHWM")
    out["peak_rss_kib"] = out["vmhwm_kib"] or out["ru_maxrss_kib"]
    if spec["kind"] == "experiment":
        j = res.jac
        out["nonfinite"] = res.nonfinite
        out["spectral_norm_finite"] = bool(np.isfinite(j.spectral_norm).all())
        out["log10_spectral_norm_range"] = [float(np.nanmin(j.spectral_norm)), float(np.nanmax(j.spectral_norm))]
        out["grad_norm_finite"] = bool(np.isfinite(res.grad.grad_norm).all())
        gn = res.grad.grad_norm[np.isfinite(res.grad.grad_norm) & (res.grad.grad_norm > 0)]
        out["grad_norm_range"] = [float(gn.min()), float(gn.max())] if len(gn) else None
        out["grad_norm_zero_steps"] = int((res.grad.grad_norm == 0).sum())
        if j.state_spectral_norm is not None:
            out["state_spectral_norm_finite"] = bool(np.isfinite(j.state_spectral_norm).all())
        if j.cell_full is not None:
            out["cell_full_finite"] = bool(np.isfinite(j.cell_full).all())
        out["n_lags"] = len(j.lag)
        out["timings"] = res.timings
        out["method"] = j.method
    else:
        out["cells"] = list(res)
        out["timings"] = {c: r.timings for c, r in res.items()}
    print(CHILD_MARK + json.dumps(out), flush=True)


def run_child(spec: dict, timeout_s: float) -> dict:
    """Run child_main(spec) in a fresh interpreter; polls its VmHWM so a timed-out child still reports a peak."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    out = err = ""
    try:
        while True:
            try:
                out, err = proc.communicate(timeout=0.25)
                break
            except subprocess.TimeoutExpired:
                peak = max(peak, _vm_kib("VmHWM", proc.pid) or 0)
                if time.perf_counter() - t0 > timeout_s:
                    proc.kill()
                    out, err = proc.communicate()
                    return {"error": f"timed out after {timeout_s:.0f} s", "timed_out": True,
                            "wall_s": time.perf_counter() - t0, "vmhwm_polled_kib": peak}
    finally:
        if proc.poll() is None:  # interrupted: never leave the child running
            proc.kill()
            proc.wait()
    wall = time.perf_counter() - t0
    for line in out.splitlines():
        if line.startswith(CHILD_MARK):
            r = json.loads(line[len(CHILD_MARK):])
            r["wall_s"] = wall
            return r
    tail = (err or out).strip().splitlines()[-3:]
    return {"error": f"exit {proc.returncode}: " + " | ".join(tail), "wall_s": wall, "vmhwm_polled_kib": peak}


def dashboard_config():
    """The dashboard's default config: analysis/presets.py's 'default' preset if there is one, else None."""
    try:
        import analysis.presets as presets
    except ImportError:
        return None, "no analysis/presets.py"
    from analysis.config import ExperimentConfig

    found = None
    for name in ("PRESETS", "presets", "DEFAULT_PRESETS"):
        table = getattr(presets, name, None)
        if isinstance(table, dict) and "default" in table:
            found = table["default"]
            break
    if found is None:
        for fn in ("get_preset", "preset", "load_preset"):
            if callable(getattr(presets, fn, None)):
                try:
                    found = getattr(presets, fn)("default")
                    break
                except Exception:  # noqa: BLE001 - an unexpected API: fall back
                    pass
    if found is None and isinstance(getattr(presets, "DEFAULT", None), ExperimentConfig):
        found = presets.DEFAULT
    if found is not None and not isinstance(found, ExperimentConfig):
        for attr in ("config", "cfg"):
            if isinstance(getattr(found, attr, None), ExperimentConfig):
                found = getattr(found, attr)
                break
            if isinstance(found, dict) and isinstance(found.get(attr), (ExperimentConfig, dict)):
                found = found[attr]
                break
        if isinstance(found, dict):
            try:
                found = ExperimentConfig.from_dict(found)
            except Exception:  # noqa: BLE001
                found = None
    if isinstance(found, ExperimentConfig):
        return found, "analysis/presets.py 'default' preset"
    return None, "analysis/presets.py has no readable 'default' preset"


def experiment_config_for(cell: str, T: int, H: int):
    from analysis.config import ExperimentConfig

    preset, _ = dashboard_config()
    if preset is None:
        return ExperimentConfig(cell=cell, seq_len=T, hidden_size=H, batch_size=B)
    return preset.replace(cell=cell, compare=(), seq_len=T, hidden_size=H, batch_size=B)


def _non_default_fields(cfg) -> dict:
    from analysis.config import ExperimentConfig

    d0 = ExperimentConfig().to_dict()
    return {k: v for k, v in cfg.to_dict().items() if d0.get(k) != v}


if __name__ == "__main__":  # run_child's fresh interpreter: bench_child.py --child SPEC_JSON
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child_main(json.loads(sys.argv[2]))
    else:
        sys.exit("usage: bench_child.py --child SPEC_JSON (started by run_child)")
