r"""A word-level language model with the module layout of PyTorch's ``word_language_model`` example (our own
code): ``encoder`` (nn.Embedding) -> ``drop`` -> ``rnn`` (nn.LSTM / nn.GRU, dropout between layers) -> ``drop``
-> ``decoder`` (nn.Linear to the vocabulary). Trained with cross-entropy on the next token, T x B batches.

Used by ``benchmarks/bench_own_model_lm.py`` and ``tests/test_own_model_lm.py`` (the model researchers start from).

    forward(ids (T, B), hidden) -> (logits (T*B, V), hidden)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WordLM(nn.Module):
    def __init__(self, rnn_type: str, vocab: int, emb: int, hidden: int, layers: int, dropout: float = 0.2):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(vocab, emb)
        self.rnn = {"LSTM": nn.LSTM, "GRU": nn.GRU}[rnn_type](emb, hidden, layers, dropout=dropout)
        self.decoder = nn.Linear(hidden, vocab)
        self.rnn_type, self.hidden, self.layers = rnn_type, hidden, layers
        with torch.no_grad():
            self.encoder.weight.uniform_(-0.1, 0.1)
            self.decoder.weight.uniform_(-0.1, 0.1)
            self.decoder.bias.zero_()

    def forward(self, ids: torch.Tensor, hidden=None):
        out, hidden = self.rnn(self.drop(self.encoder(ids)), hidden)  # (T, B, H)
        logits = self.decoder(self.drop(out))  # (T, B, V)
        return logits.reshape(-1, logits.shape[-1]), hidden


def token_stream(n: int, vocab: int, seed: int = 0) -> torch.Tensor:
    """A learnable token stream: a fixed random first-order Markov chain with a few likely successors per word."""
    g = torch.Generator().manual_seed(seed)
    succ = torch.randint(0, vocab, (vocab, 3), generator=g)
    ids = torch.empty(n, dtype=torch.long)
    ids[0] = 0
    picks = torch.randint(0, 3, (n,), generator=g)
    noise = torch.rand(n, generator=g) < 0.1
    rand = torch.randint(0, vocab, (n,), generator=g)
    for i in range(1, n):
        ids[i] = rand[i] if noise[i] else succ[ids[i - 1], picks[i]]
    return ids


def batches(stream: torch.Tensor, T: int, B: int):
    """(inputs (T, B), targets (T, B)) windows of the stream laid out in B columns, as the example's batchify."""
    n = (len(stream) - 1) // B
    cols = stream[: n * B + 1]
    x = cols[:-1][: n * B].view(B, n).t()  # (n, B)
    y = cols[1:][: n * B].view(B, n).t()
    for s in range(0, n - T + 1, T):
        yield x[s:s + T], y[s:s + T]


def train(model: WordLM, stream: torch.Tensor, T: int, B: int, steps: int, lr: float = 1e-2) -> list[float]:
    """A few Adam steps of truncated BPTT (hidden state carried, detached), as the example trains; losses."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    hidden, losses = None, []
    for i, (x, y) in enumerate(batches(stream, T, B)):
        if i >= steps:
            break
        if hidden is not None:
            hidden = tuple(h.detach() for h in hidden) if isinstance(hidden, tuple) else hidden.detach()
        logits, hidden = model(x, hidden)
        loss = F.cross_entropy(logits, y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25 * 10)
        opt.step()
        losses.append(loss.item())
    return losses
