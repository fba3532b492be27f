"""What actually ran (analysis.provenance; issue 18 item 7): the exported config.json records the run (T, B, loss,
readout, embedding, layer, dtype, the files' names and sha256, dropout), re-running it with the same files gives
the same numbers, and sweeps say when seeds change nothing."""
import hashlib
import json

import numpy as np
import pytest
import torch

from analysis import ExperimentConfig, run_experiment
from rnn_models.config import ConfigError
from analysis.export import export_all
from analysis.provenance import provenance_lines
from analysis.sweep import axis_notes, make_plan
from benchmarks.word_lm import WordLM, batches, token_stream

T, B = 9, 3


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    torch.manual_seed(0)
    model = WordLM("LSTM", 30, 8, 7, 2, dropout=0.2).eval()
    ids, tg = next(batches(token_stream(300, 30, seed=3), T, B))
    d = tmp_path_factory.mktemp("prov")
    torch.save(model.state_dict(), d / "lm.pt")
    np.save(d / "ids.npy", ids.numpy())
    np.save(d / "tg.npy", tg.numpy())
    return d


def _config(d, **kw):
    return ExperimentConfig(state_dict_path=str(d / "lm.pt"), inputs_path=str(d / "ids.npy"),
                            targets_path=str(d / "tg.npy"), readout="decoder", embedding="encoder", layer=0,
                            dtype="float64", **kw)


def test_export_config_records_what_ran_and_reruns_to_the_same_numbers(files, tmp_path):
    export_all(_config(files), str(tmp_path / "out"), formats=("json",))
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    c, (prov,) = saved["config"], saved["provenance"].values()
    # the run's real T, B and loss, not the config's defaults (100, 16, auto)
    assert (c["seq_len"], c["batch_size"], c["loss_steps"], c["cell"], c["num_layers"]) == (T, B, "all", "lstm", 2)
    assert (prov["T"], prov["B"], prov["dtype"], prov["layer"], prov["loss_steps"]) == (T, B, "float64", 0, "all")
    assert prov["readout"] == "decoder" and prov["embedding"] == "encoder" and "cross-entropy" in prov["loss"]
    assert prov["layer_text"] == "layer 0 (bottom) of 2"
    for role, name in (("state_dict", "lm.pt"), ("inputs", "ids.npy"), ("targets", "tg.npy")):
        f = prov["files"][role]
        assert f["name"].endswith(name) and f["sha256"] == hashlib.sha256((files / name).read_bytes()).hexdigest()
    assert "state_dict" in prov["dropout"] and prov["seeds_matter"] is False
    # re-run from the exported file (the command line's --config reads it the same way)
    again = ExperimentConfig.from_json((tmp_path / "out" / "config.json").read_text())
    first, second = run_experiment(_config(files)).to_dict(), run_experiment(again).to_dict()
    for key in ("grad_norm", "grad_norm_per_layer", "cell_grad_norm", "cell_carry_grad_norm", "memory_horizon"):
        assert first[key] == second[key], key
    assert first["jacobian"]["log10_spectral_norm"] == second["jacobian"]["log10_spectral_norm"]
    assert second["config"] == first["config"]
    lines = provenance_lines(second["provenance"])
    assert lines[0].startswith("ran: T=9, B=3, float64, layer 0 (bottom) of 2") and any("sha256" in x for x in lines)


def test_task_runs_record_their_task_and_seed():
    r = run_experiment(ExperimentConfig(cell="gru", hidden_size=4, seq_len=6, batch_size=2, task="adding"))
    p = r.to_dict()["provenance"]
    assert (p["source"], p["task"], p["T"], p["B"], p["seeds_matter"]) == ("task", "adding", 6, 2, True)
    assert p["views"] == ["gradients", "activations", "jacobians", "spectrum", "cell-state"]


def test_sweep_says_when_seeds_change_nothing(files):
    fixed = make_plan(_config(files), ["init_scale=0.5,1"], seeds=3, metrics=("memory_horizon",))
    assert any("seeds change nothing" in n for n in axis_notes(fixed))
    probe = make_plan(ExperimentConfig(state_dict_path=str(files / "lm.pt"), inputs_path=str(files / "ids.npy")),
                      ["init_scale=0.5,1"], seeds=2, metrics=("memory_horizon",))
    assert any("probe's direction" in n for n in axis_notes(probe))
    task = make_plan(ExperimentConfig(), ["init_scale=0.5,1"], seeds=3, metrics=("memory_horizon",))
    assert not any("seeds change" in n for n in axis_notes(task))



def test_analyze_records_what_it_ran_and_reruns_from_the_saved_model(files, tmp_path, cli_inproc):
    """Issue 18: analyze(model, readout=..., embedding=...) records in the result's config what ran, as a
    state_dict run names it: the readout's and embedding's names in the model (given as a name or as the module
    object), the model and arrays as "python:" records. Its JSON re-run with the model's saved state_dict and the
    same arrays (--config result.json --load-state-dict ... --inputs ... --targets ...) gives the same numbers;
    without the files the re-run is refused with one line, never silently run on the random probe."""
    from analysis import analyze
    model = WordLM("LSTM", 30, 8, 7, 2, dropout=0.2)
    model.load_state_dict(torch.load(files / "lm.pt", weights_only=True))
    ids, tg = torch.from_numpy(np.load(files / "ids.npy")), torch.from_numpy(np.load(files / "tg.npy"))
    r = analyze(model, ids, embedding=model.encoder, readout="decoder", targets=tg, layer=0, dtype="float64")
    c = r.config
    assert (c.module, c.readout, c.embedding) == (None, "decoder", "encoder")
    assert (c.state_dict_path, c.inputs_path, c.targets_path, c.h0_path) == (
        "python:WordLM", "python:inputs", "python:targets", None)
    p = r.provenance
    assert (p["source"], p["module"], p["readout"], p["embedding"]) == ("python", "rnn", "decoder", "encoder")
    saved = tmp_path / "result.json"
    saved.write_text(json.dumps(r.to_dict()))
    out = tmp_path / "again.json"
    run = cli_inproc("run", "--config", saved, "--load-state-dict", files / "lm.pt", "--inputs", files / "ids.npy",
                     "--targets", files / "tg.npy", "--json", out)
    assert run.returncode == 0, run.stderr
    first, again = r.to_dict(), json.loads(out.read_text())
    np.testing.assert_allclose(again["grad_norm"], first["grad_norm"], rtol=1e-12)
    np.testing.assert_allclose(again["jacobian"]["log10_spectral_norm"], first["jacobian"]["log10_spectral_norm"],
                               rtol=1e-9)
    assert again["memory_horizon"] == first["memory_horizon"] and "cross-entropy" in again["provenance"]["loss"]
    assert (again["config"]["readout"], again["config"]["embedding"]) == ("decoder", "encoder")
    bare = cli_inproc("run", "--config", saved, "--json", tmp_path / "never.json")
    assert bare.returncode == 2 and not (tmp_path / "never.json").exists()
    line = bare.stderr.strip()
    assert "\n" not in line and "state_dict_path='python:WordLM'" in line and "torch.save" in line, line
    with pytest.raises(ConfigError, match="state_dict_path='python:WordLM' records what was given to analyze"):
        run_experiment(c)
    # a readout that is not part of the model has no name in its state_dict: provenance names its type
    head = torch.nn.Linear(7, 30)
    other = analyze(model, ids, embedding="encoder", readout=head, targets=tg, views="gradients")
    assert (other.config.readout, other.config.targets_path) == (None, None)
    assert other.provenance["readout"] == "Linear"
