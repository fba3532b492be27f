r"""Analyse your own model: a trained torch RNN/LSTM/GRU under its real loss, from Python, files or uploads.

    analyze(model, inputs, *, loss=None, readout=None, targets=None, h0=None, module=None, embedding=None,
            **settings) -> ExperimentResult

The recurrent module's weights are copied (in float64, then the analysis dtype) into the engine's network, whose
cells use torch's parameter names and gate order, so the same weights give the same h_t (checked against
torch.nn in tests/test_own_model.py); the user's module itself is only read (its state_dict), never run,
trained or switched between train and eval.

The loss L, whose gradients dL/dh_t are shown:

    probe (default)     L = sum_b u . h^{top}_{T-1,b}          u a fixed random unit vector (seed + 1)
    readout + targets   y_t = W h^{top}_t + b (the model's own nn.Linear, e.g. ``model.decoder``)
                        class ids (T, B) -> L = mean_{t,b} CE(y_t, k_t)   ids (B,) -> mean_b CE(y_{T-1}, k)
                        floats (T, B, O) -> L = mean (y_t - z_t)^2        floats (B, O) -> last step only
                        (torch's default reduction='mean': the loss the model was trained with)
    loss=callable       L = loss(outputs), outputs (T, B, D*H) the top layer's [h_fwd; h_bwd] in the analysis dtype

Shapes: inputs (T, B, I) or (B, T, I) with batch_first; ids (T, B) with ``embedding``; h0 (L*D, B, H) or the
tuple (h0, c0) for the LSTM, as torch takes them.

Units (the one convention of every ExperimentResult): ``r.grad.*`` arrays are plain values (||dL/dh_t||,
geometric means over the batch, which may underflow to 0 in float32) with the exact ``r.grad.log10_grad_norm``
twin; ``r.jac.*`` are log10 (see JacobianResult); ``to_dict()`` gives both, ``x`` and ``log10_x``.
"""
from __future__ import annotations

import math
import time

import torch
from torch import Tensor, nn

from rnn_models.cells import cell_names, cell_type
from rnn_models.config import ConfigError
from rnn_models.network import RecurrentNetwork, infer_config_from_torch_state_dict

from .compute_views import announce
from .config import ExperimentConfig
from .engine import DTYPES, ExperimentResult, TaskModel, _check_only, analyse_model, choose
from .own_files import ARCH_FIELDS, PYTHON, FileModel, describe
from .own_inputs import (_callable_loss, analyse_files, prepare_h0, prepare_inputs,  # noqa: F401 - re-exported
                         prepare_targets, readout_loss, run_files)
from .progress import reporter
from .tasks import TaskBatch, TaskSpec, random_readout, task_spec

RECURRENT = (nn.RNN, nn.LSTM, nn.GRU)
TORCH_CELLS = (nn.RNNCell, nn.LSTMCell, nn.GRUCell)  # a model's own loop over one: the same closed forms, 1 layer
NOT_SETTINGS = set(ARCH_FIELDS) | {"compare", "task", "text", "inputs_path", "state_dict_path", "targets_path",
                                   "h0_path", "module", "readout", "embedding", "batch_first"}


class OwnModel(nn.Module):
    """The engine's network with the user's readout: forward -> (Trace, y), y = W h_t + b or the outputs."""

    def __init__(self, net: RecurrentNetwork, readout: tuple[Tensor, Tensor | None] | None):
        super().__init__()
        self.net = net
        self.readout = None
        if readout is not None:
            W, b = readout
            self.readout = nn.Linear(W.shape[1], W.shape[0], bias=b is not None).to(W.dtype)
            with torch.no_grad():
                self.readout.weight.copy_(W)
                if b is not None:
                    self.readout.bias.copy_(b)
            self.readout.requires_grad_(False)

    def forward(self, x: Tensor, *, views: bool = False, initial=None, detach_every: int = 0):
        trace = self.net(x, initial, views=views, detach_every=detach_every)
        return trace, (self.readout(trace.outputs) if self.readout is not None else trace.outputs)  # (T, B, O)


