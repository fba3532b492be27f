"""analyze(model) on a user's trained models, against torch.nn itself in float64; the CLI on saved files.

The reference never touches the engine: torch.nn.LSTM / GRU with the trained weights, stepped one time step at a
time in float64, so h_n of each step is a tensor of its own and autograd gives the total dL/dh_t through every
later path; L is the model's own loss (decoder + targets, cross-entropy, torch's mean reduction).
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analysis import analyze
from rnn_models.config import ConfigError
from conftest import save_lm_files, white_png

ROOT = Path(__file__).resolve().parents[1]
V, E, H, T, B = 11, 6, 9, 14, 3


class WordLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Embedding(V, E)
        self.rnn = nn.LSTM(E, H, num_layers=2, dropout=0.1)
        self.decoder = nn.Linear(H, V)

    def forward(self, ids):
        out, _ = self.rnn(self.encoder(ids))
        return self.decoder(out)


class GRUClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(4, H, batch_first=True)
        self.head = nn.Linear(H, 3)

    def forward(self, x):
        out, _ = self.gru(x)
        return self.head(out[:, -1])


def _train(model, batch_fn, steps=5):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        x, y, loss_fn = batch_fn()
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return model


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)

    def batch():
        ids = torch.randint(0, V, (T + 1, B), generator=g)
        return ids[:-1], ids[1:], lambda y, t: F.cross_entropy(y.reshape(-1, V), t.reshape(-1))
    model = _train(WordLM(), batch)
    ids, tg, _ = batch()
    return model, ids, tg


@pytest.fixture(scope="module")
def gru():
    torch.manual_seed(2)
    g = torch.Generator().manual_seed(3)

    def batch():
        x = torch.randn(B, T, 4, generator=g)
        return x, (x[:, 0, 0] > 0).long() + (x[:, 0, 1] > 0).long(), F.cross_entropy
    model = _train(GRUClassifier(), batch)
    x, y, _ = batch()
    return model, x, y


def torch_layers(rnn, cls=nn.LSTM):
    """One single-layer torch module per layer (float64) with that layer's trained weights."""
    sd = {k: v.detach().double() for k, v in rnn.state_dict().items()}
    mods = []
    for l in range(rnn.num_layers):
        m = cls(rnn.input_size if l == 0 else rnn.hidden_size, rnn.hidden_size).double()
        m.load_state_dict({k.replace(f"_l{l}", "_l0"): v for k, v in sd.items() if k.endswith(f"_l{l}")})
        mods.append(m)
    return mods


def step_lstm(layers, x, state):
    """Run the torch layers one time step at a time; returns hs[l][t] (B, H), each a node of its own."""
    hs = [[] for _ in layers]
    state = [list(s) for s in state]
    for t in range(x.shape[0]):
        inp = x[t:t + 1]
        for l, m in enumerate(layers):
            _, (h, c) = m(inp, tuple(s.unsqueeze(0) for s in state[l]))
            h = h[0].view_as(h[0])
            state[l] = [h, c[0]]
            hs[l].append(h)
            inp = h.unsqueeze(0)
    return hs


def geo(grads):
    return torch.exp(torch.log(torch.stack([g.norm(dim=-1) for g in grads])).mean(-1)).numpy()  # (T,)


def reference_lm(model, ids, tg):
    """||dL/dh^l_t|| (geometric mean over the batch) of both layers under the model's own cross-entropy."""
    W, b = model.decoder.weight.detach().double(), model.decoder.bias.detach().double()
    x = model.encoder.weight.detach().double()[ids]  # (T, B, E)
    zero = torch.zeros(B, H, dtype=torch.float64)
    hs = step_lstm(torch_layers(model.rnn), x, [(zero, zero)] * 2)
    logits = torch.stack(hs[1]) @ W.T + b  # (T, B, V)
    loss = F.cross_entropy(logits.reshape(-1, V), tg.reshape(-1))
    grads = torch.autograd.grad(loss, hs[0] + hs[1])
    return np.stack([geo(grads[:T]), geo(grads[T:])]), float(loss.detach())  # (2, T)


def test_lm_grad_norms_equal_float64_torch_reference(lm):
    model, ids, tg = lm
    ref, ref_loss = reference_lm(model, ids, tg)
    for layer in (1, 0):
        r = analyze(model, model.encoder(ids).detach(), readout=model.decoder, targets=tg, layer=layer,
                    dtype="float64")
        np.testing.assert_allclose(r.grad.grad_norm, ref[layer], rtol=1e-10)
        np.testing.assert_allclose(r.grad.per_layer, ref, rtol=1e-10)
        assert r.grad.loss == pytest.approx(ref_loss, rel=1e-12)
        assert (r.config.cell, r.config.num_layers, r.config.hidden_size, r.config.input_size) == ("lstm", 2, H, E)
        assert r.config.loss_steps == "all" and r.spec.output_size == V
    # float32 (the default) within float32's rounding
    r32 = analyze(model, ids, embedding="encoder", readout="decoder", targets=tg)
    np.testing.assert_allclose(r32.grad.grad_norm, ref[1], rtol=1e-4)
    assert any("dropout=0.1" in n for n in r32.notes) and any("cross-entropy" in n for n in r32.notes)


