r"""Analyse your own step: ``analyze(step, inputs, h0=..., ...)`` for any recurrence ``(x_t, state) -> state``.

    analyse_step(step, inputs, *, h0, params=None, loss=None, readout=None, targets=None, embedding=None,
                 progress=None, views=None, **settings) -> ExperimentResult

The step becomes an ``analysis.own_cell.OwnCell`` (a deep copy in the analysis dtype: the user's object is never
changed) in a one-layer network that starts from h0, and goes through the same core as a trained nn.RNN/LSTM/GRU
(``own_model.analyse_own``): the loss (probe, readout + targets, or a callable on the outputs h_t), ||dL/dh_t|| by
one backward pass (and the exact log-space chain of vector-Jacobian products where float backprop underflows),
the Jacobian products d state_{T-1} / d state_{T-1-k} with their spectra and Lyapunov exponents from the step's
vector-Jacobian products (torch.func), and the same result, views and exports. There is no W_hh: the spectrum view
says so.

First (``validate``) the step is run once over the inputs and its first Jacobians are formed: a state whose form,
shape or dtype changes, a step autograd cannot differentiate (or whose Jacobian is exactly 0), a complex state,
state tensors of different widths and a step that mixes the sequences of a batch are each one ConfigError line
naming the time step.

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
from .own_cell import COMPLEX_HINT, JAC_BYTES, NOT_DIFFERENTIABLE, OwnCell, State, _first_line

# what the step decides (architecture) or what applies to the built-in cells only
STEP_DECIDES = ("cell", "compare", "hidden_size", "input_size", "num_layers", "bidirectional")
# the built-in cells' own settings: ModelConfig's fields beyond the sizes and the seed (activation, init, layer
# norm, peephole, forget bias, the LRU's ring, ...), and the layer of a stack (the step is one layer)
BUILT_IN_ONLY = tuple(sorted(set(ModelConfig.__dataclass_fields__) - set(STEP_DECIDES) - {"seed", "chrono_tmax"}
                             | {"layer"}))
FILE_FIELDS = ("task", "text", "inputs_path", "state_dict_path", "targets_path", "h0_path", "module", "readout",
               "embedding")


# ---- the initial state and the first look at the step ------------------------------------------------------
def prepare_state(h0, B: int, dtype: torch.dtype) -> tuple[State, bool]:
    """h0 as the step takes it, one tensor (B, H) or a tuple of k tensors (B, H) -> (the engine's tuple in
    ``dtype``, single); every problem one ConfigError line."""
    from .own_inputs import _as_tensor
    if h0 is None:
        raise ConfigError("h0 is needed for your own step: the initial state as the step takes it, one tensor (B, H) "
                          "or a tuple of them (zeros are a fine choice), so the state's shape is known")
    single = not isinstance(h0, (tuple, list))
    parts = (h0,) if single else tuple(h0)
    if not parts:
        raise ConfigError("h0 is an empty tuple: give the initial state as one tensor (B, H) or a tuple of them")
    out = []
    for i, p in enumerate(parts):
        name = "h0" if single else f"h0[{i}]"
        if isinstance(p, Tensor) and p.is_complex():
            raise ConfigError(f"{name} is complex: the analysis needs a real state; {COMPLEX_HINT}")
        p = _as_tensor(p, name)
        if not p.is_floating_point():
            raise ConfigError(f"{name} has dtype {p.dtype}: the state must be floating point")
        if p.dim() != 2 or p.shape[0] != B:
            raise ConfigError(f"{name} has shape {tuple(p.shape)}: each state tensor must be (B, H) with B={B}, the "
                              "inputs' batch")
        if not bool(torch.isfinite(p).all()):
            raise ConfigError(f"{name} contains non-finite values (NaN/Inf)")
        out.append(p.to(dtype))
    widths = tuple(int(p.shape[1]) for p in out)
    if len(set(widths)) > 1:
        raise ConfigError(f"h0's tensors have widths {widths}: every state tensor must have the same width H (the "
                          "engine lays the state out as k blocks of H); pad the narrower ones, or give the step one "
                          "concatenated state tensor")
    return tuple(out), single


def validate(cell: OwnCell, x: Tensor, state0: State) -> list[str]:
    """Run the step over x (T, B, I) once and differentiate its first steps; every problem one ConfigError line
    (the time step named): the state's form, shape or dtype changing, a step autograd cannot differentiate, a
    Jacobian that is exactly 0, a step that mixes the sequences of a batch. Returns the notes to show."""
    T, B = x.shape[:2]
    states = [state0]
    with torch.no_grad():
        for t in range(T):
            states.append(_at(t, lambda: cell.step(x[t], states[-1])))
    # t = 0 under autograd: the state reaches the output, and what one sequence's step saves (the vmap budget)
    saved = [0]

    def pack(v):  # the batch's own tensors (B, ...), not the weights
        if isinstance(v, Tensor) and v.dim() and v.shape[0] == B:
            saved[0] += v.numel() * v.element_size()
        return v
    s = tuple(v.detach().requires_grad_(True) for v in state0)
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda v: v):
        out = _at(0, lambda: cell.step(x[0], s), autograd=True)
        live = [o for o in out if o.requires_grad]
        grads = torch.autograd.grad(sum(o.sum() for o in live), s, allow_unused=True) if live else (None,)
    if all(g is None for g in grads):
        raise ConfigError("the step's output does not depend on its state through autograd (no gradient reaches "
                          f"state_(t-1) from state_t at t=0): {NOT_DIFFERENTIABLE}")
    cell.sample_bytes = max(8 * len(state0) * cell.hidden_size * x.element_size(), saved[0] // B)
    # the Jacobians of the first steps: not all exactly 0, and the same when a sequence steps alone (vmap) as
    # within its batch (S backward passes of the whole batch)
    n = min(T, 4)
    xs = x[:n]  # (n, B, I)
    st = tuple(torch.stack([states[t][i] for t in range(n)]) for i in range(len(state0)))  # k x (n, B, H)
    J = _at(0, lambda: cell.jacobian(xs, st), autograd=True)  # (n, B, S, S)
    b = min(B, 2)
    together = cell._jacobian_by("backward", x[0, :b], torch.cat([v[:b] for v in state0], -1))  # (b, S, S)
    eps = torch.finfo(x.dtype).eps
    if not torch.allclose(J[0, :b], together, rtol=1e4 * eps, atol=1e4 * eps * float(together.abs().max())):
        raise ConfigError("the step mixes the sequences of a batch (its Jacobian differs when a sequence steps alone): "
                          "the analysis needs sequences that step independently (no batch statistics)")
    if not bool((J != 0).any()):
        raise ConfigError(f"the Jacobian d state_t/d state_(t-1) is exactly 0 at t=0..{n - 1} for every sequence: "
                          f"the step passes no gradient through its state; {NOT_DIFFERENTIABLE}")
    k, H = len(state0), cell.hidden_size
    form = "one tensor" if cell.single else f"a tuple of {k} tensors"
    how = (f"vmap({cell.jacobian_method})" if cell.jacobian_method != "backward" else
           f"autograd, {k * H} backward passes per chunk (vmap cannot run the step)")
    return [f"your step {cell.step_name}: the state is {form} (B, {H}), S = {k * H}; h_t is "
            + ("the state" if k == 1 else "its first tensor") + f"; its Jacobians were formed by {how}"]


def _at(t: int, fn, autograd: bool = False):
    """fn() with its problems said as one line naming the time step."""
    try:
        return fn()
    except ConfigError as e:
        raise ConfigError(str(e).replace("the step ", f"the step at t={t} ", 1)) from None
    except Exception as e:  # noqa: BLE001 - the user's code: one line, its own words
        how = f"; {NOT_DIFFERENTIABLE}" if autograd else ""
        raise ConfigError(f"the step raised {type(e).__name__} at t={t}"
                          + (" under autograd" if autograd else "") + f": {_first_line(e)}{how}") from None


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
    from .engine import DTYPES
    from .own_files import FileModel
    from .own_inputs import prepare_inputs
    from .own_model import _name_in, analyse_own
    if not callable(step):
        raise ConfigError(f"the step must be an nn.Module or a callable (x_t, state) -> state; got "
                          f"{type(step).__name__}")
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
    fm.notes += notes + ([spectra_note] if spectra_note else []) + [
        "W_hh spectra: none, your step has no fixed recurrent matrix (its Jacobians are its own at each state: the "
        "Jacobian view)"]
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
    prov = {"source": "python", "module": cell.step_name,
            "readout": _name_in(step, readout) if isinstance(step, nn.Module) else
            (None if readout is None else type(readout).__name__),
            "embedding": None if embedding is None else (embedding if isinstance(embedding, str) else "nn.Embedding"),
            "dropout": drops, "step": cell.step_name, "state": f"{len(state0)} x (B, {H})",
            "jacobians": "vector-Jacobian products of your step (torch.func.vjp)"}
    return analyse_own(config, fm, x, targets=targets, loss=loss, progress=progress, views=views, provenance=prov,
                       net=OwnNetwork(cell, state0))


__all__ = ["OwnStepConfig", "OwnNetwork", "analyse_step", "check_step", "step_cost"]