def _spec(name: str, I: int, O: int, steps: str, chance: float, kind: str) -> TaskSpec:
    return TaskSpec(name=name, input_size=I, output_size=O, loss_steps=steps, chance_loss=chance, kind=kind,
                    min_seq_len=1)


# ---- the one core every front end calls -----------------------------------------------------------------
def analyse_own(config: ExperimentConfig, fm: FileModel, x: Tensor, *, targets=None, h0=None, loss=None,
                notes: list[str] | None = None, progress=None, only: str | None = None,
                views=None, provenance: dict | None = None, net=None) -> ExperimentResult:
    """Analyse the recurrent weights ``fm.rnn`` (+ ``fm.readout``) on inputs x (T, B, I) float64, time-major.

    The cost is estimated from these real shapes (T, B, I, the module's sizes) and checked against the host's
    limits (``LimitExceeded`` with the estimate and how to lower it); ``jacobian_detail`` auto picks the light
    settings above a size (analysis.compute_views). ``provenance`` (the files' names and sha256, the model's
    dropout layers) is completed with what ran and kept on the result. ``net``: a built network to analyse
    instead of one loaded from ``fm.rnn`` (analysis.own_step: your own step, with its own limits check).
    """
    t0 = time.perf_counter()
    _check_only(only)
    only, views = choose(only, views)
    T, B, I = x.shape
    config = config.replace(**{**fm.arch, "input_size": I, "seq_len": T, "batch_size": B, "task": "random",
                               "compare": ()})
    dtype = DTYPES[config.dtype]
    notes = list(fm.notes) + list(notes or [])
    # the limits on the real shapes (LimitExceeded, one line) before anything is built
    config, detail_note, cost = check_own(config, only, views) if net is None else net.check(config, only)
    if detail_note:
        notes.append(detail_note)
    initial = prepare_h0(h0, fm.arch, B, dtype) if h0 is not None else None
    if initial is not None:
        others = cell_type(fm.arch["cell"]).state_names[1:]  # the LSTM's c
        notes.append("initial state: the given h0" + "".join(f" and {n}0" for n in others))
    D = 2 if config.bidirectional else 1
    if fm.readout is None and loss is None:
        if targets is not None:
            raise ConfigError("targets need a readout (the nn.Linear whose outputs they score): readout= / --readout")
        spec = task_spec("random", T, I)
        model = TaskModel(config, spec, I).to(dtype) if net is None else OwnModel(net, (
            random_readout(config.hidden_size, config.seed + 1, torch.float64).to(dtype)[None],
            torch.zeros(1, dtype=dtype)))  # TaskModel's probe u . h_t
        loss_fn = None
        notes.append("loss: the random probe u . h_{T-1} (no readout given); gradients of the model's own loss "
                     "need readout + targets, or loss=")
    elif loss is not None:
        if fm.readout is not None or targets is not None:
            raise ConfigError("give either loss= or readout= with targets=, not both")
        config = config.replace(loss_steps="all")
        spec = _spec("own loss", I, D * config.hidden_size, "all", 0.0, "own")
        model = OwnModel(net or _net(config, I, dtype), None)
        loss_fn = _callable_loss(loss)
        notes.append(f"loss: your callable on the top layer's outputs (T, B, {D * config.hidden_size}) in "
                     f"{config.dtype}")
    else:
        if targets is None:
            raise ConfigError("readout needs targets: class ids -> cross-entropy, floats -> MSE")
        W, b = fm.readout
        O = W.shape[0]
        tg, kind = prepare_targets(targets, T, B, O, batch_first=config.batch_first)
        steps = "last" if tg.dim() == (1 if kind == "ce" else 2) else ("all" if config.loss_steps == "auto"
                                                                      else config.loss_steps)
        config = config.replace(loss_steps=steps)
        chance = math.log(O) if kind == "ce" else float(((tg - tg.mean((0, 1) if tg.dim() == 3 else 0)) ** 2).mean())
        spec = _spec("own readout", I, O, steps, chance, "classification" if kind == "ce" else "regression")
        model = OwnModel(net or _net(config, I, dtype), (W.to(dtype), None if b is None else b.to(dtype)))
        loss_fn = readout_loss(tg, kind, steps)
        what = "cross-entropy on class ids" if kind == "ce" else "MSE on float targets"
        when = "at every step (mean over t and b)" if steps == "all" else "at the last step (mean over b)"
        chance_txt = f"ln O = {chance:.4g} (uniform prediction)" if kind == "ce" else \
            f"{chance:.4g} (the targets' variance: a constant prediction)"
        notes.append(f"loss: the readout's {what}, {when}, torch's reduction='mean'; chance level {chance_txt}")
    if net is None:
        model.net.load_torch_state_dict({k: v.double() for k, v in fm.rnn.items()})
    batch = TaskBatch(spec=spec, inputs=x.to(dtype), targets=None)
    rep = reporter(progress)
    announce(cost)
    res = analyse_model(config, batch, model, loss_fn=loss_fn, initial=initial, notes=tuple(notes), t0=t0,
                        rep=rep, only=only, views=views)
    res.provenance = own_provenance(res, provenance, loss_text=notes_loss(res.notes), cost=cost)
    return res


