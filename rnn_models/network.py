r"""The stacked (optionally bidirectional) recurrent network and its time loop.

``RecurrentNetwork(config)(x)`` runs every layer over the whole sequence and returns a ``Trace`` holding every
state it passed through, so the analysis can differentiate with respect to each h_t in one backward pass and
evaluate per-step Jacobians at the states actually visited.

Shapes::

    x        (T, B, I)
    outputs  (T, B, D*H)      D = 2 if bidirectional else 1; the last layer's [h_fwd; h_bwd]
    Trace.runs[l][d]          one ``Run`` per layer l and direction d (0 forward, 1 backward)

Parameter names match ``torch.nn.RNN/LSTM/GRU`` through ``torch_state_dict`` / ``load_torch_state_dict``
(``weight_ih_l{k}``, ``..._reverse``), so a trained torch model's weights load as they are.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .cells import State, _Cell, cell_names, cell_type
from .config import ModelConfig
from .init import initialize_cell


@dataclass
class Run:
    """One layer, one direction, in processing order (the backward direction runs t = T-1 .. 0).

    xp      list of T projected inputs, each (B, G)
    states  list of T + 1 state tuples; states[0] is the initial state, states[s + 1] follows input s
    reverse True for the backward direction: processing step s is time T - 1 - s
    xp_stack, state_stack  optional: the same tensors stacked, xp (T, B, G) and per state entry (T + 1, B, H)
            (a run computed at once, ``_Cell.run_states``: then xp and states are views of these), so consumers
            slice them rather than stack T tensors (``stacked``, ``state_series``); an entry of xp or states
            replaced since (a test that plants a NaN) makes those stack the lists again
    """

    cell: _Cell
    xp: list[Tensor]
    states: list[State]
    reverse: bool
    xp_stack: Tensor | None = None
    state_stack: tuple[Tensor, ...] | None = None

    def __post_init__(self):
        # the list entries the stacks hold (identity: an entry replaced later is seen)
        self._views = (tuple(self.xp), tuple(self.states)) if self.xp_stack is not None else None

    def _stacks_hold(self, t0: int, t1: int) -> bool:
        """The stacks hold xp[t0:t1] and states[t0:t1 + 1] as the lists have them now."""
        if self._views is None or len(self.xp) != len(self._views[0]):
            return False
        return (all(a is b for a, b in zip(self.xp[t0:t1], self._views[0][t0:t1]))
                and all(a is b for a, b in zip(self.states[t0:t1 + 1], self._views[1][t0:t1 + 1])))

    def h_in_time_order(self) -> list[Tensor]:
        hs = [s[0] for s in self.states[1:]]
        return hs[::-1] if self.reverse else hs

    def stacked(self, t0: int = 0, t1: int | None = None) -> tuple[Tensor, tuple[Tensor, ...]]:
        """(xp, states before each step) for processing steps t0..t1-1: (C, B, G) and per state entry (C, B, H)
        (slices of the stacks where the run has them, else stacked here)."""
        t1 = len(self.xp) if t1 is None else t1
        if self._stacks_hold(t0, t1):
            return self.xp_stack[t0:t1], tuple(s[t0:t1] for s in self.state_stack)
        xp = torch.stack(self.xp[t0:t1], 0)  # (C, B, G)
        return xp, tuple(torch.stack([st[i] for st in self.states[t0:t1]], 0) for i in range(len(self.states[0])))

    def state_series(self, i: int = 0) -> Tensor:
        """State entry i after every step, (T, B, H), in processing order."""
        if self._stacks_hold(0, len(self.xp)):
            return self.state_stack[i][1:]
        return torch.stack([st[i] for st in self.states[1:]], 0)


@dataclass
class Trace:
    outputs: Tensor
    runs: list[list[Run]]


class RecurrentNetwork(nn.Module):
    """Stacked cells built from one ``ModelConfig``; ``layers[l][d]`` is the cell of layer l, direction d."""

    def __init__(self, config: ModelConfig, dtype: torch.dtype | None = None, *, init: bool = True):
        """``init=False``: every parameter zero, for a caller that loads weights next (``load_torch_state_dict``):
        the random initialisation (float64 draws for every weight) would only be overwritten."""
        super().__init__()
        self.config = config
        D = 2 if config.bidirectional else 1
        gen = torch.Generator().manual_seed(config.seed)
        self.layers = nn.ModuleList()
        for l in range(config.num_layers):
            in_size = config.input_size if l == 0 else D * config.hidden_size
            dirs = nn.ModuleList()
            for _ in range(D):
                cell = cell_type(config.cell).from_config(in_size, config.hidden_size, config, dtype)
                if init:
                    initialize_cell(cell, config, gen)
                else:
                    with torch.no_grad():
                        for p in cell.parameters():
                            p.zero_()
                dirs.append(cell)
            self.layers.append(dirs)

    @property
    def num_directions(self) -> int:
        return len(self.layers[0])

    def forward(self, x: Tensor, initial: list[list[State]] | None = None, *, views: bool = False,
                detach_every: int = 0) -> Trace:
        """Run the network over x (T, B, I).

        initial   optional initial states per layer and direction (default zeros)
        views     feed each step a fresh view of its state (``h.view_as(h)``) and record that view, so
                  ``torch.autograd.grad(loss, h_view)`` is the total dL/dh_t through every later path
        detach_every  truncated BPTT: k > 0 cuts the recurrent gradient every k steps, windows aligned to
                  end at the last step (so the final-step loss sees exactly the last k steps)
        """
        if x.dim() != 3:
            raise ValueError(f"inputs must have shape (T, B, input_size); got {tuple(x.shape)}")
        if x.shape[-1] != self.config.input_size:
            raise ValueError(f"inputs have input_size={x.shape[-1]} but the model expects {self.config.input_size}")
        T, B, _ = x.shape
        runs = []
        layer_in = x
        for l, dirs in enumerate(self.layers):
            layer_runs = []
            for d, cell in enumerate(dirs):
                state0 = initial[l][d] if initial is not None else cell.init_state(B, x.dtype, x.device)
                seq = layer_in.flip(0) if d == 1 else layer_in
                layer_runs.append(run_cell(cell, seq, state0, views=views, reverse=(d == 1),
                                           detach_every=detach_every))
            runs.append(layer_runs)
            outs = [r.state_series(0).flip(0) if r.reverse else r.state_series(0) for r in layer_runs]  # D x (T, B, H)
            layer_in = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)  # (T, B, D*H)
        return Trace(outputs=layer_in, runs=runs)

    # ---- torch.nn.RNN/LSTM/GRU weights ---------------------------------------------------------------
    def torch_named_parameters(self):
        """(name, parameter) for every parameter, under torch's layer suffixes: weight_hh_l0, ..._reverse, and
        the cells' own extras the same way (a peephole or layer norm: ``ln_h.weight`` -> ``ln_h_weight_l0``)."""
        for l, dirs in enumerate(self.layers):
            for d, cell in enumerate(dirs):
                sfx = f"_l{l}" + ("_reverse" if d == 1 else "")
                for name, p in cell.named_parameters():
                    yield name.replace(".", "_") + sfx, p

    def torch_state_dict(self) -> dict[str, Tensor]:
        """This network's weights under torch.nn.RNN/LSTM/GRU names (only the parameters torch has)."""
        torch_has = ("weight_ih_l", "weight_hh_l", "bias_ih_l", "bias_hh_l")
        return {n: p.detach().clone() for n, p in self.torch_named_parameters() if n.startswith(torch_has)}

    @torch.no_grad()
    def load_torch_state_dict(self, sd: dict[str, Tensor]) -> None:
        """Copy the weights of a torch.nn.RNN/LSTM/GRU ``state_dict()`` into this network."""
        expected = self.torch_state_dict()
        missing = [k for k in expected if k not in sd]
        if missing:
            raise ValueError(f"state_dict lacks {missing[0]} (and {len(missing) - 1} more keys) for this model")
        for k, v in expected.items():
            if tuple(sd[k].shape) != tuple(v.shape):
                raise ValueError(f"state_dict[{k!r}] has shape {tuple(sd[k].shape)}, the model needs {tuple(v.shape)}")
        for l, dirs in enumerate(self.layers):
            for d, cell in enumerate(dirs):
                sfx = f"_l{l}" + ("_reverse" if d == 1 else "")
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(cell, name).copy_(sd[name + sfx])


