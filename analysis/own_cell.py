r"""Your own recurrence: any step ``(x_t, state) -> state`` as a cell of the engine, its Jacobians by torch.func.

    OwnCell.wrap(step, h0, input_size, dtype, params=None) -> OwnCell

``step`` is one of
    an ``nn.Module``               called as ``module(x_t, state)``; a float64 deep copy is analysed, the
                                   user's module is never run, trained or changed
    a ``functools.partial``        ``partial(f, W, b=b)``: its tensor arguments are the cell's parameters
    a callable with ``params=``    ``{"W": W, ...}``, called as ``f(x_t, state, **params)``
    a callable alone               called as it is (its closure's tensors are not cast: give params= instead)

and ``state`` is what the step takes and returns: one tensor (B, H), or a tuple of k tensors (B, H) each. The
first tensor is the output h_t (what a readout or loss reads, and what ||dL/dh_t|| measures); the others are
carried state. The engine sees the state as the tuple itself, laid out as the real (B, S) row [s_0, ..., s_{k-1}],
S = k H, so the per-step Jacobian d state_t / d state_{t-1} is (S, S) and its (H, H) top-left block is h -> h.
Every tensor must have the same width H (the engine's layout); a complex state is refused (return
``torch.view_as_real(h).flatten(-2)`` or ``torch.cat([h.real, h.imag], -1)`` instead).

The cell's projection is the identity (xp_t = x_t: the step owns its input weights). The engine's products
P <- P J_t (and the Lyapunov J_t^T Q, and the gradient chain's v J_t) are vector-Jacobian products of the step by
``torch.func.vjp``, vmapped over the rows (``VJPSteps``): J_t is never formed there. Where a Jacobian is formed
(the checks of the first steps, and the fallback where vmap cannot run the step's backward) it is
``vmap(jacrev(step))`` over every (step, sequence) at once (measured 8x faster than ``jacfwd`` for an LSTM step at
H=128 on one CPU thread: the Jacobian is square, S outputs and S inputs, so neither mode has fewer passes, and
reverse mode batches better under vmap), ``jacfwd`` where reverse mode fails for an op of the step, and a loop of
S backward passes over the batch where vmap cannot run the step. There is no fixed recurrent matrix
(``recurrent_blocks()`` is {}), no gates and no closed form.

Shape legend::

    B  batch    I  input size    k  state tensors    H  width of each    S = k H    C  steps of a chunk
"""
from __future__ import annotations

import copy
import functools
import warnings

import torch
from torch import Tensor, nn

from rnn_models.cells.base import State, _Cell
from rnn_models.cells.registry import register_unlisted
from rnn_models.config import ConfigError

COMPLEX_HINT = ("return a real view instead, torch.view_as_real(h).flatten(-2) or torch.cat([h.real, h.imag], -1) "
                "(and give h0 the same way)")
JAC_BYTES = 64 * 2**20  # the tangents of one vmapped Jacobian call (rows are split to stay below it)
NOT_DIFFERENTIABLE = ("write the step in differentiable torch operations on its state (no .detach(), .numpy(), "
                      ".item(), rounding or integer casts)")


def _cast(t: Tensor, dtype: torch.dtype) -> Tensor:
    """A floating tensor in ``dtype``, a complex one in its complex twin (complex128 for float64), others as
    they are."""
    if t.is_complex():
        return t.to(torch.complex128 if dtype == torch.float64 else torch.complex64)
    return t.to(dtype) if t.is_floating_point() else t


def _as_parameter(t: Tensor, dtype: torch.dtype) -> Tensor:
    """A copy in the analysis dtype: a parameter (requires_grad as the original's, a plain tensor's True) if it is
    floating or complex, else the tensor (an index, a mask)."""
    grad = t.requires_grad if isinstance(t, nn.Parameter) else True
    t = _cast(t.detach().cpu(), dtype).clone()
    return nn.Parameter(t, requires_grad=grad) if (t.is_floating_point() or t.is_complex()) else t