def check_own(config: ExperimentConfig, only: str | None, views=None):
    """(config as it runs, detail note, Cost): the Jacobian detail resolved, then the host's limits checked on
    the real shapes; over a limit: LimitExceeded naming the estimate and how to lower it for a user's model."""
    from .compute_views import resolve_detail
    from .limits import LimitExceeded, check
    config, note = resolve_detail(config, own_model=True, only=only)
    try:
        cost = check(config, only=only, views=views)
    except LimitExceeded as e:
        raise LimitExceeded(
            f"{e} (T={config.seq_len} and B={config.batch_size} are your inputs' shape: fewer steps or sequences "
            "lower it" + ("" if only == "gradients" else
                          "; views='gradients' (--views gradients) costs about one forward+backward")
            + ("" if config.jacobian_detail == "light" or only == "gradients" else
               "; jacobian_detail='light' (--jacobian-detail light)") + ")") from None
    return config, note, cost


def notes_loss(notes) -> str:
    return next((n[len("loss: "):] for n in notes if n.startswith("loss: ")), "")


def own_provenance(res: ExperimentResult, given: dict | None, *, loss_text: str, cost) -> dict:
    """What actually ran, for the JSON, the exports' config.json and the deck's notes (analysis.provenance)."""
    from .provenance import run_record
    return run_record(res, {**(given or {}), "loss": loss_text, "estimate_gflop": round(cost.gflop, 3)})


def _net(config: ExperimentConfig, I: int, dtype: torch.dtype) -> RecurrentNetwork:
    """The network the module's weights are loaded into (analyse_own: load_torch_state_dict, every weight): built
    with zeros, not initialised. Explicit dtype: no process-global state."""
    return RecurrentNetwork(config.model_config(I), dtype=dtype, init=False)