def test_lm_model_left_as_it_was(lm):
    model, ids, tg = lm
    model.train()
    model.zero_grad(set_to_none=True)  # training left gradients; analyze must leave none
    before = {k: v.clone() for k, v in model.state_dict().items()}
    analyze(model, ids, embedding=model.encoder, readout=model.decoder, targets=tg,
            loss=None, dtype="float64", layer=0)
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()
    analyze(model, ids, embedding="encoder")
    assert not model.training


def test_callable_loss_and_h0_against_reference(lm):
    model, ids, tg = lm
    x = model.encoder(ids).detach()
    g = torch.Generator().manual_seed(5)
    h0 = (torch.randn(2, B, H, generator=g), torch.randn(2, B, H, generator=g))
    W, b = model.decoder.weight.detach().double(), model.decoder.bias.detach().double()

    def loss(out):  # the same cross-entropy, written by the user; only steps 3.. count
        return F.cross_entropy((out[3:] @ W.T + b).reshape(-1, V), tg[3:].reshape(-1))
    r = analyze(model, x, loss=loss, h0=h0, dtype="float64")
    hs = step_lstm(torch_layers(model.rnn), x.double(), [(h0[0][l].double(), h0[1][l].double()) for l in range(2)])
    ref = geo(torch.autograd.grad(loss(torch.stack(hs[1])), hs[1]))
    np.testing.assert_allclose(r.grad.grad_norm, ref, rtol=1e-10)
    assert any("h0 and c0" in n for n in r.notes)


def test_gru_classifier_batch_first_last_step(gru):
    model, x, y = gru
    r = analyze(model, x, readout="head", targets=y, dtype="float64")
    assert r.config.batch_first and r.config.loss_steps == "last" and r.config.seq_len == T
    ref_gru = nn.GRU(4, H).double()
    ref_gru.load_state_dict({k: v.double() for k, v in model.gru.state_dict().items()})
    h = torch.zeros(1, B, H, dtype=torch.float64)
    hs = []
    for t in range(T):
        _, h = ref_gru(x[:, t:t + 1].double().transpose(0, 1), h)
        hs.append(h)
    loss = F.cross_entropy(model.head.double()(hs[-1][0]), y)
    model.head.float()
    grads = torch.autograd.grad(loss, hs)
    ref = torch.exp(torch.log(torch.stack([gg[0].norm(dim=-1) for gg in grads])).mean(-1)).numpy()
    np.testing.assert_allclose(r.grad.grad_norm, ref, rtol=1e-10)
    np.testing.assert_allclose(10 ** r.grad.log10_grad_norm, ref, rtol=1e-9)  # the exact log-space chain


@pytest.mark.parametrize("kwargs,words", [
    (dict(module="decoder"), ["decoder", "Linear"]),
    (dict(readout="nope"), ["readout", "nope"]),
    (dict(hidden_size=3), ["hidden_size", "model decides"]),
    (dict(layer=2), ["layer=2", "[-2, 1]"]),
    (dict(bogus=1), ["bogus", "allowed settings"]),
    (dict(targets=torch.zeros(T, B, dtype=torch.long)), ["targets", "readout"]),
])
def test_analyze_bad_arguments_one_line(lm, kwargs, words):
    model, ids, _ = lm
    with pytest.raises(ConfigError) as e:
        analyze(model, model.encoder(ids).detach(), **kwargs)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_token_ids_without_embedding_and_two_rnns(lm):
    model, ids, _ = lm
    with pytest.raises(ConfigError, match="token ids.*model.encoder"):
        analyze(model, ids)
    two = nn.ModuleDict({"a": nn.GRU(3, 4), "b": nn.LSTM(3, 4)})
    with pytest.raises(ConfigError, match=r"2 nn.RNN/LSTM/GRU modules \(a, b\).*module="):
        analyze(two, torch.zeros(5, 1, 3))
    r = analyze(two, torch.randn(5, 1, 3), module="b")
    assert r.config.cell == "lstm"


def test_relu_rnn_nonlinearity_read_from_module():
    torch.manual_seed(0)
    rnn = nn.RNN(3, 5, nonlinearity="relu")
    r = analyze(rnn, torch.randn(8, 2, 3), dtype="float64")
    assert r.config.activation == "relu"
    with pytest.raises(ConfigError, match="activation='tanh' contradicts"):
        analyze(rnn, torch.randn(8, 2, 3), activation="tanh")