def run_cell(cell: _Cell, x: Tensor, state0: State, *, views: bool = False, reverse: bool = False,
             detach_every: int = 0) -> Run:
    """The time loop of one cell over x (T, B, I), processing in the order given.

    detach_every = k > 0: the state entering step s is detached when (T - s) % k == 0 (s > 0), so no gradient
    crosses those boundaries (truncated BPTT in windows of k ending at the last step).
    """
    T = x.shape[0]
    xp_all = cell.project(x)  # (T, B, G) every input at once
    if not (views or detach_every or torch.is_grad_enabled()):
        # no graph wanted: the kind's whole-run route where it has one (a linear recurrence's scan)
        stack = cell.run_states(xp_all, state0)  # per state entry (T + 1, B, H)
        if stack is not None:
            states = list(zip(*(s.unbind(0) for s in stack)))  # T + 1 state tuples (views)
            return Run(cell=cell, xp=list(xp_all.unbind(0)), states=states, reverse=reverse, xp_stack=xp_all,
                       state_stack=tuple(stack))
    # split the projections: indexing one big tensor per step makes the backward O(T^2)
    xp = list(xp_all.unbind(0))  # T x (B, G)
    step = cell.stepper()
    state = tuple(s.view_as(s) for s in state0) if views else state0
    states = [state]
    for s, xp_t in enumerate(xp):
        prev = state
        if detach_every and s > 0 and (T - s) % detach_every == 0:
            # the next step reads stop_gradient(h_{s-1}); h_{s-1} itself still feeds its own outputs
            prev = tuple(v.detach() for v in state)
        state = step(xp_t, prev)
        if views:
            state = tuple(s.view_as(s) for s in state)
        states.append(state)
    return Run(cell=cell, xp=xp, states=states, reverse=reverse)


