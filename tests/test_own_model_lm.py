"""A real model end to end (issue 18): a small copy of PyTorch's word-language-model layout (encoder, rnn, decoder,
drop; benchmarks/word_lm.py), trained a few steps, analysed through the API, the command line and the upload path,
against an independent float64 autograd reference for both layers and both cell-state gradients.

The reference steps the LSTM by hand from the model's own weights (float64): h_t = o_t tanh(c_t) from the same c_t
tensor, whose ``retain_grad()`` gives the total dL/dc_t; the carry part is the gradient of a view of c_t that only
the next step reads. The loss is the model's: mean cross-entropy of decoder(h^top_t) against the next token.
"""
import hashlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from analysis import analyze
from analysis.config import ExperimentConfig
from analysis.own_model import analyse_files
from benchmarks.word_lm import WordLM, batches, token_stream, train
from conftest import save_lm_files

V, E, H, L, T, B = 40, 12, 10, 2, 12, 3


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    model = WordLM("LSTM", V, E, H, L, dropout=0.2)
    stream = token_stream(3000, V, seed=1)
    losses = train(model, stream, T, 8, steps=6)
    assert losses[-1] < losses[0]  # it learned something
    model.eval()
    ids, tg = next(batches(token_stream(400, V, seed=2), T, B))
    return model, ids, tg


def reference(model, ids, tg):
    """Per layer: ||dL/dh_t|| (T, B); for each layer ||dL/dc_t|| total and carry (T, B); float64 autograd."""
    x = model.encoder.weight.detach().double()[ids]  # (T, B, E)
    x.requires_grad_(True)
    hs, cs, cvs = [], [], []
    inp = x
    for l in range(L):
        W_ih, W_hh = (getattr(model.rnn, f"{n}_l{l}").detach().double() for n in ("weight_ih", "weight_hh"))
        b = sum(getattr(model.rnn, f"{n}_l{l}").detach().double() for n in ("bias_ih", "bias_hh"))
        h = torch.zeros(B, H, dtype=torch.float64)
        c_in = torch.zeros(B, H, dtype=torch.float64)
        lh, lc, lcv = [], [], []
        for t in range(T):
            i, f, g, o = (inp[t] @ W_ih.T + h @ W_hh.T + b).chunk(4, -1)
            c = torch.sigmoid(f) * c_in + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            c.retain_grad()
            c_in = c.view_as(c)  # the next step reads this view: its gradient is the carry part
            c_in.retain_grad()
            lh.append(h), lc.append(c), lcv.append(c_in)
        hs.append(lh), cs.append(lc), cvs.append(lcv)
        inp = torch.stack(lh)
    for h in (h for lh in hs for h in lh):
        h.retain_grad()
    W, bd = model.decoder.weight.detach().double(), model.decoder.bias.detach().double()
    loss = F.cross_entropy((inp @ W.T + bd).reshape(T * B, V), tg.reshape(-1))
    loss.backward()

    def norms(ts):
        return torch.stack([t.grad.norm(dim=-1) if t.grad is not None else torch.zeros(B, dtype=torch.float64)
                            for t in ts])  # (T, B)

    return ([norms(lh) for lh in hs], [norms(lc) for lc in cs], [norms(lv) for lv in cvs])


def gmean(x):
    return torch.exp(torch.log(x).mean(-1)).numpy()


def check(d: dict, ref, layer: int):
    """A result's JSON against the reference, analysed layer ``layer``."""
    hs, cs, cvs = ref
    np.testing.assert_allclose(d["grad_norm"], gmean(hs[layer]), rtol=1e-9)
    for l in range(L):
        np.testing.assert_allclose(d["grad_norm_per_layer"][l], gmean(hs[l]), rtol=1e-9)
        np.testing.assert_allclose(d["log10_grad_norm_per_layer"][l], np.log10(gmean(hs[l])), atol=1e-9)
    np.testing.assert_allclose(d["cell_grad_norm"], gmean(cs[layer]), rtol=1e-9)
    carry = gmean(cvs[layer])
    assert carry[-1] == 0.0 and d["cell_carry_grad_norm"][-1] == 0.0  # no later step reads c_{T-1}
    np.testing.assert_allclose(d["cell_carry_grad_norm"][:-1], carry[:-1], rtol=1e-9)
    assert np.all(np.asarray(d["cell_grad_norm"]) > np.asarray(d["cell_carry_grad_norm"]))  # the h path adds


@pytest.mark.parametrize("layer", [0, 1])
def test_api_both_layers_both_cell_gradients(lm, layer):
    model, ids, tg = lm
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = analyze(model, ids, embedding="encoder", readout="decoder", targets=tg, layer=layer, dtype="float64",
                views="gradients")
    check(r.to_dict(), reference(model, ids, tg), layer)
    assert r.jac is None and r.to_dict()["views"] == ["gradients"]
    p = r.provenance
    assert (p["T"], p["B"], p["layer"], p["readout"], p["embedding"], p["loss_steps"]) == (T, B, layer, "decoder",
                                                                                           "encoder", "all")
    assert p["dropout"] == ["drop (Dropout, p=0.2)", "rnn.dropout=0.2 between layers"]
    assert any("dropout found and not applied" in n for n in r.notes)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and not model.training


@pytest.fixture(scope="module")
def lm_files(lm, tmp_path_factory):
    return save_lm_files(lm, tmp_path_factory.mktemp("wordlm"))


def test_cli_and_upload_against_the_reference(lm, lm_files, cli_inproc):
    model, ids, tg = lm
    d = lm_files
    out = d / "o.json"
    p = cli_inproc("run", "--load-state-dict", d / "lm.pt", "--inputs", d / "ids.npy", "--embedding", "encoder",
                   "--readout", "decoder", "--targets", d / "tg.npy", "--layer", "0", "--dtype", "float64", "--views",
                   "gradients", "--json", out)  # python -m analysis, its main() in this process
    assert p.returncode == 0, p.stderr
    got = json.loads(out.read_text())
    ref = reference(model, ids, tg)
    check(got, ref, 0)
    files = got["provenance"]["files"]
    for role, name in (("state_dict", "lm.pt"), ("inputs", "ids.npy"), ("targets", "tg.npy")):
        assert files[role]["name"].endswith(name)
        assert files[role]["sha256"] == hashlib.sha256((d / name).read_bytes()).hexdigest()
    assert got["config"]["seq_len"] == T and got["config"]["batch_size"] == B and got["config"]["loss_steps"] == "all"
    # the page's path: the same bytes as uploads (dashboard/own_model.analyse_upload calls analyse_files)
    cfg = ExperimentConfig(state_dict_path="upload:lm.pt", readout="decoder", embedding="encoder",
                           targets_path="upload:tg.npy", layer=1, dtype="float64")
    r = analyse_files(cfg, (d / "lm.pt").read_bytes(), inputs=((d / "ids.npy").read_bytes(), ".npy"),
                      targets=((d / "tg.npy").read_bytes(), ".npy"),
                      names={"state_dict": "upload lm.pt", "inputs": "upload ids.npy", "targets": "upload tg.npy"},
                      views="gradients")
    check(r.to_dict(), ref, 1)
    assert r.provenance["source"] == "upload" and r.provenance["files"]["inputs"]["name"] == "ids.npy"