def _describe(obj) -> str:
    """How messages and notes name the user's step."""
    if isinstance(obj, functools.partial):
        return f"functools.partial({getattr(obj.func, '__name__', type(obj.func).__name__)})"
    if isinstance(obj, nn.Module):
        return type(obj).__name__
    return getattr(obj, "__qualname__", None) or type(obj).__name__


@register_unlisted  # cell_type("own") answers for results and figures; no config names or builds it
class OwnCell(_Cell):
    """The user's step as an engine cell (see the module docstring). An unlisted kind (``register_unlisted``):
    ``cell_type("own")`` answers its label, colour and settings, but no config names it and no network builds
    it, since an instance wraps one user object; ``step_name`` is how notes name that step."""

    name, label, color = "own", "Your cell", "#CC79A7"  # Okabe-Ito reddish purple
    gate_names = ()
    keep_gate = None
    settings = frozenset()
    diagonal = False

    def __init__(self, step, *, input_size: int, hidden_size: int, k: int, single: bool, dtype: torch.dtype,
                 params: dict | None = None):
        super().__init__()
        self.input_size, self.hidden_size, self.layer_norm = input_size, hidden_size, False
        self.state_names = ("h",) + tuple(f"s{i}" for i in range(1, k))
        self.single = single  # the user's state is one tensor (not a tuple)
        self.step_name = _describe(step)  # how notes name the user's step (the kind's label stays "Your cell")
        self.jacobian_method = None  # set by the first call that succeeds: "jacrev", "jacfwd" or "backward"
        self.products_dense = False  # set where VJPSteps had to form the Jacobians (vmap could not run the vjp)
        self.sample_bytes = 16 * k * hidden_size * 8  # one sequence's saved step tensors (measured by validate)
        self.params = nn.ParameterDict()
        self.buffers_ = {}
        if isinstance(step, nn.Module):
            module = copy.deepcopy(step)  # the user's own module is never run or changed
            for _, m in module.named_modules():
                for n, p in list(m._parameters.items()):
                    if p is not None:
                        m._parameters[n] = _as_parameter(p, dtype)
                for n, b in list(m._buffers.items()):
                    if b is not None:
                        m._buffers[n] = _cast(b.detach().cpu(), dtype)
            module.eval()  # dropout and batch statistics off: the deterministic step is analysed
            self.module = module
            self._how = (None, (), {})  # self.module(x, s)
        elif isinstance(step, functools.partial):
            args = [self._hold(f"arg{i}", a, dtype) for i, a in enumerate(step.args)]
            kws = {n: self._hold(n, a, dtype) for n, a in step.keywords.items()}
            self._how = (step.func, args, kws)  # f(*args, x, s, **kws)
        else:
            kws = {n: self._hold(n, a, dtype) for n, a in (params or {}).items()}
            self._how = (step, [], kws)  # step(x, s, **params)

    def _call(self, x: Tensor, s):
        """The user's step on this cell's own copies of its tensors (a method, not a closure: a deep copy of the
        cell, as param_sensitivity makes, then runs on the copy's parameters)."""
        f, args, kws = self._how
        if f is None:
            return self.module(x, s)
        return f(*[self._get(a) for a in args], x, s, **{n: self._get(a) for n, a in kws.items()})

    def state_size(self, H: int) -> int:  # this instance's k, not the class's default
        return len(self.state_names) * H

    def state_blocks(self, H: int) -> dict[str, slice]:
        return {"hh": slice(0, H), **({"state": slice(0, self.state_size(H))} if len(self.state_names) > 1 else {})}

    def _hold(self, name: str, value, dtype):
        """A tensor argument becomes a parameter of the cell (cast to the analysis dtype); others stay as they are."""
        if isinstance(value, Tensor):
            key = name.replace(".", "_")
            p = _as_parameter(value, dtype)
            if isinstance(p, nn.Parameter):
                self.params[key] = p
            else:
                self.buffers_[key] = p
            return ("tensor", key)
        return ("value", value)

    def _get(self, held):
        kind, v = held
        if kind == "value":
            return v
        return self.params[v] if v in self.params else self.buffers_[v]

    # ---- the step ----------------------------------------------------------------------------------------
    def project(self, x_t: Tensor) -> Tensor:
        # xp_t = x_t: the step owns its input weights
        return x_t

    def step(self, xp_t: Tensor, state: State) -> State:
        """state_t = step(x_t, state_{t-1}), the user's state form in and out, checked (one line per problem)."""
        out = self._call(xp_t, state[0] if self.single else tuple(state))
        return check_state(out, state, self.single, "the step")

    def _forward(self, xp_t: Tensor, state: State):
        return self.step(xp_t, state), {}

    def gates(self, xp_t: Tensor, state: State) -> dict[str, Tensor]:
        return {}  # no gates: the step is opaque

    def recurrent_blocks(self) -> dict[str, Tensor]:
        return {}  # no fixed recurrent matrix: the Jacobian is the step's own at each state

    def extra_repr(self) -> str:
        return (f"step={self.step_name}, input_size={self.input_size}, "
                f"state={len(self.state_names)} x {self.hidden_size}")

    # ---- Jacobians ---------------------------------------------------------------------------------------
    def _flat_step(self, x1: Tensor, s1: Tensor) -> Tensor:
        """One sequence: x (I,), state row (S,) -> state row (S,)."""
        H = self.hidden_size
        st = tuple(s1[i * H:(i + 1) * H].unsqueeze(0) for i in range(len(self.state_names)))  # k x (1, H)
        return torch.cat(self.step(x1.unsqueeze(0), st), dim=-1).squeeze(0)  # (S,)

    def jacobian(self, xp_t: Tensor, state: State) -> Tensor:
        """d state_t / d state_{t-1}, (..., S, S), rows state_t, columns state_{t-1}: every leading index at once."""
        lead = xp_t.shape[:-1]
        x = xp_t.reshape(-1, xp_t.shape[-1])  # (N, I), N = prod(lead)
        s = torch.cat(state, dim=-1).reshape(x.shape[0], -1)  # (N, S)
        S = s.shape[-1]
        # rows per call: vmap carries S tangents of every intermediate of the step (sample_bytes each)
        n = max(1, JAC_BYTES // max(1, S * self.sample_bytes))
        J = torch.cat([self._jacobian_rows(x[i:i + n], s[i:i + n]) for i in range(0, x.shape[0], n)])  # (N, S, S)
        return J.reshape(*lead, S, S)

    jacobian_autograd = jacobian

    @property
    def jacobian_text(self) -> str:
        """How the products were computed (JacobianResult.method)."""
        if self.products_dense:
            how = ("one backward pass per state coordinate" if self.jacobian_method == "backward" else
                   f"vmap({self.jacobian_method})")
            return f"per-step Jacobians of your step formed ({how}: vmap could not run its vjp), dense products"
        return "torch.func: vector-Jacobian products of your step (vjp, vmapped over the rows of each product)"

    def _jacobian_rows(self, x: Tensor, s: Tensor) -> Tensor:
        methods = (self.jacobian_method,) if self.jacobian_method else ("jacrev", "jacfwd", "backward")
        first = None
        for m in methods:
            try:
                J = self._jacobian_by(m, x, s)
            except ConfigError:
                raise
            except Exception as e:  # noqa: BLE001 - the next method, or one line naming the first failure
                first = first or e
                continue
            self.jacobian_method = m
            return J
        raise ConfigError(f"the step could not be differentiated with respect to its state ({type(first).__name__}: "
                          f"{_first_line(first)}): {NOT_DIFFERENTIABLE}")

    def _jacobian_by(self, method: str, x: Tensor, s: Tensor) -> Tensor:
        if method in ("jacfwd", "jacrev"):
            jac = torch.func.jacfwd if method == "jacfwd" else torch.func.jacrev
            with torch.enable_grad(), warnings.catch_warnings():
                # torch's forward-mode decompositions are scripted on first use: its own deprecation notice
                warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated",
                                        category=DeprecationWarning)
                return torch.func.vmap(jac(self._flat_step, argnums=1))(x, s).detach()  # (N, S, S)
        # rows of J for every sequence at once: sequences are independent, so d(sum_n out_n[i])/ds = J[:, i, :]
        H, k = self.hidden_size, len(self.state_names)
        with torch.enable_grad():
            s = s.detach().requires_grad_(True)
            out = torch.cat(self.step(x, tuple(s[:, i * H:(i + 1) * H] for i in range(k))), -1)  # (N, S)
            rows = []
            for i in range(out.shape[-1]):
                (g,) = torch.autograd.grad(out[:, i].sum(), s, retain_graph=True, allow_unused=True)
                rows.append(torch.zeros_like(s) if g is None else g)
        return torch.stack(rows, -2)  # (N, S, S)

    def chunk_steps(self, xp: Tensor, st: State) -> "VJPSteps":
        """P J_c and J_c^T Q for a chunk xp (C, b, I), states (C, b, H) each, by vector-Jacobian products."""
        return VJPSteps(self, xp, st)

    def vjp_steps(self, xp: Tensor, st: State) -> "VJPSteps":
        """v J_c for a chunk, v (B, S) (``steps(c, v)``) or a block (n, B, S) (``steps.vjp(c, V)``)."""
        return VJPSteps(self, xp, st)


