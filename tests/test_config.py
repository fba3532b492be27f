"""Reference tests for analysis/config.py (ExperimentConfig), rnn_models/config.py (ModelConfig) and the JSON
contract of run_experiment(...).to_dict()."""
import dataclasses
import json
import math

import pytest

from analysis import ExperimentConfig, run_experiment
from rnn_models import ConfigError, ModelConfig


pytestmark = pytest.mark.usefixtures("single_thread")


def _one_line_naming(exc, field):
    msg = str(exc.value)
    assert "\n" not in msg and msg.strip() == msg and msg, repr(msg)
    assert field in msg, (field, msg)
    return msg


# --------------------------------------------------------------------------------------------------------------
# JSON round trip
# --------------------------------------------------------------------------------------------------------------
ROUND_TRIP = [
    ExperimentConfig(),
    ExperimentConfig(cell="lstm", hidden_size=17, input_size=3, num_layers=2, bidirectional=True, init="chrono",
                     init_scale=0.25, layer_norm=True, peephole=True, task="random", seq_len=33, batch_size=5,
                     seed=12, dtype="float64", loss_steps="all", layer=-2, jacobian_lags="log", num_log_lags=7,
                     jacobian_batch=2, n_singular=3, horizon_threshold=0.05, lyapunov_k=0, truncate=4,
                     optimizer="sgd", lr=0.5, clip="norm", clip_threshold=2.5, train_steps=10),
    ExperimentConfig(cell="lstm", forget_bias=-1.25, text="hello", task="charlm", seq_len=5),
    ExperimentConfig(cell="gru", activation="relu", init="spectral", init_scale=1.0 / 3.0, lr=1e-7,
                     inputs_path="/tmp/x.npy", state_dict_path="/tmp/m.pt", horizon_threshold=1.0),
    ExperimentConfig(cell="rnn", compare=("lstm", "gru", "rnn")),
]


@pytest.mark.parametrize("cfg", ROUND_TRIP)
def test_json_round_trip(cfg):
    text = cfg.to_json()
    back = ExperimentConfig.from_json(text)
    assert back == cfg
    assert json.loads(text) == cfg.to_dict()
    assert set(cfg.to_dict()) == {f.name for f in dataclasses.fields(ExperimentConfig)}
    assert back.to_json() == text
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg


def test_from_json_of_a_result_dict_takes_its_config():
    r = run_experiment(ExperimentConfig(cell="gru", hidden_size=4, seq_len=5, batch_size=2, seed=7))
    d = r.to_dict()
    back = ExperimentConfig.from_json(json.dumps(d, allow_nan=False))
    assert back == r.config
    assert back.to_dict() == d["config"]
    # rerunning the saved config reproduces the result
    r2 = run_experiment(back)
    assert r2.to_dict()["grad_norm"] == d["grad_norm"]


def test_from_json_rejects_bad_json_and_non_objects():
    with pytest.raises(ConfigError) as e:
        ExperimentConfig.from_json("{not json")
    assert "\n" not in str(e.value) and "JSON" in str(e.value)
    with pytest.raises(ConfigError) as e:
        ExperimentConfig.from_json("[1, 2]")
    assert "\n" not in str(e.value)


def test_unknown_field_rejected():
    with pytest.raises(ConfigError) as e:
        ExperimentConfig.from_json(json.dumps({"cell": "rnn", "hiden_size": 3}))
    _one_line_naming(e, "hiden_size")
    with pytest.raises(ConfigError) as e:
        ExperimentConfig.from_dict({"foo": 1})
    _one_line_naming(e, "foo")