# ---- Python: a model object ---------------------------------------------------------------------------
def find_recurrent(model: nn.Module, module: str | None = None) -> tuple[str, nn.RNNBase]:
    """(name, module): the model itself, the one nn.RNN/LSTM/GRU inside it, or the one named ``module``; else the
    one nn.RNNCell/LSTMCell/GRUCell the model loops over."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch nn.Module (an nn.RNN/LSTM/GRU or a model holding one); got "
                          f"{type(model).__name__}")
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, RECURRENT)]
    found = found or [(n, m) for n, m in model.named_modules() if isinstance(m, TORCH_CELLS)]
    names = ", ".join(n or "(the model itself)" for n, _ in found) or "none"
    if module is not None:
        try:
            m = model.get_submodule(module)
        except AttributeError:
            raise ConfigError(f"module={module!r} is not in the model: its recurrent modules are {names}") from None
        if not isinstance(m, RECURRENT + TORCH_CELLS):
            raise ConfigError(f"module={module!r} is a {type(m).__name__}, not an nn.RNN/LSTM/GRU(Cell): the model "
                              f"has {names}")
        return module, m
    if len(found) != 1:
        raise ConfigError(f"the model holds {len(found)} nn.RNN/LSTM/GRU modules ({names}): "
                          + ("pick one with module='NAME'" if found else "analyze needs one"))
    return found[0]


def _torch_mode(rnn) -> str:
    """torch's mode string of an nn.RNN/LSTM/GRU ("LSTM", "RNN_RELU", ...), and of its cells (which have none)."""
    if not isinstance(rnn, TORCH_CELLS):
        return rnn.mode
    name = next(c for c in TORCH_CELLS if isinstance(rnn, c)).__name__[:-len("Cell")]  # LSTMCell -> LSTM
    return f"{name}_{rnn.nonlinearity.upper()}" if hasattr(rnn, "nonlinearity") else name  # RNN_TANH / RNN_RELU


def _module_arch(rnn: nn.RNNBase) -> tuple[dict, str]:
    if getattr(rnn, "proj_size", 0):
        raise ConfigError(f"the LSTM has proj_size={rnn.proj_size}: LSTM projections are not supported")
    if not rnn.bias:
        raise ConfigError("the module has bias=False, which this tool does not support")
    mode = _torch_mode(rnn)
    kind = next(k for k in map(cell_type, cell_names()) if mode in k.torch_modes)  # the kind of torch's mode
    L, D = (1, False) if isinstance(rnn, TORCH_CELLS) else (rnn.num_layers, rnn.bidirectional)  # a cell: 1 layer
    arch = {"cell": kind.name, "input_size": rnn.input_size, "hidden_size": rnn.hidden_size,
            "num_layers": L, "bidirectional": D}
    return arch, (kind.torch_modes[mode] or "tanh")


def _named(model: nn.Module, obj, kind, what: str):
    if isinstance(obj, str):
        try:
            obj = model.get_submodule(obj)
        except AttributeError:
            raise ConfigError(f"{what}={obj!r} is not a submodule of the model") from None
    if not isinstance(obj, kind):
        raise ConfigError(f"{what} must be an nn.{kind.__name__} (or its name in the model); got "
                          f"{type(obj).__name__}" + ("; for any other head pass loss=callable(outputs)"
                                                     if what == "readout" else ""))
    return obj


