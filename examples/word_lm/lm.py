r"""A small word-level LSTM language model on the shipped sonnets, trained in a plain torch loop, watched.

The layout of PyTorch's word-language-model example (written here from scratch): Embedding ``encoder`` ->
dropout -> 2-layer ``nn.LSTM`` ``rnn`` (dropout between layers) -> dropout -> Linear ``decoder``; truncated BPTT
over bptt = 35 words, batch 20, the hidden state carried (detached) from one window to the next, SGD with a
large learning rate and (optionally) gradient-norm clipping.

    train(log_dir, clip=0.25, steps=300)   trains from a fixed seed, watched by analysis.watch
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CORPUS = ROOT / "analysis" / "data" / "sonnets.txt"  # 22 sonnets, public domain (see analysis/data/README.md)


def corpus() -> tuple[torch.Tensor, list[str]]:
    """The sonnets as word ids (N,) and the vocabulary: lower-case words and punctuation, <eos> per line."""
    lines = CORPUS.read_text(encoding="utf-8").split("\n")[1:]  # the first line is a header
    words = []
    for line in lines:
        line = line.strip()
        if not line or re.fullmatch(r"[IVXLC]+", line):  # blank lines and the sonnets' roman numerals
            continue
        words += re.findall(r"[a-z']+|[.,;:!?]", line.lower()) + ["<eos>"]
    vocab = sorted(set(words))
    index = {w: i for i, w in enumerate(vocab)}
    return torch.tensor([index[w] for w in words]), vocab


def batchify(ids: torch.Tensor, batch: int) -> torch.Tensor:
    """(N,) -> (N // batch, batch): each column a contiguous stretch of the text."""
    n = ids.shape[0] // batch
    return ids[: n * batch].view(batch, n).t().contiguous()


class WordLM(nn.Module):
    def __init__(self, vocab: int, emb: int = 200, hidden: int = 200, layers: int = 2, dropout: float = 0.2):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(vocab, emb)
        self.rnn = nn.LSTM(emb, hidden, layers, dropout=dropout)
        self.decoder = nn.Linear(hidden, vocab)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, ids: torch.Tensor, hx=None):
        out, hx = self.rnn(self.drop(self.encoder(ids)), hx)
        return self.decoder(self.drop(out)), hx


def windows(data: torch.Tensor, bptt: int):
    """(inputs, targets, first) windows of bptt words, in order, forever (epoch after epoch; first: a new epoch).
    Full windows only (the text's short tail is left out), so every record of the timeline has the same T."""
    while True:
        for i in range(0, data.shape[0] - bptt, bptt):
            yield data[i:i + bptt], data[i + 1:i + 1 + bptt], i == 0


def train(log_dir: str | None, *, clip: float = 0.25, steps: int = 300, lr: float = 20.0, every: int = 20,
          hidden: int = 200, layers: int = 2, bptt: int = 35, batch: int = 20, seed: int = 0, overwrite=True,
          log=print):
    """Train from a fixed seed; watched into log_dir (None: not watched). clip <= 0: no clipping."""
    from analysis import watch

    torch.manual_seed(seed)
    ids, vocab = corpus()
    data = batchify(ids, batch)
    model = WordLM(len(vocab), hidden, hidden, layers)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    w = watch(model, log_dir, every=every, overwrite=overwrite) if log_dir else None
    hx = None
    for step, (x, y, first) in zip(range(steps), windows(data, bptt)):
        model.train()
        hx = None if first else tuple(h.detach() for h in hx)  # truncated BPTT: carry the state, not its graph
        out, hx = model(x, hx)
        loss = F.cross_entropy(out.reshape(-1, len(vocab)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        if w:
            w.record(step, loss=loss)
        gn = nn.utils.clip_grad_norm_(model.parameters(), clip if clip > 0 else float("inf"))
        if w:
            w.note(step, grad_norm=gn, clipped=bool(clip > 0 and gn > clip), lr=lr)
        opt.step()
        if log and step % 50 == 0:
            log(f"step {step:4d}  loss {loss.item():7.3f}  grad norm {gn.item():10.3g}")
    if w:
        w.close()
    return model
