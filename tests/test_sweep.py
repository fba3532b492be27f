"""The sweep: grid specs, metrics against closed forms, executors agree, resume, failures, CLI errors."""
import json
import math
import os

import numpy as np
import pytest

from analysis import ExperimentConfig
from analysis import sweep as sweep_fn
from analysis.sweep import make_plan, parse_vary
from rnn_models.config import ConfigError

TINY = ExperimentConfig(cell="rnn", init="spectral", hidden_size=16, seq_len=30, batch_size=2,
                        jacobian_lags="log", lyapunov_k=1, n_singular=1)
METRIC_KEYS = ("lyapunov_max", "memory_horizon", "grad_ratio", "spectral_radius")


def numbers(d):
    """The points without their timings (what must agree across executors)."""
    return [{k: v for k, v in p.items() if k != "time_s"} for p in d["points"]]


# ---- grid specs --------------------------------------------------------------------------------------------
def test_vary_specs():
    assert parse_vary("init_scale=0.5:2.0:4").values == (0.5, 1.0, 1.5, 2.0)
    a = parse_vary("lr=log:1e-3:1e-1:3")
    assert np.allclose(a.values, (1e-3, 1e-2, 1e-1))
    assert parse_vary("cell=rnn,lstm,gru").values == ("rnn", "lstm", "gru")
    assert parse_vary("layer_norm=true,false").values == (True, False)
    assert parse_vary("forget_bias=none,1").values == (None, 1.0)
    assert parse_vary("seq-len=50,100").field == "seq_len"
    r = parse_vary("seq_len=log:10:1000:4")  # 10, 46.4, 215.4, 1000 -> integers, said in a note
    assert r.values == (10, 46, 215, 1000) and "rounded" in r.note
    assert parse_vary("seq_len=50:200:4").note is None


@pytest.mark.parametrize("spec,needle", [
    ("init_scale", "FIELD=SPEC"), ("nope=1,2", "unknown config field"), ("seed=1,2", "--seeds"),
    ("init_scale=1:2", "start:stop:count"), ("init_scale=log:0:1:3", "start > 0"), ("cell=1:3:3", "not numeric"),
    ("hidden_size=1.5,2", "integer"), ("init_scale=1:2:0", "count=0"), ("cell=rnn,rnn", "twice"),
    ("init_scale=", "no values"), ("inputs_path=a,b", "not a sweep axis"),
])
def test_bad_specs_are_one_line(spec, needle):
    with pytest.raises(ConfigError, match=needle) as e:
        parse_vary(spec)
    assert "\n" not in str(e.value)


def test_plan_checks_every_combination_and_the_metrics():
    with pytest.raises(ConfigError, match="init_scale=200.0 is out of range"):
        make_plan(TINY, ["init_scale=0:200:3"])
    with pytest.raises(ConfigError, match="seq_len=10.*copy"):
        make_plan(TINY.replace(task="copy", seq_len=30), ["seq_len=10,30"], metrics="memory_horizon")
    with pytest.raises(ConfigError, match="train_steps"):
        make_plan(TINY.replace(task="adding"), ["init_scale=1,2"], metrics="final_loss")
    with pytest.raises(ConfigError, match="task with targets"):
        make_plan(TINY.replace(train_steps=2), ["init_scale=1,2"], metrics="final_loss")
    with pytest.raises(ConfigError, match="lyapunov_k"):
        make_plan(TINY.replace(lyapunov_k=0), ["init_scale=1,2"])
    with pytest.raises(ConfigError, match="one or two axes"):
        make_plan(TINY, ["init_scale=1,2", "hidden_size=4,8", "seq_len=5,6"])
    with pytest.raises(ConfigError, match="seeds"):
        make_plan(TINY, ["init_scale=1,2"], seeds=0)
    plan = make_plan(TINY, ["cell=rnn,gru", "init_scale=1,2"], seeds=2)
    keys = plan.keys()
    assert len(keys) == 8 and keys[0] == {"cell": "rnn", "init_scale": 1.0, "seed": 0}
    assert keys[-1] == {"cell": "gru", "init_scale": 2.0, "seed": 1}


