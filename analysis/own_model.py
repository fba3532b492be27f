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

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnn_models.config import ConfigError
from rnn_models.network import RecurrentNetwork, infer_config_from_torch_state_dict

from .config import MAX_BATCH, MAX_SEQ_LEN, ExperimentConfig
from .experiment import DTYPES, ExperimentResult, TaskModel, _check_only, analyse_model
from .progress import reporter
from .limits import check
from .own_files import ARCH_FIELDS, FileModel, describe, fill_from_file, read_array, read_file, read_state_dict
from .upload_limits import check_upload
from .tasks import TaskBatch, TaskSpec, task_spec

RECURRENT = (nn.RNN, nn.LSTM, nn.GRU)
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


# ---- inputs, targets, h0 ---------------------------------------------------------------------------------
def _as_tensor(a, name: str) -> Tensor:
    if isinstance(a, np.ndarray):
        if a.dtype.kind not in "iufb":
            raise ConfigError(f"{name} has dtype {a.dtype}: it must be numeric")
        return torch.from_numpy(np.ascontiguousarray(a))
    if isinstance(a, Tensor):
        return a.detach().cpu()
    raise ConfigError(f"{name} must be a torch tensor or a numpy array; got {type(a).__name__}")


def prepare_inputs(x, arch: dict, *, batch_first: bool, embedding: Tensor | None) -> Tensor:
    """Inputs as float64 (T, B, I): ids looked up in the embedding, batch-first transposed, every check one line."""
    x = _as_tensor(x, "inputs")
    I = arch["input_size"]
    order = "(B, T" if batch_first else "(T, B"
    if embedding is not None:
        if x.is_floating_point() or x.dim() != 2:
            raise ConfigError(f"inputs have shape {tuple(x.shape)} ({x.dtype}); with an embedding they must be "
                              f"token ids {order}) of an integer type")
        V = embedding.shape[0]
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= V):
            raise ConfigError(f"inputs: token ids must be in [0, {V - 1}] (the embedding has {V} rows); "
                              f"got [{int(x.min())}, {int(x.max())}]")
        x = F.embedding(x.long(), embedding.double())  # (., ., I)
    elif not x.is_floating_point() and x.dim() != 3:
        hint = "pass embeddings, e.g. model.encoder(ids), or embedding=model.encoder (--embedding NAME)"
        raise ConfigError(f"inputs are integers of shape {tuple(x.shape)}, like token ids, but the recurrent module "
                          f"reads float vectors of size {I}: {hint}")
    if x.dim() != 3:
        raise ConfigError(f"inputs have shape {tuple(x.shape)}: they must be 3-D {order}, input_size={I})")
    if x.shape[2] != I:
        raise ConfigError(f"inputs have shape {tuple(x.shape)}, read as {order}, I): I={x.shape[2]} but the module "
                          f"reads input_size={I}")
    x = x.double()
    if batch_first:
        x = x.transpose(0, 1)  # (B, T, I) -> (T, B, I)
    T, B = x.shape[:2]
    if not (1 <= T <= MAX_SEQ_LEN and 1 <= B <= MAX_BATCH):
        raise ConfigError(f"inputs: T={T}, B={B}: T must be in [1, {MAX_SEQ_LEN}] and B in [1, {MAX_BATCH}]")
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise ConfigError(f"inputs: {bad} non-finite values (NaN/Inf) out of {x.numel()}")
    return x.contiguous()


def prepare_targets(tg, T: int, B: int, O: int, *, batch_first: bool) -> tuple[Tensor, str]:
    """Targets and the loss they imply: ('ce' ids (T, B) or (B,)) or ('mse' floats (T, B, O) or (B, O))."""
    tg = _as_tensor(tg, "targets")
    if batch_first and tg.dim() >= 2 and tg.shape[:2] == (B, T) and (tg.dim() == 3 or not tg.is_floating_point()):
        tg = tg.transpose(0, 1)  # (B, T, ...) -> (T, B, ...)
    if not tg.is_floating_point():
        if tuple(tg.shape) not in ((T, B), (B,)):
            raise ConfigError(f"targets are class ids of shape {tuple(tg.shape)}: they must be (T, B) = {(T, B)} "
                              f"(a loss at every step) or (B,) = ({B},) (the last step)")
        if int(tg.min()) < 0 or int(tg.max()) >= O:
            raise ConfigError(f"targets: class ids must be in [0, {O - 1}] (the readout has {O} outputs); got "
                              f"[{int(tg.min())}, {int(tg.max())}]")
        return tg.long(), "ce"
    if tuple(tg.shape) not in ((T, B, O), (B, O)):
        raise ConfigError(f"targets are floats of shape {tuple(tg.shape)}: they must be (T, B, O) = {(T, B, O)} or "
                          f"(B, O) = {(B, O)} (MSE); class ids must have an integer type")
    if not bool(torch.isfinite(tg).all()):
        raise ConfigError("targets contain non-finite values (NaN/Inf)")
    return tg.double(), "mse"