def analyze(model: nn.Module, inputs, *, loss=None, readout=None, targets=None, h0=None, module: str | None = None,
            embedding=None, progress=None, views=None, params=None, as_step: bool | None = None,
            **settings) -> ExperimentResult:
    """Analyse a trained torch model under its own loss; see the module docstring for the loss and shapes.

    model     an nn.RNN/LSTM/GRU, or an nn.Module holding one (``module='rnn'`` when it holds several), or
              looping over one nn.RNNCell/LSTMCell/GRUCell; or your own step (x_t, state) -> state: an nn.Module
              holding none of these (or any, with ``as_step=True``), a functools.partial, or a callable with
              ``params=`` (analysis.own_step: h0 is then required, the state as the step takes it)
    inputs    (T, B, I), or (B, T, I) when the module is batch_first; token ids (T, B) with ``embedding``
    readout   an nn.Linear (or its name) on the top layer's outputs, with ``targets`` (ids -> CE, floats -> MSE)
    loss      callable(outputs (T, B, D*H)) -> scalar, instead of readout + targets
    h0        as torch takes it: (L*D, B, H), or (h0, c0) for the LSTM
    progress  optional callback (fraction, what), as run_experiment takes it
    views     what to compute (analysis.compute_views): None = everything, "gradients" = about one
              forward+backward, or e.g. "gradients,jacobians"
    settings  ExperimentConfig's analysis fields: layer, dtype, loss_steps, jacobian_lags, seed, truncate, ...
    """
    bad = sorted(set(settings) & NOT_SETTINGS)
    allowed = sorted({f for f in ExperimentConfig.__dataclass_fields__} - NOT_SETTINGS)
    unknown = sorted(set(settings) - set(ExperimentConfig.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r}: allowed settings are {', '.join(allowed)}")
    if as_step or params is not None or (as_step is None and _is_step(model)):
        from .own_step import analyse_step
        if module is not None:
            raise ConfigError(f"module={module!r} names a torch recurrent module: your own step is analysed whole")
        return analyse_step(model, inputs, h0=h0, params=params, loss=loss, readout=readout, targets=targets,
                            embedding=embedding, progress=progress, views=views, **settings)
    name, rnn = find_recurrent(model, module)
    arch, activation = _module_arch(rnn)
    if isinstance(rnn, TORCH_CELLS) and h0 is not None:  # a cell's h0 is (B, H) (and c0): torch's layers' (1, B, H)
        h0 = tuple(_unsqueezed(p) for p in h0) if isinstance(h0, (tuple, list)) else _unsqueezed(h0)
    if bad and bad[0] != "batch_first":
        raise ConfigError(f"{bad[0]}={settings[bad[0]]!r}: the model decides {bad[0]} ({arch.get(bad[0], '-')})")
    has_activation = "activation" in cell_type(arch["cell"]).settings  # the vanilla RNN's nonlinearity
    if "activation" in settings and has_activation and settings["activation"] != activation:
        raise ConfigError(f"activation={settings['activation']!r} contradicts the module's nonlinearity "
                          f"{activation!r}")
    sfx = "_l0" if isinstance(rnn, TORCH_CELLS) else ""  # a cell's weight_hh is a one-layer module's weight_hh_l0
    sd = {k + sfx: v.detach().to("cpu", torch.float64).clone() for k, v in rnn.state_dict().items()}
    assert infer_config_from_torch_state_dict(sd) == arch  # the module's attributes and its weights agree
    batch_first = bool(getattr(rnn, "batch_first", settings.get("batch_first", False)))  # a cell: the setting's
    if "batch_first" in settings and bool(settings["batch_first"]) != batch_first:
        raise ConfigError(f"batch_first={settings['batch_first']} contradicts the module's batch_first={batch_first}")
    config = ExperimentConfig.from_dict({"activation": activation, **{k: v for k, v in settings.items()
                                                                       if k != "batch_first"}, **arch,
                                         "batch_first": batch_first})
    L = arch["num_layers"]
    if not -L <= config.layer <= L - 1:
        raise ConfigError(f"layer={config.layer} is out of range: the module has {L} layers, layer must be in "
                          f"[{-L}, {L - 1}]")
    fm = FileModel(module=name, rnn=sd, arch=arch)
    fm.notes.append(f"the model decided: {type(rnn).__name__} {name or '(the model itself)'!r} = {describe(arch)}"
                    + (f", nonlinearity={activation}" if has_activation else ""))
    if batch_first:
        fm.notes.append("inputs read as (B, T, I): the module is batch_first")
    drops = dropout_layers(model, rnn)
    if drops:
        fm.notes.append("dropout found and not applied (the analysis is of the deterministic, eval-mode network): "
                        + ", ".join(drops))
    dtype = DTYPES[config.dtype]  # the readout copied once, in the analysis's dtype (a float32 model's exactly)
    if readout is not None:
        lin = _named(model, readout, nn.Linear, "readout")
        fm.readout = (lin.weight.detach().to("cpu", dtype).clone(),
                      None if lin.bias is None else lin.bias.detach().to("cpu", dtype).clone())
        if fm.readout[0].shape[1] != (2 if arch["bidirectional"] else 1) * arch["hidden_size"]:
            raise ConfigError(f"readout reads {fm.readout[0].shape[1]} features, the recurrent outputs have "
                              f"{(2 if arch['bidirectional'] else 1) * arch['hidden_size']}")
    E = None
    if embedding is not None:
        E = _named(model, embedding, nn.Embedding, "embedding").weight.detach().to("cpu")  # read, never kept
    x = prepare_inputs(inputs, arch, batch_first=batch_first, embedding=E)
    prov = {"source": "python", "module": name or "(the model itself)",
            "readout": _name_in(model, readout), "embedding": _name_in(model, embedding),
            "dropout": dropout_layers(model, rnn)}
    res = analyse_own(config, fm, x, targets=targets, h0=h0, loss=loss, progress=progress, views=views,
                      provenance=prov)
    res.config = res.config.replace(**python_record(model, module, readout, embedding, targets, h0))
    return res


def python_record(model: nn.Module, module, readout, embedding, targets, h0) -> dict:
    """What ``analyze`` ran, in the fields a state_dict run names it by, for the result's config (and so its JSON
    and exports): ``state_dict_path`` "python:<the model's class>" and the arrays given in Python as
    "python:inputs" / "python:targets" / "python:h0" (a record, as an upload's "upload:<name>"; nothing opens
    them), ``module`` as asked, ``readout`` / ``embedding`` as named in the model's state_dict. Saving the model's
    state_dict and the arrays re-runs it: ``--config result.json --load-state-dict lm.pt --inputs ids.npy
    --targets tg.npy`` gives the same numbers. A readout outside the model has no such name: None here (the
    provenance names its type), and its targets are not recorded either."""
    head = _path_in(model, readout)
    return {"state_dict_path": f"{PYTHON}{type(model).__name__}", "inputs_path": f"{PYTHON}inputs",
            "module": module, "readout": head, "embedding": _path_in(model, embedding),
            "targets_path": f"{PYTHON}targets" if targets is not None and head else None,
            "h0_path": f"{PYTHON}h0" if h0 is not None else None}


def _is_step(model) -> bool:
    """Your own step: a callable that is not an nn.Module, or an nn.Module holding no torch recurrent module."""
    if not isinstance(model, nn.Module):
        return callable(model)
    return not any(isinstance(m, RECURRENT + TORCH_CELLS) for m in model.modules())


def _unsqueezed(p):
    return p[None] if getattr(p, "ndim", 0) == 2 else p


def _name_in(model: nn.Module, obj) -> str | None:
    """The module's name inside the model (or the name given)."""
    if obj is None or isinstance(obj, str):
        return obj
    return next((n for n, m in model.named_modules() if m is obj), type(obj).__name__)


def _path_in(model: nn.Module, obj) -> str | None:
    """The name a state_dict of ``model`` gives ``obj`` (the name given, or its path inside the model); None for
    none (no module given, or one that is not part of the model)."""
    if obj is None or isinstance(obj, str):
        return obj
    return next((n for n, m in model.named_modules() if m is obj and n), None)


def dropout_layers(model: nn.Module, rnn: nn.RNNBase) -> list[str]:
    """The model's dropout: each nn.Dropout* module's name and p, and the recurrent module's inter-layer dropout;
    none is applied here (the analysis is of the deterministic, eval-mode network)."""
    out = [f"{n or '(model)'} ({type(m).__name__}, p={m.p:g})" for n, m in model.named_modules()
           if isinstance(m, nn.modules.dropout._DropoutNd)]
    if getattr(rnn, "dropout", 0) and rnn.num_layers > 1:
        out.append(f"{_name_in(model, rnn)}.dropout={rnn.dropout:g} between layers")
    return out