# ---- the numbers -------------------------------------------------------------------------------------------
def test_points_are_run_experiment_numbers_and_summary_is_over_seeds():
    from analysis import run_experiment
    d = sweep_fn(TINY, "init_scale=0.5,1.5", seeds=3, metrics=METRIC_KEYS)
    assert d["axes"] == {"init_scale": [0.5, 1.5]} and d["seeds"] == [0, 1, 2] and len(d["points"]) == 6
    p = d["points"][4]  # init_scale 1.5, seed 1
    assert (p["init_scale"], p["seed"], p["status"]) == (1.5, 1, "ok")
    r = run_experiment(TINY.replace(init_scale=1.5, seed=1)).to_dict()
    assert p["lyapunov_max"] == r["jacobian"]["lyapunov_exponents"][0]
    assert p["memory_horizon"] == r["memory_horizon"]
    assert p["grad_ratio"] == pytest.approx(r["log10_grad_norm"][0] - r["log10_grad_norm"][-1], abs=1e-12)
    assert p["spectral_radius"] == pytest.approx(1.5, rel=1e-6)  # the spectral init's exact radius
    s = d["summary"][1]
    xs = np.array([q["lyapunov_max"] for q in d["points"][3:]])
    assert s["init_scale"] == 1.5 and s["lyapunov_max"]["n"] == 3
    assert s["lyapunov_max"]["mean"] == pytest.approx(xs.mean()) and s["lyapunov_max"]["std"] == pytest.approx(xs.std())
    assert (s["lyapunov_max"]["min"], s["lyapunov_max"]["max"]) == (xs.min(), xs.max())
    json.dumps(d, allow_nan=False)


def test_edge_of_chaos_sign_change():
    """tanh RNN, spectral-radius init g, small inputs: ordered (lambda_1 < 0) at small g, chaotic (> 0) at large."""
    c = ExperimentConfig(cell="rnn", activation="tanh", init="spectral", hidden_size=64, input_size=1, seq_len=200,
                         batch_size=4, jacobian_lags="log", lyapunov_k=1, n_singular=1)
    d = sweep_fn(c, "init_scale=0.5,3.0", seeds=2)
    lo, hi = (s["lyapunov_max"] for s in d["summary"])
    assert lo["max"] < -0.3 and hi["min"] > 0.1


@pytest.mark.parametrize("g", [0.5, 0.8, 1.2, 1.5])
def test_linear_rnn_lyapunov_is_log_of_spectral_radius(g):
    """Linear RNN h_t = W h_{t-1} + U x_t: J_t = W, so lambda_1 = ln max|eig(W)| = ln g (closed form)."""
    c = ExperimentConfig(cell="rnn", activation="linear", init="spectral", init_scale=g, hidden_size=32,
                         seq_len=500, batch_size=1, dtype="float64", jacobian_lags="log", lyapunov_k=1,
                         n_singular=1)
    d = sweep_fn(c, "init_scale=" + str(g), metrics=("lyapunov_max", "spectral_radius"))
    p = d["points"][0]
    assert p["spectral_radius"] == pytest.approx(g, rel=1e-9)
    assert abs(p["lyapunov_max"] - math.log(g)) < 0.03


def test_training_metrics():
    c = ExperimentConfig(cell="rnn", task="adding", hidden_size=8, seq_len=10, batch_size=4, train_steps=3)
    d = sweep_fn(c, "cell=rnn,gru", metrics=("final_loss", "final_loss_over_chance"))
    from analysis.training import Trainer
    tr = Trainer(c.replace(cell="gru"))
    tr.run(3)
    p = d["points"][1]
    assert p["final_loss"] == pytest.approx(np.mean([r.loss for r in tr.records]), rel=1e-9)
    assert p["final_loss_over_chance"] == pytest.approx(p["final_loss"] * 6)  # adding: chance MSE 1/6


def test_failing_and_overflowing_points_are_recorded_and_the_sweep_goes_on(monkeypatch):
    import analysis.experiment as ex
    real = ex.run_experiment

    def flaky(config):
        if config.hidden_size == 9:
            raise RuntimeError("boom")
        return real(config)
    monkeypatch.setattr(ex, "run_experiment", flaky)
    d = sweep_fn(TINY.replace(activation="relu", seq_len=200), "hidden_size=8,9,16", metrics=("lyapunov_max",))
    assert [p["status"] for p in d["points"]] == ["ok", "failed", "ok"]
    assert "RuntimeError: boom" in d["points"][1]["reason"] and d["points"][1]["lyapunov_max"] is None
    d = sweep_fn(TINY.replace(activation="linear", seq_len=200), "init_scale=0.5,4", metrics=("lyapunov_max",))
    ok, big = d["points"]
    assert ok["status"] == "ok" and ok["lyapunov_max"] < 0
    # the states overflow float32 (4^64 > 3e38), the Jacobians (= W) stay finite: the exponent is still ln 4
    assert big["status"] == "nonfinite" and "hidden_state" in big["reason"]
    assert abs(big["lyapunov_max"] - math.log(4)) < 0.03
    assert d["summary"][1]["failed"] == 1
    assert any("overflowed" in n for n in d["notes"])
    json.dumps(d, allow_nan=False)