def prepare_h0(h0, arch: dict, B: int, dtype: torch.dtype) -> list[list[tuple]]:
    """torch's h0 (L*D, B, H) or (h0, c0) -> the engine's initial[l][d] = (h,) or (h, c)."""
    L, D, H = arch["num_layers"], 2 if arch["bidirectional"] else 1, arch["hidden_size"]
    lstm = arch["cell"] == "lstm"
    parts = tuple(h0) if isinstance(h0, (tuple, list)) else (h0,)
    if len(parts) != (2 if lstm else 1):
        want = "the tuple (h0, c0)" if lstm else "one tensor h0"
        raise ConfigError(f"h0: the {arch['cell']} takes {want}, as torch does; got {len(parts)} tensor(s)")
    parts = tuple(_as_tensor(p, "h0").double() for p in parts)
    for p in parts:
        if tuple(p.shape) != (L * D, B, H):
            raise ConfigError(f"h0 has shape {tuple(p.shape)}: it must be (num_layers*directions, B, H) = "
                              f"{(L * D, B, H)}")
        if not bool(torch.isfinite(p).all()):
            raise ConfigError("h0 contains non-finite values (NaN/Inf)")
    return [[tuple(p[l * D + d].to(dtype) for p in parts) for d in range(D)] for l in range(L)]


# ---- losses -------------------------------------------------------------------------------------------
def readout_loss(tg: Tensor, kind: str, steps: str):
    """loss_fn(y (T, B, O)) -> scalar, torch's reduction='mean' over the steps used and the batch."""
    def loss_fn(y: Tensor) -> Tensor:
        if steps == "last":
            z = tg[-1] if tg.dim() == y.dim() else tg  # (B,) ids or (B, O) floats
            yl = y[-1]  # (B, O)
            return F.cross_entropy(yl, z) if kind == "ce" else F.mse_loss(yl, z.to(y.dtype))
        T, B, O = y.shape
        if kind == "ce":
            return F.cross_entropy(y.reshape(T * B, O), tg.reshape(T * B))  # (T*B, O) vs (T*B,)
        return F.mse_loss(y, tg.to(y.dtype))
    return loss_fn


def _callable_loss(loss):
    def loss_fn(y: Tensor) -> Tensor:
        out = loss(y)
        if not isinstance(out, Tensor) or out.numel() != 1:
            raise ConfigError(f"loss(outputs) must return a scalar tensor; got "
                              f"{type(out).__name__}{tuple(out.shape) if isinstance(out, Tensor) else ''}")
        return out.reshape(())
    return loss_fn


def _spec(name: str, I: int, O: int, steps: str, chance: float, kind: str) -> TaskSpec:
    return TaskSpec(name=name, input_size=I, output_size=O, loss_steps=steps, chance_loss=chance, kind=kind,
                    min_seq_len=1)


# ---- the one core every front end calls -----------------------------------------------------------------
def analyse_own(config: ExperimentConfig, fm: FileModel, x: Tensor, *, targets=None, h0=None, loss=None,
                notes: list[str] | None = None, progress=None, only: str | None = None) -> ExperimentResult:
    """Analyse the recurrent weights ``fm.rnn`` (+ ``fm.readout``) on inputs x (T, B, I) float64, time-major."""
    t0 = time.perf_counter()
    T, B, I = x.shape
    config = config.replace(**{**fm.arch, "input_size": I, "seq_len": T, "batch_size": B, "task": "random",
                               "compare": ()})
    check(config, only=only)  # the limits on the real shapes (LimitExceeded, one line) before anything is built
    dtype = DTYPES[config.dtype]
    notes = list(fm.notes) + list(notes or [])
    initial = prepare_h0(h0, fm.arch, B, dtype) if h0 is not None else None
    if initial is not None:
        notes.append("initial state: the given h0" + (" and c0" if fm.arch["cell"] == "lstm" else ""))
    D = 2 if config.bidirectional else 1
    if fm.readout is None and loss is None:
        if targets is not None:
            raise ConfigError("targets need a readout (the nn.Linear whose outputs they score): readout= / --readout")
        spec = task_spec("random", T, I)
        model = TaskModel(config, spec, I).to(dtype)
        loss_fn = None
        notes.append("loss: the random probe u . h_{T-1} (no readout given); gradients of the model's own loss "
                     "need readout + targets, or loss=")
    elif loss is not None:
        if fm.readout is not None or targets is not None:
            raise ConfigError("give either loss= or readout= with targets=, not both")
        config = config.replace(loss_steps="all")
        spec = _spec("own loss", I, D * config.hidden_size, "all", 0.0, "own")
        model = OwnModel(_net(config, I, dtype), None)
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
        model = OwnModel(_net(config, I, dtype), (W.to(dtype), None if b is None else b.to(dtype)))
        loss_fn = readout_loss(tg, kind, steps)
        what = "cross-entropy on class ids" if kind == "ce" else "MSE on float targets"
        when = "at every step (mean over t and b)" if steps == "all" else "at the last step (mean over b)"
        chance_txt = f"ln O = {chance:.4g} (uniform prediction)" if kind == "ce" else \
            f"{chance:.4g} (the targets' variance: a constant prediction)"
        notes.append(f"loss: the readout's {what}, {when}, torch's reduction='mean'; chance level {chance_txt}")
    model.net.load_torch_state_dict({k: v.double() for k, v in fm.rnn.items()})
    batch = TaskBatch(spec=spec, inputs=x.to(dtype), targets=None)
    _check_only(only)
    return analyse_model(config, batch, model, loss_fn=loss_fn, initial=initial, notes=tuple(notes), t0=t0,
                         rep=reporter(progress), only=only)