class VJPSteps:
    r"""The per-step Jacobians of a chunk applied by ``torch.func.vjp`` of the step, never formed:

        right(c, P) = P J_c          P (b, R, S): the R rows of P as R cotangents, vmapped (in slices of rows
                                     whose tangents stay under JAC_BYTES): as many backward passes as jacrev
                                     would take to form J_c, without the (b, R, S) x (S, S) product after it
        left_t(c, Q) = J_c^T Q       Q (b, S, R), as (Q^T J_c)^T
        vjp(c, v) = v J_c            v (b, S) or (n, b, S); also the call ``steps(c, v)``
        jvp(c, V) = (J_c V^T)^T      V (n, b, S): forward mode of the step (the sensitivity view's tangents)

    One step's vjp function is kept (right and left_t at the same step share its forward). Where vmap cannot run
    the step's backward, the chunk's Jacobians are formed (``OwnCell.jacobian``, its own fallbacks) and applied
    densely. Measured (LSTM step, H=128, 64 steps x 8 sequences, one thread): 0.48 s against 0.74 s for
    vmap(jacrev) and the dense products.
    """

    def __init__(self, cell: OwnCell, xp: Tensor, st: State):
        self.cell, self.xp, self.st = cell, xp, st
        self._at, self._back, self.dense = None, None, None

    def __len__(self) -> int:
        return self.xp.shape[0]

    def _step_at(self, c: int):
        """(f, s0): step c on the state row (b, S) -> (b, S), and the state before it."""
        H, k = self.cell.hidden_size, len(self.cell.state_names)
        xc = self.xp[c]

        def f(s: Tensor) -> Tensor:
            return torch.cat(self.cell.step(xc, tuple(s[:, i * H:(i + 1) * H] for i in range(k))), -1)  # (b, S)
        return f, torch.cat([v[c] for v in self.st], -1)

    def _backward(self, c: int):
        if self._at != c:
            with torch.enable_grad():
                _, self._back = torch.func.vjp(*self._step_at(c))
            self._at = c
        return self._back

    def vjp(self, c: int, V: Tensor) -> Tensor:
        if V.dim() == 2:  # (b, S)
            return self.vjp(c, V.unsqueeze(0)).squeeze(0)
        if self.dense is None:
            try:
                back = self._backward(c)
                b, S = V.shape[1], V.shape[2]
                n = max(1, JAC_BYTES // max(1, b * self.cell.sample_bytes))  # cotangent rows per vmapped call
                with torch.enable_grad():
                    return torch.cat([torch.func.vmap(back)(V[i:i + n].to(self.xp.dtype))[0].detach()
                                      for i in range(0, V.shape[0], n)])  # (n, b, S)
            except ConfigError:
                raise
            except Exception:  # noqa: BLE001 - vmap cannot run the step's backward: form the Jacobians instead
                from rnn_models.cells.base import DenseSteps
                self.dense = DenseSteps(self.cell.jacobian(self.xp, self.st))
                self.cell.products_dense = True
        return self.dense.vjp(c, V)

    __call__ = vjp

    def jvp(self, c: int, V: Tensor) -> Tensor:
        """(J_c V^T)^T for V (n, b, S): forward-mode products of the step (``torch.func.jvp``, vmapped over the n
        rows in slices under JAC_BYTES); the chunk's formed Jacobians where vmap cannot run it. Forward AD's dual
        levels are process-wide: the caller holds ``analysis.tangent_pass.FORWARD_AD`` (the sensitivity view)."""
        if self.dense is None:
            try:
                f, s0 = self._step_at(c)
                b = V.shape[1]
                n = max(1, JAC_BYTES // max(1, b * self.cell.sample_bytes))  # tangent rows per vmapped call
                one = torch.func.vmap(lambda v: torch.func.jvp(f, (s0,), (v,))[1])
                return torch.cat([one(V[i:i + n].to(self.xp.dtype)).detach()
                                  for i in range(0, V.shape[0], n)])  # (n, b, S)
            except ConfigError:
                raise
            except Exception:  # noqa: BLE001 - vmap cannot run the step's forward mode: form the Jacobians instead
                from rnn_models.cells.base import DenseSteps
                self.dense = DenseSteps(self.cell.jacobian(self.xp, self.st))
                self.cell.products_dense = True
        return self.dense.jvp(c, V)

    def right(self, c: int, P: Tensor) -> Tensor:
        # P J_c: the rows of P (b, R, S) as cotangents (R, b, S)
        return self.vjp(c, P.transpose(0, 1)).transpose(0, 1)

    def left_t(self, c: int, Q: Tensor) -> Tensor:
        # J_c^T Q = (Q^T J_c)^T
        return self.right(c, Q.mT).mT


def _first_line(e: BaseException | None) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200] if e is not None else ""


def check_state(out, state: State, single: bool, who: str) -> State:
    """The step's output as the engine's tuple, checked against the state it was given (same form, shapes, real
    floating dtype); each problem one ConfigError line naming what is wrong."""
    given = f"one tensor {tuple(state[0].shape)}" if single else \
        f"a tuple of {len(state)} tensors {tuple(state[0].shape)}"
    if single:
        if not isinstance(out, Tensor):
            raise ConfigError(f"{who} returned {_kind(out)}; the state is {given}: it must return the same")
        out = (out,)
    elif not isinstance(out, (tuple, list)) or len(out) != len(state):
        raise ConfigError(f"{who} returned {_kind(out)}; the state is {given}: it must return the same")
    for i, (o, s) in enumerate(zip(out, state)):
        name = "the state" if single else f"state[{i}]"
        if not isinstance(o, Tensor):
            raise ConfigError(f"{who} returned {name} as {_kind(o)}: it must be a tensor")
        if o.is_complex():
            raise ConfigError(f"{who} returned a complex {name}: the analysis needs a real state; {COMPLEX_HINT}")
        if not o.is_floating_point():
            raise ConfigError(f"{who} returned {name} as {o.dtype}: an integer state is not differentiable; "
                              f"{NOT_DIFFERENTIABLE}")
        if o.shape != s.shape:
            raise ConfigError(f"{who} returned {name} of shape {tuple(o.shape)} for a state of shape "
                              f"{tuple(s.shape)}: a step must keep the state's shape (B, H)")
        if o.dtype != s.dtype:
            raise ConfigError(f"{who} returned {name} in {o.dtype} for a {s.dtype} state: its weights were not cast "
                              "to the analysis dtype (give them with params=, as a functools.partial or an nn.Module)")
    return tuple(out)


def _kind(obj) -> str:
    if isinstance(obj, Tensor):
        return f"one tensor {tuple(obj.shape)}"
    if isinstance(obj, (tuple, list)):
        return f"a {type(obj).__name__} of {len(obj)}"
    return f"a {type(obj).__name__}"
