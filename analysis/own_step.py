r"""Analyse your own step: ``analyze(step, inputs, h0=..., ...)`` for any recurrence ``(x_t, state) -> state``.

    analyse_step(step, inputs, *, h0, params=None, loss=None, readout=None, targets=None, embedding=None,
                 progress=None, views=None, **settings) -> ExperimentResult

The step becomes an ``analysis.own_cell.OwnCell`` (a deep copy in the analysis dtype: the user's object is never
changed) in a one-layer network that starts from h0, and goes through the same core as a trained nn.RNN/LSTM/GRU
(``own_model.analyse_own``): the loss (probe, readout + targets, or a callable on the outputs h_t), ||dL/dh_t|| by
one backward pass (and the exact log-space chain of vector-Jacobian products where float backprop underflows),
the Jacobian products d state_{T-1} / d state_{T-1-k} with their spectra and Lyapunov exponents from the per-step
Jacobians of torch.func, and the same result, views and exports. There is no W_hh: the spectrum view says so.

The configuration records ``cell="own"`` (``OwnStepConfig``): the settings of the built-in cells (activation, init,
layer norm, ...) and the architecture fields are the step's own and refused here; the analysis settings
(dtype, loss_steps, jacobian_lags, jacobian_batch, seed, truncate, ...) apply as to any model.

Cost (an estimate, checked against the host's limits before the analysis): with P the step's parameters,
f = 2 P + 10 S flops per sequence and step, S = k H::

    forward + backward   3 f T B            the chain   3 f T B
    products             (S + n) f T b      P <- P J_t and the Lyapunov Q (n columns) by vector-Jacobian products:
                                            a backward pass to the state per row, about one forward's flops
                         + 4 S n^2 T b      the Lyapunov QR   (+ 2 S^3 T b where vmap cannot run the step and
                                            the per-step Jacobians are formed)
    spectra              8 K b (H^3 [+ S^3 with k >= 2])       as limits.cell_cost counts the built-in cells
    memory               T B (I + 2 S) e (states) + max(T B g (the autograd graph, g the bytes one step saves
                         per sequence, measured), 4 b S^2 e (P, Q) + the vmapped cotangents' budget)
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import Tensor, nn

from rnn_models.config import ConfigError, ModelConfig, shown
from rnn_models.network import RecurrentNetwork

from .config import ExperimentConfig
from .own_cell import JAC_BYTES, OwnCell, prepare_state, validate

# what the step decides (architecture) or what applies to the built-in cells only
STEP_DECIDES = ("cell", "compare", "hidden_size", "input_size", "num_layers", "bidirectional")
BUILT_IN_ONLY = ("activation", "init", "init_scale", "layer_norm", "peephole", "forget_bias", "layer")
FILE_FIELDS = ("task", "text", "inputs_path", "state_dict_path", "targets_path", "h0_path", "module", "readout",
               "embedding")


@dataclass(frozen=True)
class OwnStepConfig(ExperimentConfig):
    """An ExperimentConfig whose cell is the user's own step ("own": analysed as given, never built from a
    config, so it is not a registered kind and ``ExperimentConfig.from_dict`` refuses it). Its other fields are
    validated as ExperimentConfig validates them."""

    def __post_init__(self):
        if self.cell != OwnCell.name:
            raise ConfigError(f"cell={shown(self.cell)}: an OwnStepConfig is for cell={OwnCell.name!r}")
        object.__setattr__(self, "cell", "rnn")  # ExperimentConfig's checks of every other field
        try:
            super().__post_init__()
        finally:
            object.__setattr__(self, "cell", OwnCell.name)

    def model_config(self, input_size: int, cell: str | None = None) -> ModelConfig:
        """The built-in cells' settings do not apply (they are refused): a stand-in whose ``inapplicable`` is []."""
        return ModelConfig(cell="rnn", input_size=input_size, hidden_size=self.hidden_size, seed=self.seed)


class OwnNetwork(RecurrentNetwork):
    """One layer, one direction: the OwnCell, from the user's h0 unless ``initial`` is given."""

    def __init__(self, cell: OwnCell, state0: tuple):
        nn.Module.__init__(self)
        self.config = SimpleNamespace(input_size=cell.input_size)  # what RecurrentNetwork.forward reads
        self.layers = nn.ModuleList([nn.ModuleList([cell])])
        self.state0 = state0

    def forward(self, x: Tensor, initial=None, *, views: bool = False, detach_every: int = 0):
        return super().forward(x, initial if initial is not None else [[self.state0]], views=views,
                               detach_every=detach_every)

    def load_torch_state_dict(self, sd) -> None:
        raise ConfigError("your own step holds its own weights: there is no torch state_dict to load")

    def check(self, config: OwnStepConfig, only: str | None):
        """(config as it runs, detail note, Cost): own_model.check_own for this step (the module docstring's cost)."""
        return check_step(config, self.layers[0][0], only)