# ---- resume ------------------------------------------------------------------------------------------------
def test_resume_skips_finished_points_and_keeps_them(tmp_path):
    path = tmp_path / "sweep.jsonl"
    full = sweep_fn(TINY, "init_scale=0.5,1,1.5", seeds=2, metrics=("lyapunov_max",), resume=str(path))
    lines = path.read_text().splitlines()
    assert len(lines) == 1 + 6 and json.loads(lines[0])["sweep"] == 1
    # an interrupted sweep: 3 points finished, the 4th half-written; mark a kept point to see it is not rerun
    kept = json.loads(lines[2])
    kept["point"]["lyapunov_max"] = 123.0
    path.write_text("\n".join([lines[0], lines[1], json.dumps(kept), lines[3], lines[4][:20]]))
    seen = []
    d = sweep_fn(TINY, "init_scale=0.5,1,1.5", seeds=2, metrics=("lyapunov_max",), resume=str(path),
                 progress=lambda done, total, eta, p: seen.append((done, total)))
    assert d["timings"]["points_run"] == 3 and seen[0] == (3, 6) and seen[-1] == (6, 6)
    i = [(p["init_scale"], p["seed"]) for p in d["points"]].index(
        (kept["key"]["init_scale"], kept["key"]["seed"]))
    assert d["points"][i]["lyapunov_max"] == 123.0  # kept, not recomputed
    assert numbers(d)[:i] + numbers(d)[i + 1:] == numbers(full)[:i] + numbers(full)[i + 1:]
    assert any("taken from" in n for n in d["notes"])
    # all done now: a third run runs nothing
    assert sweep_fn(TINY, "init_scale=0.5,1,1.5", seeds=2, resume=str(path))["timings"]["points_run"] == 0
    with pytest.raises(ConfigError, match="another sweep.*hidden_size"):
        sweep_fn(TINY.replace(hidden_size=8), "init_scale=0.5,1,1.5", seeds=2, resume=str(path))
    (tmp_path / "x.jsonl").write_text('{"a": 1}\n')
    with pytest.raises(ConfigError, match="not a sweep resume file"):
        sweep_fn(TINY, "init_scale=1,2", resume=str(tmp_path / "x.jsonl"))


# ---- executors ---------------------------------------------------------------------------------------------
SWEEP_ARGS = dict(vary=["cell=rnn,lstm", "init_scale=0.8,1.6"], seeds=2, metrics=METRIC_KEYS)


def test_same_numbers_inline_and_process_pool():
    """A tiny sweep gives identical numbers in this process and in 2 spawned workers."""
    inline = sweep_fn(TINY, **SWEEP_ARGS)
    pool = sweep_fn(TINY, **SWEEP_ARGS, workers=2)
    assert pool["executor"] == {"executor": "local", "workers": 2}
    assert numbers(inline) == numbers(pool)
    assert inline["summary"] == pool["summary"]
    assert all(p["status"] == "ok" for p in inline["points"])


@pytest.mark.skipif(not os.environ.get("RUN_SLOW"), reason="starts a local Ray (~10-18 s): RUN_SLOW=1")
def test_same_numbers_on_ray(monkeypatch):
    """The same sweep on a Ray started here gives the inline numbers (as every test that starts a local Ray, in
    ``make test-all``)."""
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    inline = sweep_fn(TINY, **SWEEP_ARGS)
    ray = sweep_fn(TINY, **SWEEP_ARGS, executor="ray")
    assert ray["executor"]["executor"] == "ray" and ray["executor"]["cpus"] >= 1
    assert numbers(inline) == numbers(ray)
    assert inline["summary"] == ray["summary"]
    import ray as ray_mod
    assert not ray_mod.is_initialized()  # the Ray it started is stopped