# --------------------------------------------------------------------------------------------------------------
# every bad field -> one-line ConfigError naming the field
# --------------------------------------------------------------------------------------------------------------
BAD = [
    ("cell", "cnn"), ("cell", None), ("cell", 1),
    ("compare", ("rnn", "cnn")), ("compare", ("lstm", "lstm")), ("compare", ("rnn", "lstm", "gru", "rnn")),
    ("compare", 5), ("compare", "rnn,transformer"),
    ("activation", "gelu"), ("activation", "Tanh"),
    ("hidden_size", 0), ("hidden_size", 4097), ("hidden_size", 2.0), ("hidden_size", True), ("hidden_size", "8"),
    ("input_size", 0), ("input_size", -3), ("input_size", 1.5),
    ("num_layers", 0), ("num_layers", 17), ("num_layers", None),
    ("bidirectional", 1), ("bidirectional", "true"), ("bidirectional", None),
    ("init", "he"), ("init", None),
    ("init_scale", -0.1), ("init_scale", 100.5), ("init_scale", math.nan), ("init_scale", math.inf),
    ("init_scale", "1"), ("init_scale", True),
    ("layer_norm", 0), ("layer_norm", "no"),
    ("peephole", 1), ("peephole", None),
    ("forget_bias", 20.5), ("forget_bias", -21), ("forget_bias", math.nan), ("forget_bias", "1"),
    ("task", "parity"), ("task", None),
    ("seq_len", 0), ("seq_len", 100_001), ("seq_len", 10.0),
    ("batch_size", 0), ("batch_size", 4097), ("batch_size", None),
    ("seed", -1), ("seed", 2**31), ("seed", 1.0),
    ("dtype", "float16"), ("dtype", "double"), ("dtype", None),
    ("text", "shakespeare"),
    ("loss_steps", "first"), ("loss_steps", None),
    ("layer", 1), ("layer", -2), ("layer", 0.0),
    ("jacobian_lags", "linear"),
    ("num_log_lags", 1), ("num_log_lags", 10_001),
    ("jacobian_batch", -1), ("jacobian_batch", 4097),
    ("n_singular", 0), ("n_singular", 4097),
    ("horizon_threshold", 0.0), ("horizon_threshold", 1.5), ("horizon_threshold", -0.1),
    ("horizon_threshold", math.nan),
    ("lyapunov_k", -1), ("lyapunov_k", 8193),
    ("truncate", -1), ("truncate", 100_001),
    ("spectra", "quick"), ("threads", -1), ("threads", 2.5), ("device", "tpu"),
    ("optimizer", "rmsprop"),
    ("lr", 0.0), ("lr", -1e-3), ("lr", 101.0), ("lr", math.inf),
    ("clip", "global"),
    ("clip_threshold", 0.0), ("clip_threshold", -1.0), ("clip_threshold", 1e13),
    ("train_steps", -1), ("train_steps", 1_000_001), ("train_steps", 2.5),
    ("module", "rnn"), ("module", "a b"), ("readout", 5), ("readout", "decoder"), ("embedding", "x-y"),
    ("batch_first", 1), ("batch_first", "yes"), ("jacobian_detail", "fast"), ("jacobian_detail", None),
    ("lru_r_min", -0.1), ("lru_r_min", 0.9995), ("lru_r_min", "0.5"), ("lru_r_max", 0.0), ("lru_r_max", 1.01),
    ("lru_r_max", 0.5), ("lru_phase_max", 0.0), ("lru_phase_max", 6.3), ("lru_phase_max", math.inf),
    ("lru_gamma", 1), ("lru_gamma", None),
]


@pytest.mark.parametrize("field,value", BAD, ids=[f"{f}={v!r}" for f, v in BAD])
def test_bad_field_one_line_config_error(field, value):
    with pytest.raises(ConfigError) as e:
        ExperimentConfig(**{field: value})
    _one_line_naming(e, field)
    # the same through JSON (the command line / saved-file path), where the value survives JSON
    try:
        text = json.dumps({field: value}, allow_nan=False)
    except ValueError:
        return
    with pytest.raises(ConfigError) as e:
        ExperimentConfig.from_json(text)
    _one_line_naming(e, field)


def test_every_field_is_covered_by_the_bad_value_table():
    tested = {f for f, _ in BAD} | {"inputs_path", "state_dict_path", "targets_path", "h0_path"}
    assert tested == {f.name for f in dataclasses.fields(ExperimentConfig)}