# ---- the command line on saved whole-model state_dicts (main() in this process: conftest.run_main) ---------


@pytest.fixture(scope="module")
def lm_files(lm, tmp_path_factory):
    return save_lm_files(lm, tmp_path_factory.mktemp("lm"))


def test_cli_equals_analyze_on_the_saved_lm(lm, lm_files, cli_inproc):
    cli = cli_inproc
    model, ids, tg = lm
    d = lm_files
    out = d / "o.json"
    p = cli("run", "--load-state-dict", d / "lm.pt", "--inputs", d / "ids.npy", "--embedding", "encoder",
            "--readout", "decoder", "--targets", d / "tg.npy", "--layer", 0, "--dtype", "float64", "--json", out)
    assert p.returncode == 0, p.stderr
    got = json.loads(out.read_text())
    want = analyze(model, ids, embedding="encoder", readout="decoder", targets=tg, layer=0, dtype="float64")
    np.testing.assert_allclose(got["grad_norm"], want.to_dict()["grad_norm"], rtol=1e-12)
    np.testing.assert_allclose(got["jacobian"]["log10_spectral_norm"], want.jac.spectral_norm, rtol=1e-9)
    c = got["config"]
    assert (c["cell"], c["num_layers"], c["hidden_size"], c["module"], c["readout"]) == ("lstm", 2, H, None,
                                                                                         "decoder")
    assert any("the file decided" in n and "'rnn'" in n for n in got["notes"])
    # the summary (stdout without --json) names the model's own loss, not the config's placeholder task
    from analysis.__main__ import _summary
    text = _summary(got)
    assert "own model, your readout's loss at every step" in text and "task random" not in text


@pytest.mark.parametrize("flags,words", [
    (["--hidden-size", 32], ["--hidden-size 32", f"hidden_size={H}"]),
    (["--cell", "gru"], ["--cell gru", "cell=lstm"]),
    (["--layer", 2], ["layer=2", "2 layers"]),
    (["--module", "decoder"], ["module='decoder'", "rnn"]),
    (["--readout", "encoder"], ["readout='encoder'"]),
    (["--readout", "decoder"], ["targets"]),
])
def test_cli_conflicts_one_line_nothing_written(lm_files, flags, words, cli_inproc):
    cli = cli_inproc
    d = lm_files
    out = d / "never.json"
    p = cli("run", "--load-state-dict", d / "lm.pt", "--inputs", d / "ids.npy", "--embedding", "encoder",
            *flags, "--json", out)
    assert p.returncode == 2 and not out.exists()
    line = p.stderr.strip()
    assert "\n" not in line and "Traceback" not in line and all(str(w) in line for w in words), line


def test_cli_bad_files_one_line(lm, lm_files, tmp_path, cli_inproc):
    cli = cli_inproc
    model, ids, _ = lm
    torch.save(model, tmp_path / "whole.pt")  # a pickled whole model: never unpickled
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    torch.save({"a.weight": torch.zeros(2, 2)}, tmp_path / "norec.pt")
    cases = [
        (tmp_path / "whole.pt", ["pickled", "WordLM", "torch.save(model.state_dict()"]),
        (tmp_path / "junk.pt", ["not a torch state_dict"]),
        (tmp_path / "norec.pt", ["no recurrent module", "weight_ih_l0"]),
    ]
    for path, words in cases:
        p = cli("run", "--load-state-dict", path, "--json", tmp_path / "o.json")
        line = p.stderr.strip()
        assert p.returncode == 2 and "\n" not in line and all(w in line for w in words), line
    p = cli("run", "--load-state-dict", lm_files / "lm.pt", "--inputs", lm_files / "ids.npy")
    assert p.returncode == 2 and "token ids" in p.stderr and "--embedding" in p.stderr


def test_cli_rnn_activation_note_and_batch_first(tmp_path, cli_inproc):
    cli = cli_inproc
    torch.manual_seed(0)
    rnn = nn.RNN(3, 5, batch_first=True)
    torch.save({"core." + k: v for k, v in rnn.state_dict().items()}, tmp_path / "m.pt")
    x = torch.randn(2, 7, 3)  # (B, T, I)
    np.save(tmp_path / "x.npy", x.numpy())
    out = tmp_path / "o.json"
    p = cli("run", "--load-state-dict", tmp_path / "m.pt", "--inputs", tmp_path / "x.npy", "--batch-first",
            "--dtype", "float64", "--json", out)
    assert p.returncode == 0, p.stderr
    d = json.loads(out.read_text())
    assert (d["config"]["seq_len"], d["config"]["batch_size"]) == (7, 2)
    assert any("nonlinearity" in n and "tanh" in n for n in d["notes"])
    want = analyze(rnn, x, dtype="float64")
    np.testing.assert_allclose(d["grad_norm"], want.to_dict()["grad_norm"], rtol=1e-12)