def infer_config_from_torch_state_dict(sd: dict[str, Tensor]) -> dict:
    """Cell type, sizes, layers and direction of a torch.nn.RNN/LSTM/GRU state_dict (as ModelConfig fields)."""
    if "weight_hh_l0" not in sd or "weight_ih_l0" not in sd:
        raise ValueError("state_dict is not from torch.nn.RNN/LSTM/GRU: it has no weight_ih_l0 / weight_hh_l0")
    if any(k.startswith("weight_hr") for k in sd):
        raise ValueError("state_dict has LSTM projections (proj_size > 0), which this tool does not support")
    if "bias_ih_l0" not in sd:
        raise ValueError("state_dict has no biases (bias=False), which this tool does not support")
    rows, H = sd["weight_hh_l0"].shape
    gates = rows // H
    # the torch-loadable kinds (those declaring torch's modes), told apart by their number of gate blocks
    kinds = [k for k in map(cell_type, cell_names()) if k.torch_modes and len(k.gate_names) == gates]
    cell = kinds[0].name if rows % H == 0 and kinds else None
    if cell is None:
        raise ValueError(f"state_dict weight_hh_l0 has shape {tuple(sd['weight_hh_l0'].shape)}: not an RNN/LSTM/GRU")
    num_layers = 1 + max(int(k.split("_l")[1].split("_")[0]) for k in sd if k.startswith("weight_hh_l"))
    return {"cell": cell, "hidden_size": int(H), "input_size": int(sd["weight_ih_l0"].shape[1]),
            "num_layers": num_layers, "bidirectional": "weight_hh_l0_reverse" in sd}
