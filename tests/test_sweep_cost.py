"""The whole sweep's estimate: the sum of its points' estimates, checked before the first point (API and CLI)."""
from pathlib import Path

import pytest

from analysis import ExperimentConfig
from analysis import sweep as sweep_fn
from analysis.limits import LimitExceeded, Limits, estimate, training_cost
from analysis.sweep import make_plan
from analysis.sweep_cost import check_sweep, sweep_cost

ROOT = Path(__file__).resolve().parents[1]
TINY = ExperimentConfig(cell="rnn", init="spectral", hidden_size=16, seq_len=30, batch_size=2,
                        jacobian_lags="log", lyapunov_k=1, n_singular=1)


def test_total_is_the_sum_over_every_point_and_seed():
    plan = make_plan(TINY, ["cell=rnn,lstm", "hidden_size=8,24"], seeds=3)
    ref = [estimate(plan.point_config(k)) for k in plan.keys()]  # each point estimated on its own
    c = sweep_cost(plan)
    assert c.parts["points"] == 12
    assert c.flops == pytest.approx(sum(r.flops for r in ref), rel=1e-12)
    assert c.memory_bytes == pytest.approx(max(r.memory_bytes for r in ref), rel=1e-12)
    top = max(ref, key=lambda r: r.flops)
    assert c.parts["costliest"] == "cell=lstm hidden_size=24" and c.parts["point_gflop_max"] == top.gflop
    # two workers side by side: the two largest points' memory
    mems = sorted((r.memory_bytes for r in ref), reverse=True)
    assert sweep_cost(plan, workers=2).memory_bytes == pytest.approx(mems[0] + mems[1], rel=1e-12)
    # points already done (resume) are not counted
    assert sweep_cost(plan, plan.keys()[:5]).flops == pytest.approx(sum(r.flops for r in ref[:5]), rel=1e-12)


def test_training_metrics_add_the_training_cost():
    base = TINY.replace(task="adding", train_steps=7)
    plan = make_plan(base, ["init_scale=0.5,1"], seeds=2, metrics=["grad_ratio", "final_loss"])
    one = estimate(base).flops + training_cost(base, 7).flops
    assert sweep_cost(plan).flops == pytest.approx(4 * one, rel=1e-12)
    only_train = make_plan(base, ["init_scale=0.5,1"], seeds=2, metrics=["final_loss"])
    assert sweep_cost(only_train).flops == pytest.approx(4 * training_cost(base, 7).flops, rel=1e-12)


def test_the_issue_sweep_is_refused_with_its_total():
    """Atlas custom axis hidden_size 512..493 x 20 seeds (issue 20): 400 runs, refused before any runs."""
    plan = make_plan(ExperimentConfig(), ["hidden_size=512:493:20"], 20, ["lyapunov_max"])
    with pytest.raises(LimitExceeded) as e:
        check_sweep(plan, limits=Limits())
    msg = str(e.value)
    assert "\n" not in msg and "400 runs" in msg and "GFLOP in all" in msg and "MB of memory" in msg
    assert "--seeds" in msg and "hidden_size=512" in msg and "--no-limits" in msg
    assert check_sweep(plan, limits=Limits(None, None)).gflop > 2000


def test_sweep_refuses_before_the_first_point(monkeypatch, tmp_path):
    plan = make_plan(TINY, ["init_scale=0.5,1"], seeds=2)
    one = estimate(TINY).gflop  # every point costs the same (init_scale and the seed change no size)
    monkeypatch.setenv("GDLAB_MAX_GFLOP", str(2.5 * one))  # each point fits, two fit, four together do not
    assert sweep_cost(plan).gflop == pytest.approx(4 * one)
    calls, resume = [], tmp_path / "r.jsonl"
    with pytest.raises(LimitExceeded, match="4 runs"):
        sweep_fn(TINY, "init_scale=0.5,1", seeds=2, resume=str(resume), progress=lambda *a: calls.append(a))
    assert calls == [] and not resume.exists()
    d = sweep_fn(TINY, "init_scale=0.5,1", seeds=1)  # two points fit
    assert [p["status"] for p in d["points"]] == ["ok", "ok"]


def test_cli_exits_2_naming_the_total_and_no_limits_overrides(cli_inproc):
    def _cli(*args, env=None):  # `python -m analysis sweep ...`, main() in this process (conftest.run_main)
        return cli_inproc("sweep", *args, env=env)
    flags = ["--cell", "rnn", "--hidden-size", "8", "--seq-len", "10", "--batch-size", "2", "--jacobian-lags",
             "log", "--vary", "init_scale=0.5,1", "--seeds", "2", "--quiet"]
    env = {"GDLAB_MAX_GFLOP": str(2.5 * estimate(ExperimentConfig(cell="rnn", hidden_size=8, seq_len=10,
                                                                   batch_size=2, jacobian_lags="log")).gflop)}
    r = _cli(*flags, env=env)
    assert r.returncode == 2 and r.stdout == ""
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "GFLOP in all" in err and "MB of memory" in err and "4 runs" in err
    ok = _cli(*flags, "--no-limits", env=env)
    assert ok.returncode == 0, ok.stderr
    assert "init_scale" in ok.stdout