def step_cost(config: ExperimentConfig, cell: OwnCell, only: str | None = None):
    """The module docstring's estimate for ``config`` and the step ``cell``: a limits.Cost."""
    from .jacobians import MAX_CHUNK_BYTES
    from .limits import BASE_BYTES, SVD_FLOPS, STEP_FLOPS, Cost, _sizes
    T, B, H = config.seq_len, config.batch_size, config.hidden_size
    k = len(cell.state_names)
    S = k * H
    e = 8 if config.dtype == "float64" else 4
    b = B if config.jacobian_batch in (0, None) else min(config.jacobian_batch, B)
    I = cell.input_size
    _, K = _sizes(config)
    P = sum(p.numel() for p in cell.parameters())
    f = 2 * P + 10 * S
    nk = min(config.lyapunov_k, S)
    states = T * B * (I + 2 * S) * e
    graph = T * B * cell.sample_bytes * (2 if config.truncate else 1)
    dense = cell.jacobian_method == "backward"  # vmap cannot run the step: its vjp may not vmap either (formed)
    step_b = b * S * S * e
    jac = 4 * step_b + (3 * max(step_b, min(64 * step_b, MAX_CHUNK_BYTES)) if dense else 0) + JAC_BYTES
    fb = 3 * f * T * B * (2 if config.truncate else 1)
    chain = 3 * f * T * B
    prod = T * b * ((S + nk) * f + 4 * S * nk * nk + (2 * S ** 3 if dense else 0))
    svd = K * SVD_FLOPS * b * (H ** 3 + (S ** 3 if k >= 2 else 0))  # h -> h svdvals, the whole state's sigma_max
    if only == "gradients":
        jac, prod, svd = 0, 0, 0
    steps = T * (4 + (2 if config.truncate else 0)) + (0 if only == "gradients" else T + K)
    memory = BASE_BYTES + states + max(graph, jac)
    return Cost(memory, fb + chain + prod + svd + steps * STEP_FLOPS,
                {"states": states, "graph": graph, "jacobians": jac, "forward_backward": fb, "products": prod,
                 "svd": svd})


def check_step(config: OwnStepConfig, cell: OwnCell, only: str | None):
    """jacobian_detail resolved (auto: light above AUTO_LIGHT_SECONDS by the estimate; the spectra stay exact:
    the thin route needs a closed-form step chain), then the host's limits on the estimate (LimitExceeded)."""
    from .compute_views import AUTO_LIGHT_SECONDS, light
    from .limits import GFLOP_PER_S, _raise_if_over, current
    note = None
    if only != "gradients" and config.jacobian_detail in ("auto", "light"):
        exact = step_cost(config.replace(jacobian_detail="exact"), cell, only)
        seconds = exact.flops / (GFLOP_PER_S * 1e9)
        if config.jacobian_detail == "light" or seconds > AUTO_LIGHT_SECONDS:
            lit = light(config).replace(spectra="exact")
            if config.jacobian_detail == "auto":
                note = (f"light Jacobian settings (about {lit.num_log_lags} log-spaced lags, {lit.jacobian_batch} "
                        f"sequences): the exact analysis of your step is estimated at {exact.gflop:,.0f} GFLOP "
                        f"(~{seconds:,.0f} s at {GFLOP_PER_S:g} GFLOP/s), above {AUTO_LIGHT_SECONDS:g} s; exact: "
                        "jacobian_detail='exact'")
            config = lit
        else:
            config = config.replace(jacobian_detail="exact")
    cost = step_cost(config, cell, only)
    _raise_if_over(cost, current(), config, None, "this analysis of your step",
                   lambda c, v: step_cost(c, cell, only))
    return config, note, cost


def _tensor_of(obj, kind, what: str, owner) -> nn.Module:
    """The nn.Linear / nn.Embedding given, or named inside the step (an nn.Module)."""
    if isinstance(obj, str):
        if not isinstance(owner, nn.Module):
            raise ConfigError(f"{what}={obj!r} names a submodule, but the step is not an nn.Module: give the "
                              f"nn.{kind.__name__} itself")
        from .own_model import _named
        return _named(owner, obj, kind, what)
    if not isinstance(obj, kind):
        raise ConfigError(f"{what} must be an nn.{kind.__name__}; got {type(obj).__name__}"
                          + ("; for any other head pass loss=callable(outputs)" if what == "readout" else ""))
    return obj