def test_pickled_detection_never_unpickles(monkeypatch):
    """The class name comes from the pickle's opcodes: a class whose import would fail is still named."""
    from analysis.own_files import read_state_dict
    buf = io.BytesIO()
    torch.save(WordLM(), buf)
    import zipfile
    src, out = zipfile.ZipFile(io.BytesIO(buf.getvalue())), io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:  # same archive, class renamed to an unimportable one
        for n in src.namelist():
            dst.writestr(n, src.read(n).replace(b"WordLM", b"NoSuch"))
    data = out.getvalue()
    with pytest.raises(ConfigError, match="NoSuch.*nothing was unpickled"):
        read_state_dict(data, "upload m.pt")


# ---- the dashboard: uploads through AppTest -------------------------------------------------------------
def test_dashboard_upload_shows_one_model(lm, lm_files):
    from streamlit.testing.v1 import AppTest
    model, ids, tg = lm
    d = lm_files
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=120)
    at.run()
    assert not at.exception
    assert not [t for t in at.text_input if t.key in ("inputs_path", "state_dict_path")]  # no server paths
    at.file_uploader(key="own_sd").upload("lm.pt", (d / "lm.pt").read_bytes(), "application/octet-stream")
    at.file_uploader(key="own_inputs").upload("ids.npy", (d / "ids.npy").read_bytes(), "application/octet-stream")
    at.file_uploader(key="own_targets").upload("tg.npy", (d / "tg.npy").read_bytes(), "application/octet-stream")
    at.text_input(key="own_embedding").set_value("encoder")
    at.text_input(key="own_readout").set_value("decoder").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    info = " ".join(i.value for i in at.info)
    assert "What the file decided" in info and "'rnn'" in info and "cross-entropy" in info
    page = " ".join(m.value for m in at.markdown)
    assert "Your model" in page and "LSTM" in page and "2 layers" in page
    horizon = next(m.value for m in at.markdown if m.value.startswith("Memory horizon"))
    assert horizon.count("**") == 2  # one model, not three cells
    # the numbers on the page are analyze()'s
    want = analyze(model, ids, embedding="encoder", readout="decoder", targets=tg)
    assert f"k = {want.memory_horizon}" in horizon or (want.memory_horizon is None and "none within" in horizon)
    # a bad name: one line, the preset is shown instead
    at.text_input(key="own_readout").set_value("nope").run()
    assert not at.exception
    errs = [e.value for e in at.error]
    assert any("readout='nope'" in e and "\n" not in e for e in errs), errs


def test_dashboard_deck_of_an_uploaded_model_names_its_files(lm_files, monkeypatch):
    """Issue 18: the deck built on the page from an uploaded model says in every slide's notes what ran, as
    export --pptx does: the files with their sha256 (computed here from the bytes uploaded), the readout and
    embedding, and the model's own settings (not the sidebar's) as the config JSON."""
    import hashlib

    from pptx import Presentation
    from streamlit.testing.v1 import AppTest

    from analysis import deck, export
    ok, hint = export.export_available()
    if not ok:
        pytest.skip(f"no Chromium here: {hint}")
    monkeypatch.setattr(deck, "render", lambda jobs, scale, on_done: [white_png(16, 9) for _ in jobs])
    built, real = [], deck.deck_bytes
    monkeypatch.setattr(deck, "deck_bytes", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    d = lm_files
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=120)
    at.run()
    files = {"own_sd": "lm.pt", "own_inputs": "ids.npy", "own_targets": "tg.npy"}
    for key, name in files.items():
        at.file_uploader(key=key).upload(name, (d / name).read_bytes(), "application/octet-stream")
    at.text_input(key="own_embedding").set_value("encoder")
    at.text_input(key="own_readout").set_value("decoder").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    next(b for b in at.button if b.proto.label == "Slide deck of all views (.pptx)").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(built) == 1
    notes = [s.notes_slide.notes_text_frame.text for s in Presentation(io.BytesIO(built[0])).slides]
    for name in files.values():
        data = (d / name).read_bytes()
        line = f"{name} sha256 {hashlib.sha256(data).hexdigest()} ({len(data):,} bytes)"
        assert all(line in n for n in notes), notes[0][:800]
    assert all("What ran (" in n and "readout: decoder, embedding: encoder" in n for n in notes)
    cfg = json.loads(notes[0][notes[0].index("{"):])
    assert cfg["cell"] == "lstm" and cfg["num_layers"] == 2  # the uploaded model's, not the sidebar's preset