def _net(config: ExperimentConfig, I: int, dtype: torch.dtype) -> RecurrentNetwork:
    return RecurrentNetwork(config.model_config(I), dtype=dtype)  # explicit dtype: no process-global state


# ---- Python: a model object ---------------------------------------------------------------------------
def find_recurrent(model: nn.Module, module: str | None = None) -> tuple[str, nn.RNNBase]:
    """(name, module): the model itself, the one nn.RNN/LSTM/GRU inside it, or the one named ``module``."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch nn.Module (an nn.RNN/LSTM/GRU or a model holding one); got "
                          f"{type(model).__name__}")
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, RECURRENT)]
    names = ", ".join(n or "(the model itself)" for n, _ in found) or "none"
    if module is not None:
        try:
            m = model.get_submodule(module)
        except AttributeError:
            raise ConfigError(f"module={module!r} is not in the model: its recurrent modules are {names}") from None
        if not isinstance(m, RECURRENT):
            raise ConfigError(f"module={module!r} is a {type(m).__name__}, not an nn.RNN/LSTM/GRU: the model has "
                              f"{names}")
        return module, m
    if len(found) != 1:
        raise ConfigError(f"the model holds {len(found)} nn.RNN/LSTM/GRU modules ({names}): "
                          + ("pick one with module='NAME'" if found else "analyze needs one"))
    return found[0]


def _module_arch(rnn: nn.RNNBase) -> tuple[dict, str]:
    if getattr(rnn, "proj_size", 0):
        raise ConfigError(f"the LSTM has proj_size={rnn.proj_size}: LSTM projections are not supported")
    if not rnn.bias:
        raise ConfigError("the module has bias=False, which this tool does not support")
    arch = {"cell": {"RNN_TANH": "rnn", "RNN_RELU": "rnn", "LSTM": "lstm", "GRU": "gru"}[rnn.mode],
            "input_size": rnn.input_size, "hidden_size": rnn.hidden_size, "num_layers": rnn.num_layers,
            "bidirectional": rnn.bidirectional}
    return arch, ("relu" if rnn.mode == "RNN_RELU" else "tanh")


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
            embedding=None, progress=None, **settings) -> ExperimentResult:
    """Analyse a trained torch model under its own loss; see the module docstring for the loss and shapes.

    model     an nn.RNN/LSTM/GRU, or an nn.Module holding one (``module='rnn'`` when it holds several)
    inputs    (T, B, I), or (B, T, I) when the module is batch_first; token ids (T, B) with ``embedding``
    readout   an nn.Linear (or its name) on the top layer's outputs, with ``targets`` (ids -> CE, floats -> MSE)
    loss      callable(outputs (T, B, D*H)) -> scalar, instead of readout + targets
    h0        as torch takes it: (L*D, B, H), or (h0, c0) for the LSTM
    progress  optional callback (fraction, what), as run_experiment takes it
    settings  ExperimentConfig's analysis fields: layer, dtype, loss_steps, jacobian_lags, seed, truncate, ...
    """
    bad = sorted(set(settings) & NOT_SETTINGS)
    allowed = sorted({f for f in ExperimentConfig.__dataclass_fields__} - NOT_SETTINGS)
    unknown = sorted(set(settings) - set(ExperimentConfig.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r}: allowed settings are {', '.join(allowed)}")
    name, rnn = find_recurrent(model, module)
    arch, activation = _module_arch(rnn)
    if bad and bad[0] != "batch_first":
        raise ConfigError(f"{bad[0]}={settings[bad[0]]!r}: the model decides {bad[0]} ({arch.get(bad[0], '-')})")
    if "activation" in settings and arch["cell"] == "rnn" and settings["activation"] != activation:
        raise ConfigError(f"activation={settings['activation']!r} contradicts the module's nonlinearity "
                          f"{activation!r}")
    sd = {k: v.detach().to("cpu", torch.float64).clone() for k, v in rnn.state_dict().items()}
    assert infer_config_from_torch_state_dict(sd) == arch  # the module's attributes and its weights agree
    batch_first = bool(rnn.batch_first)
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
                    + (f", nonlinearity={activation}" if arch["cell"] == "rnn" else ""))
    if batch_first:
        fm.notes.append("inputs read as (B, T, I): the module is batch_first")
    if rnn.dropout and L > 1:
        fm.notes.append(f"the module's dropout={rnn.dropout:g} between layers is not applied: the analysis is of "
                        "the deterministic (eval-mode) network")
    if readout is not None:
        lin = _named(model, readout, nn.Linear, "readout")
        fm.readout = (lin.weight.detach().to("cpu", torch.float64).clone(),
                      None if lin.bias is None else lin.bias.detach().to("cpu", torch.float64).clone())
        if fm.readout[0].shape[1] != (2 if arch["bidirectional"] else 1) * arch["hidden_size"]:
            raise ConfigError(f"readout reads {fm.readout[0].shape[1]} features, the recurrent outputs have "
                              f"{(2 if arch['bidirectional'] else 1) * arch['hidden_size']}")
    E = None
    if embedding is not None:
        E = _named(model, embedding, nn.Embedding, "embedding").weight.detach().to("cpu", torch.float64).clone()
    x = prepare_inputs(inputs, arch, batch_first=batch_first, embedding=E)
    return analyse_own(config, fm, x, targets=targets, h0=h0, loss=loss, progress=progress)


# ---- files (command line) and uploads (dashboard) ------------------------------------------------------
def analyse_files(config: ExperimentConfig, state_dict: bytes, *, inputs: tuple[bytes, str] | None = None,
                  targets: tuple[bytes, str] | None = None, h0: tuple[bytes, str] | None = None,
                  names: dict | None = None, progress=None, only: str | None = None) -> ExperimentResult:
    """The same analysis from file contents: a whole model's state_dict and (bytes, '.npy'/'.pt') arrays.

    ``config`` names the module / readout / embedding inside the state_dict; ``names`` how each file is called
    in messages (the flag and path, or the uploaded file's name).
    """
    names = names or {}
    sd = read_state_dict(state_dict, names.get("state_dict", "state_dict"))  # shapes only (analysis.archive)
    config, fm = fill_from_file(config, sd, names.get("state_dict", "state_dict"),
                                cost=lambda c: check_upload(c, inputs, only))  # before any tensor is loaded
    if inputs is None:
        if config.embedding or config.batch_first:
            raise ConfigError("embedding and batch_first apply to given inputs: give the inputs file too")
        from .tasks import make_batch
        x = make_batch("random", config.seq_len, config.batch_size, seed=config.seed,
                       input_size=fm.arch["input_size"], dtype=torch.float64).inputs
        fm.notes.append(f"inputs: seeded random N(0, 1) (T={config.seq_len}, B={config.batch_size}); none given")
    else:
        x = prepare_inputs(read_array(inputs[0], names.get("inputs", "inputs"), inputs[1]), fm.arch,
                           batch_first=config.batch_first, embedding=fm.embedding)
    tg = read_array(targets[0], names.get("targets", "targets"), targets[1]) if targets else None
    h = read_array(h0[0], names.get("h0", "h0"), h0[1]) if h0 else None
    if isinstance(tg, tuple):
        raise ConfigError(f"{names.get('targets', 'targets')} holds a tuple: targets are one array")
    return analyse_own(config, fm, x, targets=tg, h0=h, progress=progress, only=only)


def run_files(config: ExperimentConfig, progress=None, only: str | None = None) -> ExperimentResult:
    """run_experiment's path for ``state_dict_path`` with the random task: read the files, then analyse_files."""
    import os

    def arr(path, field):
        return (read_file(path, field), os.path.splitext(path)[1]) if path else None

    sd = read_file(config.state_dict_path, "state_dict_path")
    return analyse_files(config, sd, inputs=arr(config.inputs_path, "inputs_path"),
                         targets=arr(config.targets_path, "targets_path"), h0=arr(config.h0_path, "h0_path"),
                         names={"state_dict": f"state_dict_path={config.state_dict_path!r}",
                                "inputs": f"inputs_path={config.inputs_path!r}",
                                "targets": f"targets_path={config.targets_path!r}",
                                "h0": f"h0_path={config.h0_path!r}"}, progress=progress, only=only)