def analyse_step(step, inputs, *, h0=None, params: dict | None = None, loss=None, readout=None, targets=None,
                 embedding=None, progress=None, views=None, **settings):
    """The module docstring; ``settings`` are ExperimentConfig's analysis fields (dtype, loss_steps, ...)."""
    from .experiment import DTYPES
    from .own_files import FileModel
    from .own_inputs import prepare_inputs
    from .own_model import _name_in, analyse_own
    if not callable(step):
        raise ConfigError(f"the step must be an nn.Module or a callable (x_t, state) -> state; got {type(step).__name__}")
    if params is not None and (not isinstance(params, dict) or not all(isinstance(n, str) for n in params)):
        raise ConfigError(f"params must be a dict of name -> tensor, passed to the step as keywords; got "
                          f"{type(params).__name__}")
    if params is not None and isinstance(step, nn.Module):
        raise ConfigError("params= is for a plain function: an nn.Module holds its own parameters")
    unknown = sorted(set(settings) - set(ExperimentConfig.__dataclass_fields__))
    allowed = sorted(set(ExperimentConfig.__dataclass_fields__) - set(STEP_DECIDES + BUILT_IN_ONLY + FILE_FIELDS))
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r}: allowed settings are {', '.join(allowed)}")
    bad = sorted(set(settings) & set(STEP_DECIDES + BUILT_IN_ONLY + FILE_FIELDS))
    if bad:
        why = ("your step decides it" if bad[0] in STEP_DECIDES else "it is a setting of the built-in cells"
               if bad[0] in BUILT_IN_ONLY else "it names files or tasks; your step reads the inputs given")
        raise ConfigError(f"{bad[0]}={shown(settings[bad[0]])} does not apply to your own step: {why}; allowed "
                          f"settings are {', '.join(allowed)}")
    config = OwnStepConfig.from_dict({**settings, "cell": OwnCell.name})
    spectra_note = None
    if config.spectra == "fast":  # the thin route needs a kind's own forward-mode step chain
        config = config.replace(spectra="exact")
        spectra_note = "spectra='fast' (the thin route) is not offered for your own step: the spectra are exact"
    dtype = DTYPES[config.dtype]
    E = None
    if embedding is not None:
        E = _tensor_of(embedding, nn.Embedding, "embedding", step).weight.detach().to("cpu", torch.float64).clone()
    raw = inputs.detach() if isinstance(inputs, Tensor) else inputs
    I = int(E.shape[1]) if E is not None else int(getattr(raw, "shape", (0,))[-1] or 0)
    x = prepare_inputs(inputs, {"input_size": max(1, I)}, batch_first=config.batch_first, embedding=E)
    T, B, I = x.shape
    state0, single = prepare_state(h0, B, dtype)
    H = int(state0[0].shape[1])
    cell = OwnCell(step, input_size=I, hidden_size=H, k=len(state0), single=single, dtype=dtype, params=params)
    notes = validate(cell, x.to(dtype), state0)
    fm = FileModel(module=cell.step_name, rnn={}, arch={"cell": OwnCell.name, "hidden_size": H, "input_size": I,
                                                    "num_layers": 1, "bidirectional": False})
    fm.notes += notes + ([spectra_note] if spectra_note else []) + ["W_hh spectra: none, your step has no fixed recurrent matrix (its Jacobians are its own at "
                         "each state: the Jacobian view)"]
    if readout is not None:
        lin = _tensor_of(readout, nn.Linear, "readout", step)
        if lin.in_features != H:
            raise ConfigError(f"readout reads {lin.in_features} features, the step's output h_t has {H}")
        fm.readout = (lin.weight.detach().to("cpu", torch.float64).clone(),
                      None if lin.bias is None else lin.bias.detach().to("cpu", torch.float64).clone())
    drops = [f"{n or '(step)'} ({type(m).__name__}, p={m.p:g})" for n, m in step.named_modules()
             if isinstance(m, nn.modules.dropout._DropoutNd)] if isinstance(step, nn.Module) else []
    if drops:
        fm.notes.append("dropout found and not applied (the step is analysed in eval mode): " + ", ".join(drops))
    prov = {"source": "python", "module": cell.step_name, "readout": _name_in(step, readout) if isinstance(step, nn.Module)
            else (None if readout is None else type(readout).__name__),
            "embedding": None if embedding is None else (embedding if isinstance(embedding, str) else "nn.Embedding"),
            "dropout": drops, "step": cell.step_name, "state": f"{len(state0)} x (B, {H})",
            "jacobians": "vector-Jacobian products of your step (torch.func.vjp)"}
    return analyse_own(config, fm, x, targets=targets, loss=loss, progress=progress, views=views, provenance=prov,
                       net=OwnNetwork(cell, state0))


__all__ = ["OwnStepConfig", "OwnNetwork", "analyse_step", "check_step", "step_cost"]
