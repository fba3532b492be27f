"""The Lightning callback for real (lightning 2.6.6): Trainer.fit on a tiny GRU language model writes the same run
as the plain loop, its norms equal analyze() on the weights and batch of each step, and the loss comes through."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analysis import analyze, load_run
from analysis.watch_lightning import watch_callback

V, T, B = 9, 8, 3


@pytest.fixture(scope="module")
def pl():
    """lightning.pytorch, imported by the test that uses it (~1.2 s: every worker collects this file)."""
    return pytest.importorskip("lightning.pytorch")


def tiny_lm(pl):
    """A tiny GRU language model as a LightningModule that keeps a copy of itself and its batch at each step."""
    class TinyLM(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Embedding(V, 4, dtype=torch.float64)
            self.rnn = nn.GRU(4, 5, num_layers=2, dtype=torch.float64)
            self.decoder = nn.Linear(5, V, dtype=torch.float64)
            self.seen = []

        def forward(self, ids):
            return self.decoder(self.rnn(self.encoder(ids))[0])

        def training_step(self, batch, batch_idx):
            x, y = batch[0].t(), batch[1].t()  # the loader gives (B, T): time-major for the module
            self.seen.append((copy.deepcopy(self), x, y))
            return F.cross_entropy(self(x).reshape(-1, V), y.reshape(-1))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.5)
    return TinyLM()


def test_lightning_callback(tmp_path, pl):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    data = torch.utils.data.TensorDataset(torch.randint(0, V, (3 * B, T), generator=g),
                                          torch.randint(0, V, (3 * B, T), generator=g))
    loader = torch.utils.data.DataLoader(data, batch_size=B, shuffle=False)
    model = tiny_lm(pl)
    trainer = pl.Trainer(max_steps=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[watch_callback(str(tmp_path / "run"), every=2)])
    trainer.fit(model, loader)
    run = load_run(str(tmp_path / "run"))
    assert run.steps.tolist() == [0, 1, 2] and run.probe_steps.tolist() == [0, 2]
    for i, (m, x, y) in enumerate(model.seen):
        ref = analyze(m, x, readout="decoder", targets=y, embedding="encoder", dtype="float64",
                      jacobian_lags="log", num_log_lags=4, n_singular=1, lyapunov_k=0)
        for layer in (0, 1):
            np.testing.assert_allclose(run.grad_norm[layer][i], ref.grad.per_layer[layer], rtol=1e-10)
        assert run.loss[i] == pytest.approx(ref.grad.loss, rel=1e-12)


def test_without_lightning_one_line(monkeypatch):
    """The module imports without Lightning; asking for the callback then says how to get it, in one line."""
    import sys

    from rnn_models.config import ConfigError
    for name in ("lightning", "lightning.pytorch", "lightning.pytorch.callbacks", "pytorch_lightning",
                 "pytorch_lightning.callbacks"):
        monkeypatch.setitem(sys.modules, name, None)  # import of a None entry raises ImportError
    with pytest.raises(ConfigError, match=r"pip install lightning==2\.6\.6"):
        watch_callback("unused")