@pytest.mark.parametrize("field,value", [("inputs_path", 5), ("state_dict_path", ["m.pt"]), ("inputs_path", ""),
                                         ("state_dict_path", 1.5), ("targets_path", 3), ("h0_path", " ")])
def test_bad_path_fields_rejected(field, value):
    with pytest.raises(ConfigError) as e:
        ExperimentConfig(**{field: value})
    _one_line_naming(e, field)


def test_chrono_with_forget_bias_rejected():
    with pytest.raises(ConfigError) as e:
        ExperimentConfig(cell="lstm", init="chrono", forget_bias=1.0)
    _one_line_naming(e, "forget_bias")
    ExperimentConfig(cell="gru", init="chrono", forget_bias=1.0)  # not the LSTM: allowed (and noted as ignored)


def test_good_edge_values_accepted():
    ExperimentConfig(hidden_size=1, num_layers=16, layer=-16, seq_len=1, batch_size=1, seed=0, init_scale=0.0,
                     forget_bias=-20.0, horizon_threshold=1.0, lyapunov_k=0, truncate=0, lr=100.0)
    ExperimentConfig(num_layers=3, layer=2)
    ExperimentConfig(num_layers=3, layer=-3)


MODEL_BAD = [("cell", "cnn"), ("activation", "elu"), ("input_size", 0), ("hidden_size", 0), ("hidden_size", 4097),
             ("num_layers", 17), ("bidirectional", "yes"), ("init", "he"), ("init_scale", -1.0),
             ("layer_norm", None), ("peephole", 0), ("forget_bias", math.inf), ("chrono_tmax", 1), ("seed", -1),
             ("seed", 2**63)]


@pytest.mark.parametrize("field,value", MODEL_BAD)
def test_model_config_bad_field(field, value):
    with pytest.raises(ConfigError) as e:
        ModelConfig(**{field: value})
    _one_line_naming(e, field)
    assert isinstance(e.value, ValueError)


def test_model_config_derived_and_inapplicable():
    assert ModelConfig(cell="lstm", hidden_size=5).state_size == 10
    assert ModelConfig(cell="gru", hidden_size=5).state_size == 5
    assert ModelConfig(activation="sigmoid").gamma == 0.25
    notes = ModelConfig(cell="gru", activation="relu", peephole=True, forget_bias=1.0).inapplicable()
    assert len(notes) == 3 and all("\n" not in n for n in notes)
    assert ModelConfig(cell="rnn", init="chrono").inapplicable()
    assert ModelConfig(cell="lstm", peephole=True, forget_bias=1.0).inapplicable() == []


# --------------------------------------------------------------------------------------------------------------
# resolution of the config by run_experiment
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task,T,size", [("adding", 6, 2), ("copy", 21, 10), ("temporal-order", 10, 8),
                                         ("random", 4, 8)])
def test_resolved_config_fills_input_size(task, T, size):
    r = run_experiment(ExperimentConfig(task=task, cell="gru", hidden_size=3, seq_len=T, batch_size=2))
    d = r.to_dict()
    assert d["config"]["input_size"] == size and r.config.input_size == size
    assert d["task"]["input_size"] == size
    assert d["config"]["seq_len"] == T and d["config"]["batch_size"] == 2
    assert r.config.replace(input_size=None) == ExperimentConfig(task=task, cell="gru", hidden_size=3, seq_len=T,
                                                                 batch_size=2)


def test_random_task_keeps_explicit_input_size():
    r = run_experiment(ExperimentConfig(task="random", input_size=3, hidden_size=3, seq_len=4, batch_size=2))
    assert r.to_dict()["config"]["input_size"] == 3


def test_charlm_input_size_is_vocabulary():
    r = run_experiment(ExperimentConfig(task="charlm", text="hello", cell="rnn", hidden_size=3, seq_len=6,
                                        batch_size=2))
    assert r.to_dict()["config"]["input_size"] == 4  # h, e, l, o


