r"""A stepwise trainer whose settings may change between steps (the dashboard's live training).

One step: a fresh seeded batch -> forward (with views of every h_t) -> ONE ``torch.autograd.grad`` call for the
parameters and every h_t -> global gradient norm -> clipping -> optimizer update. Each step is recorded:

    loss, global gradient norm before and after clipping, whether it clipped, the per-timestep ||dL/dh_t||
    (geometric mean over the batch, for the training-step x timestep heatmap), the settings in force and
    which of them changed before this step, the spectral radius of W_hh (every ``radius_every`` steps, with a probe
    of sigma_max by lag, the memory horizon and the W_hh eigenvalues: ``analysis.training_run``, which also turns
    the records into a watched run for the timeline), and where a non-finite value appeared.

Clipping (over all parameters together):
    norm   Pascanu, Mikolov, Bengio 2013, Alg. 1: if ||g|| > threshold, g <- g * threshold / ||g||
           (as ``torch.nn.utils.clip_grad_norm_``: coefficient threshold / (||g|| + 1e-6), capped at 1)
    value  every component clamped to [-threshold, threshold]

A non-finite loss or gradient never crashes: the step is recorded with where it appeared (forward state, loss
or the timestep of dL/dh_t) and, by ``on_nonfinite``, the run stops (``stopped`` is set) or the update is
skipped. Truncated BPTT (``truncate`` = k) cuts the recurrent gradient every k steps (windows ending at the
last step), carrying the hidden state forward without gradient.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from rnn_models.config import ConfigError

from .config import ExperimentConfig
from .device import resolve_device
from .engine import DTYPES, TaskModel, resolve
from .gradients import _first_nonfinite_forward, geometric_mean
from .tasks import make_batch, perplexity
from .training_run import probe_trace

SETTINGS = ("optimizer", "lr", "clip", "clip_threshold", "truncate")


@dataclass
class StepRecord:
    step: int
    loss: float | None
    grad_norm_before: float | None
    grad_norm_after: float | None
    clipped: bool
    grad_norm_t: np.ndarray  # (T,)
    settings: dict
    changed: list[str] = field(default_factory=list)
    spectral_radius: float | None = None
    nonfinite: dict | None = None
    skipped: bool = False
    probe: dict | None = None  # every radius_every steps: sigma_max by lag, horizon, W_hh eigenvalues (training_run)

    @property
    def perplexity(self) -> float | None:
        return perplexity(self.loss) if self.loss is not None else None

    def to_dict(self) -> dict:
        f = lambda x: x if x is None or math.isfinite(x) else None  # noqa: E731
        return {"step": self.step, "loss": f(self.loss), "grad_norm_before": f(self.grad_norm_before),
                "grad_norm_after": f(self.grad_norm_after), "clipped": self.clipped,
                "grad_norm_t": [f(float(v)) for v in self.grad_norm_t], "settings": self.settings,
                "changed": self.changed, "spectral_radius": self.spectral_radius, "nonfinite": self.nonfinite,
                "skipped": self.skipped}


def clip_gradients(grads: list[torch.Tensor], mode: str, threshold: float) -> tuple[float, float, bool]:
    """Clip in place; returns (global norm before, global norm after, clipped?)."""
    before = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
    clipped = False
    if mode == "norm":
        coef = threshold / (before + 1e-6)
        if coef < 1:  # g <- g * threshold / ||g||
            for g in grads:
                g.mul_(coef)
            clipped = True
    elif mode == "value":
        clipped = any(bool((g.abs() > threshold).any()) for g in grads)
        for g in grads:
            g.clamp_(-threshold, threshold)  # g_i <- clip(g_i, -threshold, threshold)
    after = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
    return before, after, clipped


class Trainer:
    """Train the model of ``config`` step by step; change settings between steps with ``update``."""

    def __init__(self, config: ExperimentConfig, *, on_nonfinite: str = "stop"):
        if config.task == "random":
            raise ConfigError("task='random' is a probe with no target and cannot be trained: choose adding, copy, "
                              "temporal-order or charlm")
        if on_nonfinite not in ("stop", "skip"):
            raise ConfigError(f"on_nonfinite={on_nonfinite!r} is not allowed: choose stop or skip")
        from .limits import check_training
        from .own_files import with_file_arch
        check_training(with_file_arch(config), config.train_steps or 1)  # a state_dict file's own sizes
        self.config, batch, sd = resolve(config)
        self.device_note = resolve_device(config.device)[1]  # cpu; one-line error for an unusable cuda
        self.spec = batch.spec
        self.on_nonfinite = on_nonfinite
        self.radius_every = 5  # record the spectral radius of W_hh every this many steps
        self.dtype = DTYPES[self.config.dtype]
        self.model = TaskModel(self.config, self.spec, self.config.input_size).to(self.dtype)
        if sd is not None:
            self.model.net.load_torch_state_dict(sd)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.settings = {k: getattr(self.config, k) for k in SETTINGS}
        self.optimizer = self._make_optimizer()
        self.records: list[StepRecord] = []
        self.stopped: dict | None = None
        self._pending: list[str] = []

    def _make_optimizer(self):
        lr = self.settings["lr"]
        if self.settings["optimizer"] == "sgd":
            return torch.optim.SGD(self.params, lr=lr)
        return torch.optim.Adam(self.params, lr=lr)

    @property
    def chance_loss(self) -> float:
        return self.spec.chance_loss

    def update(self, **settings) -> None:
        """Change optimizer, lr, clip, clip_threshold or truncate; takes effect at the next step."""
        for k, v in settings.items():
            if k not in SETTINGS:
                raise ConfigError(f"{k!r} cannot change during training: allowed are {', '.join(SETTINGS)}")
        # validate through the config's own checks
        trial = self.config.replace(**{**self.settings, **settings})
        for k in settings:
            if getattr(trial, k) != self.settings[k]:
                self._pending.append(k)
                self.settings[k] = getattr(trial, k)
        if "optimizer" in self._pending and "optimizer" in settings:
            self.optimizer = self._make_optimizer()  # a new optimizer: its state starts afresh
        elif "lr" in settings:
            for g in self.optimizer.param_groups:
                g["lr"] = self.settings["lr"]

    def step(self) -> StepRecord:
        """One training step (see the module docstring). After a stop, returns the last record unchanged."""
        return self._step()

    def _step(self) -> StepRecord:
        if self.stopped is not None:
            return self.records[-1]
        n = len(self.records)
        c = self.config
        batch = make_batch(c.task, c.seq_len, c.batch_size, seed=c.seed + 1000 + n, input_size=c.input_size,
                           dtype=self.dtype, text=c.text)
        trace, y = self.model(batch.inputs, views=True, detach_every=self.settings["truncate"])
        loss = batch.loss(y)
        a = c.analysed_layer
        hs = [s[0] for s in trace.runs[a][0].states[1:]]
        grads = torch.autograd.grad(loss, self.params + hs, allow_unused=True)
        g_params = [torch.zeros_like(p) if g is None else g for g, p in zip(grads[: len(self.params)], self.params)]
        g_h = torch.stack([torch.zeros_like(h) if g is None else g for g, h in zip(grads[len(self.params):], hs)])
        gn_t = geometric_mean(torch.linalg.vector_norm(g_h.double(), dim=-1), -1).numpy()  # (T,)
        before, after, clipped = clip_gradients(g_params, self.settings["clip"], self.settings["clip_threshold"])
        loss_v = float(loss.detach())
        nonfinite = None
        if not math.isfinite(loss_v):
            nonfinite = _first_nonfinite_forward(trace) or {"quantity": "loss"}
        elif not math.isfinite(before):
            bad = ~np.isfinite(gn_t)
            nonfinite = ({"quantity": "grad_norm", "timestep": int(np.nonzero(bad)[0].max())} if bad.any()
                         else {"quantity": "parameter_gradient"})
        probe = None
        if n % self.radius_every == 0:  # at the weights that made this step, before its update (training_run)
            probe = probe_trace(trace.runs[a][0], c.horizon_threshold)
        rec = StepRecord(step=n, loss=loss_v, grad_norm_before=before, grad_norm_after=after, clipped=clipped,
                         grad_norm_t=gn_t, settings=dict(self.settings), changed=self._pending, nonfinite=nonfinite,
                         probe=probe)
        self._pending = []
        if nonfinite is not None:
            nonfinite["step"] = n
            rec.skipped = True
            if self.on_nonfinite == "stop":
                self.stopped = nonfinite
        else:
            for p, g in zip(self.params, g_params):
                p.grad = g
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        if n % self.radius_every == 0 or nonfinite is not None:
            rec.spectral_radius = self._spectral_radius()  # eigvals cost ~as much as a step: every few steps
        self.records.append(rec)
        return rec

    def run(self, steps: int) -> list[StepRecord]:
        return [self.step() for _ in range(steps) if self.stopped is None]

    def _spectral_radius(self) -> float | None:
        cell = self.model.net.layers[self.config.analysed_layer][0]
        blocks = [b.detach().double() for b in cell.recurrent_blocks().values()]  # W_hh's gate blocks
        if not all(bool(torch.isfinite(b).all()) for b in blocks):
            return None
        # a cell without W_hh: the eigenvalues of its fixed recurrence (the LRU's lambda); none (None) for a
        # recurrence whose factor depends on x_t (minGRU, minLSTM)
        eig = [torch.linalg.eigvals(b) for b in blocks] or list(cell.recurrent_eigenvalues().values())
        radius = max((float(e.abs().max()) for e in eig), default=None)
        return radius if radius is not None and math.isfinite(radius) else None

    @torch.no_grad()
    def sample(self, n: int = 80, *, temperature: float = 1.0, seed: int = 0, prime: str | None = None) -> str:
        """Sample n characters from the char-level LM: x_{t+1} ~ softmax(y_t / temperature), seeded.

        ``prime`` (default: the corpus's first character) is fed first; sampling starts from its last state.
        """
        from .tasks import char_corpus
        if self.config.task != "charlm":
            raise ConfigError(f"sampling needs task='charlm'; this run trains task={self.config.task!r}")
        if self.config.bidirectional:
            raise ConfigError("bidirectional=True cannot sample: a bidirectional model reads the future")
        if not (isinstance(n, int) and 1 <= n <= 10_000):
            raise ConfigError(f"n={n!r} is out of range: must be an integer in [1, 10000]")
        if not (isinstance(temperature, (int, float)) and 0 < temperature <= 100):
            raise ConfigError(f"temperature={temperature!r} is out of range: must be in (0, 100]")
        corpus, vocab = char_corpus(self.config.text)
        prime = prime or corpus[0]
        bad = [ch for ch in prime if ch not in vocab.stoi]
        if bad:
            raise ConfigError(f"prime contains {bad[0]!r}, which is not in the vocabulary of the {self.config.text} text")
        gen = torch.Generator().manual_seed(seed)
        eye = torch.eye(vocab.size, dtype=self.dtype)
        states = [cell.init_state(1, self.dtype) for cell in (d[0] for d in self.model.net.layers)]
        out, ids = [], [int(i) for i in vocab.encode(prime)]
        for step in range(len(ids) + n - 1):
            x = eye[ids[step] if step < len(ids) else out[-1]].unsqueeze(0)  # (1, V) one-hot
            for l, dirs in enumerate(self.model.net.layers):
                states[l] = dirs[0].step(dirs[0].project(x), states[l])
                x = states[l][0]
            if step >= len(ids) - 1:
                logits = self.model.readout(x)[0].double() / temperature  # (V,)
                out.append(int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)))
        return vocab.decode(out)

    def history(self) -> dict:
        """Column arrays of the records (for figures and exports)."""
        r = self.records
        nan = float("nan")
        return {
            "step": np.array([x.step for x in r]),
            "loss": np.array([x.loss if x.loss is not None else nan for x in r], dtype=float),
            "grad_norm_before": np.array([x.grad_norm_before for x in r], dtype=float),
            "grad_norm_after": np.array([x.grad_norm_after for x in r], dtype=float),
            "clipped": np.array([x.clipped for x in r], dtype=bool),
            "changed": [x.changed for x in r],
            "spectral_radius": np.array([x.spectral_radius if x.spectral_radius is not None else nan for x in r]),
            "grad_norm_t": np.stack([x.grad_norm_t for x in r]) if r else np.zeros((0, self.config.seq_len)),
            "settings": [x.settings for x in r],
            "nonfinite": [x.nonfinite for x in r],
            "chance_loss": self.chance_loss,
        }


__all__ = ["Trainer", "StepRecord", "clip_gradients"]