def test_executor_arguments(tmp_path):
    with pytest.raises(ConfigError, match="executor"):
        sweep_fn(TINY, "init_scale=1,2", executor="dask")
    with pytest.raises(ConfigError, match="workers"):
        sweep_fn(TINY, "init_scale=1,2", workers=0, resume=str(tmp_path / "r.jsonl"))
    assert not (tmp_path / "r.jsonl").exists()  # bad input writes nothing
    with pytest.raises(ConfigError, match="directory"):
        sweep_fn(TINY, "init_scale=1,2", resume=str(tmp_path / "no" / "r.jsonl"))
    with pytest.raises(ConfigError, match="--executor ray"):
        sweep_fn(TINY, "init_scale=1,2", ray_address="127.0.0.1:1")
    with pytest.raises(ConfigError, match="nothing answers there"):  # not minutes of Ray's own retries
        sweep_fn(TINY, "init_scale=1,2", executor="ray", ray_address="127.0.0.1:1")


# ---- command line ------------------------------------------------------------------------------------------
def test_cli_writes_the_sweep_json_with_progress_on_stderr(tmp_path, cli_inproc):
    out = tmp_path / "s.json"
    p = cli_inproc("sweep", "--init", "spectral", "--hidden-size", 8, "--seq-len", 20, "--batch-size", 2,
                   "--jacobian-lags", "log", "--vary", "init_scale=0.5:1.5:3", "--vary", "activation=tanh,linear",
                   "--seeds", 2, "--metrics", "lyapunov_max,spectral_radius", "--json", out)
    assert p.returncode == 0, p.stderr
    assert "sweep: 12/12 points (100%)" in p.stderr and "sweep: 0/12" in p.stderr
    d = json.loads(out.read_text())
    assert set(d) >= {"config", "axes", "points", "summary", "notes", "executor"}
    assert d["axes"] == {"init_scale": [0.5, 1.0, 1.5], "activation": ["tanh", "linear"]}
    assert len(d["points"]) == 12 and len(d["summary"]) == 6
    pt = d["points"][0]
    assert {"init_scale", "activation", "seed", "lyapunov_max", "spectral_radius", "status", "reason"} <= set(pt)
    assert d["summary"][0]["spectral_radius"]["mean"] == pytest.approx(0.5, rel=1e-6)
    assert d["config"]["hidden_size"] == 8


@pytest.mark.parametrize("args,needle", [
    (["--vary", "nope=1,2"], "nope"), (["--vary", "init_scale=1:x:3"], "init_scale"),
    (["--vary", "init_scale=1,2", "--metrics", "bogus"], "bogus"), (["--hidden-size", "0", "--vary", "cell=rnn"],
                                                                    "hidden_size"),
    (["--vary", "init_scale=1,2", "--workers", "0"], "workers"), ([], "--vary"),
])
def test_cli_bad_input_one_line_exit_2(tmp_path, capsys, args, needle):
    from analysis.__main__ import main
    out = tmp_path / "s.json"
    try:
        rc = main(["sweep", *map(str, args), "--json", str(out)])
    except SystemExit as e:  # argparse's own errors (a missing --vary) exit from the parser
        rc = e.code
    assert rc == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
    assert not out.exists()


def test_a_dead_worker_is_a_failed_point_and_the_sweep_goes_on(monkeypatch):
    from analysis import executors
    from analysis.executors import InlineExecutor, WorkerError

    class Dying(InlineExecutor):
        def run(self, fn, tasks):
            for i, t in enumerate(tasks):
                yield i, WorkerError("BrokenProcessPool: killed") if i == 1 else fn(t)
    monkeypatch.setattr(executors, "InlineExecutor", Dying)
    d = sweep_fn(TINY, "init_scale=0.5,1,1.5")
    assert [p["status"] for p in d["points"]] == ["ok", "failed", "ok"]
    assert "worker died" in d["points"][1]["reason"] and d["points"][1]["init_scale"] == 1.0


def test_an_axis_that_changes_nothing_is_said():
    d = sweep_fn(TINY.replace(init="default"), "init_scale=1,2")
    assert any("init_scale has no effect with init='default'" in n for n in d["notes"])
    assert d["points"][0]["lyapunov_max"] == d["points"][1]["lyapunov_max"]  # indeed the same network
    d = sweep_fn(TINY.replace(cell="rnn"), ["forget_bias=none,1"])
    assert any("forget_bias applies to the LSTM only" in n for n in d["notes"])
    assert not sweep_fn(TINY, "init_scale=1,2")["notes"]