@pytest.mark.parametrize("task,size", [("adding", 3), ("copy", 2), ("temporal-order", 10)])
def test_input_size_conflicting_with_task(task, size):
    with pytest.raises(ConfigError) as e:
        run_experiment(ExperimentConfig(task=task, input_size=size, seq_len=25, batch_size=2, hidden_size=3))
    _one_line_naming(e, "input_size")
    # the matching size is fine
    ok = {"adding": 2, "copy": 10, "temporal-order": 8}[task]
    run_experiment(ExperimentConfig(task=task, input_size=ok, seq_len=25, batch_size=2, hidden_size=3))


def test_seq_len_too_short_for_task_is_config_error():
    with pytest.raises(ConfigError) as e:
        run_experiment(ExperimentConfig(task="copy", seq_len=10, hidden_size=3, batch_size=2))
    _one_line_naming(e, "seq_len")


# --------------------------------------------------------------------------------------------------------------
# the JSON contract of to_dict()
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidir", [False, True])
def test_to_dict_contract(cell, bidir):
    T, H, n = 9, 5, 3
    r = run_experiment(ExperimentConfig(cell=cell, bidirectional=bidir, hidden_size=H, seq_len=T, batch_size=3,
                                        n_singular=n, horizon_threshold=0.5))
    d = r.to_dict()
    text = json.dumps(d, allow_nan=False)  # strict JSON: no NaN / Infinity
    assert json.loads(text)["grad_norm"] == d["grad_norm"]
    for key in ("config", "grad_norm", "jacobian", "cell_flow", "spectral_radius", "memory_horizon", "nonfinite"):
        assert key in d, key
    assert ExperimentConfig.from_dict(d["config"]) == r.config
    assert len(d["grad_norm"]) == T and all(isinstance(v, float) for v in d["grad_norm"])
    j = d["jacobian"]
    assert j["lag"] == list(range(T))
    assert len(j["spectral_norm"]) == T and len(j["min_singular_value"]) == T
    assert len(j["singular_values"]) == T and all(len(row) == n for row in j["singular_values"])
    # linear-scale values are 10 ** the log10 values the result carries
    for k in range(T):
        assert j["spectral_norm"][k] == pytest.approx(10 ** r.jac.spectral_norm[k], rel=1e-12)
        assert j["singular_values"][k][0] == pytest.approx(j["spectral_norm"][k], rel=1e-12)
        assert j["min_singular_value"][k] <= j["singular_values"][k][-1] * (1 + 1e-12)
    assert j["spectral_norm"][0] == 1.0  # P_0 = I
    if cell == "lstm":
        cf = d["cell_flow"]
        assert isinstance(cf, dict) and len(cf["full"]) == T and len(cf["carousel"]) == T
        assert cf["full"][0] == 1.0 and cf["carousel"][0] == 1.0
        assert all(0 < v <= 1.0 for v in cf["carousel"])  # products of forget gates in (0, 1)
    else:
        assert d["cell_flow"] is None
    if cell == "rnn":
        assert isinstance(d["spectral_radius"], float)
        W = r.spectra["h"]["eigenvalues"]
        assert d["spectral_radius"] == pytest.approx(float(abs(W).max()), rel=1e-12)
    else:
        gates = ("i", "f", "g", "o") if cell == "lstm" else ("r", "z", "n")
        assert isinstance(d["spectral_radius"], dict) and tuple(d["spectral_radius"]) == gates
        assert all(isinstance(v, float) and v > 0 for v in d["spectral_radius"].values())
    mh = d["memory_horizon"]
    if mh is None:
        assert all(v >= 0.5 for v in j["spectral_norm"])
    else:
        assert isinstance(mh, int) and mh in j["lag"]
        first = next(k for k, v in zip(j["lag"], j["spectral_norm"]) if v < 0.5)
        assert mh == first
    assert d["nonfinite"] is None
    assert (d["jacobian_backward"] is not None) == bidir


def test_spectral_radius_in_json_against_weights():
    cfg = ExperimentConfig(cell="lstm", hidden_size=6, seq_len=4, batch_size=2, init="spectral", init_scale=0.7)
    d = run_experiment(cfg).to_dict()
    for g, v in d["spectral_radius"].items():
        assert v == pytest.approx(0.7, abs=1e-6), g  # float32 weights
