r"""Watch any training loop: per-time-step ||dL/dh_t|| of the training loss at every recorded step, Jacobian
spectra, memory horizon and W_hh eigenvalues every ``every`` steps, written to a run directory.

    w = watch(model, log_dir="runs/lm", every=100)
    for step, (x, y) in enumerate(batches):
        loss = crit(model(x), y); opt.zero_grad(); loss.backward()
        w.record(step, loss=loss)                 # before opt.step(): the weights that made this gradient
        gn = clip_grad_norm_(model.parameters(), 0.25); w.note(step, grad_norm=gn, clipped=gn > 0.25)
        opt.step()
    w.close()

Every nn.RNN/LSTM/GRU in the model is watched (or the one named ``module=``). A forward hook keeps the module's
input, initial state and output of the last forward pass run with gradients; a hook on that output keeps the
gradient the backward pass brought to it, e_t = dL/dy_t (the direct part only). ``record`` turns it into the
TOTAL derivative of every layer through the recurrence (analysis.watch_chain: G_{t-1} = e_{t-1} + G_t J_t), equal
to analyze() on the same weights, batch and loss (tests/test_watch.py), and appends per layer

    log10_grad_norm[t] = mean_b log10 ||dL/dh_t^{(b)}||      (log10 of the geometric mean over the batch)

Every ``every`` steps (step % every == 0), on the batch's first sequence (analysis.watch_probe): log10 sigma_max
of d h_{T-1} / d h_{T-1-k} at ``num_lags`` log-spaced lags k (the engine's ``jacobian_products``), the memory
horizon (first lag with sigma_max < ``horizon_threshold``) and the eigenvalues of each H x H gate block of W_hh.
The file format is documented in analysis.run_files; ``load_run(dir)`` reads it back.

``background=True`` (default False): ``record`` checks the step and snapshots what the chain needs (a copy of the
module's weights as they are before opt.step(); clones of x, h0, y and e = dL/dy: 4.3 MB for the word LM's
2x200 LSTM at T=35, B=20), hands the chain, the record's line and any due probe to one worker thread
(analysis.watch_worker) and returns. It MOVES the work to another core; it does not remove it: the process's CPU
time per step is the synchronous record's and a little more (the snapshot), and on a machine whose cores are all
busy training the synchronous cost applies (plus contention). Records are written in step order. At most
``pending`` records wait (default 2): a ``record`` that finds the queue full BLOCKS until the worker takes one, so
memory stays at ``pending`` + 1 snapshots; ``close`` notes how often it blocked (``background_blocked``,
``background_blocked_s``, ``background_records`` at the last recorded step). ``flush()``, ``close()``, the
``with`` exit and interpreter exit wait for the queue; a kill -9 keeps every line already written (the up to
``pending`` + 1 records queued or in the worker are lost). A failure in the worker is raised at the next
``record`` / ``flush`` / ``close`` as one line (``WatchError``).
Not the default: it pays only with an idle core. On the lab's 2 cores (training at one intra-op thread) at load ~1
the word LM's watched step at 961 tokens cost -0.02..+0.14 of a step (median 0.04; synchronous 0.65-0.75), with
the cores shared with other processes (load 4-7) 0.8-1.0, worse than synchronous; torch's default intra-op setting
gives the training step every core already, where the worker only competes. And the synchronous record leaves
every record complete at a kill -9 or an exception (benchmarks/bench_watch_overhead.py --background).
"""
from __future__ import annotations

import atexit
import os
import sys

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from rnn_models.config import ConfigError

from .own_model import RECURRENT, _module_arch
from .run_files import RunWriter
from .watch_chain import engine_net, engine_total, total_grads
from .watch_probe import _batched, _time_major, probe_row
from .watch_worker import RecordWorker, Snap, WatchError, cloned, frozen


class _Capture:
    """What one module's last gradient-carrying forward left: x, hx, output, and the gradient it received."""

    def __init__(self):
        self.x = self.hx = self.out = self.grad = None
        self.calls = 0
        self.versions = ()
        self.packed = False


class Watch:
    """Records a training loop into a run directory; see the module docstring. Use ``watch(...)`` to make one."""

    def __init__(self, model: nn.Module, log_dir: str, *, every: int = 100, module: str | None = None,
                 num_lags: int = 12, horizon_threshold: float = 1e-3, overwrite: bool = False,
                 tensorboard: bool = False, background: bool = False, pending: int = 2):
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model must be a torch nn.Module holding an nn.RNN/LSTM/GRU; got {type(model).__name__}")
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ConfigError(f"every={every!r}: must be an integer >= 1 (probe the Jacobians every that many steps)")
        if not isinstance(num_lags, int) or not 2 <= num_lags <= 512:
            raise ConfigError(f"num_lags={num_lags!r}: must be an integer in [2, 512]")
        if not (isinstance(horizon_threshold, (int, float)) and 0 < horizon_threshold < 1):
            raise ConfigError(f"horizon_threshold={horizon_threshold!r}: must be in (0, 1)")
        if not isinstance(background, bool):
            raise ConfigError(f"background={background!r}: must be True or False")
        if not isinstance(pending, int) or isinstance(pending, bool) or not 1 <= pending <= 64:
            raise ConfigError(f"pending={pending!r}: must be an integer in [1, 64] (records waiting for the worker)")
        self.modules = self._find(model, module)
        self.every, self.num_lags, self.threshold = every, num_lags, float(horizon_threshold)
        self.layers = [f"{n}.l{l}" if n else f"l{l}" for n, m in self.modules.items() for l in range(m.num_layers)]
        header = {"layers": self.layers, "every": every, "horizon_threshold": self.threshold, "num_lags": num_lags,
                  "modules": {n or "(model)": {**_module_arch(m)[0], "mode": m.mode, "dropout": m.dropout,
                                               "batch_first": m.batch_first} for n, m in self.modules.items()}}
        self._caps = {n: _Capture() for n in self.modules}
        self._twins: dict = {n: {} for n in self.modules}
        self._said: set[str] = set()
        self._handles = [m.register_forward_hook(self._hook(n), with_kwargs=True) for n, m in self.modules.items()]
        self.tb = None
        if tensorboard:  # checked first: a missing TensorBoard leaves no half-made run directory
            from .watch_tensorboard import TensorBoardOut
            TensorBoardOut.check()
        self.writer = RunWriter(log_dir, header, overwrite=overwrite)
        if tensorboard:
            self.tb = TensorBoardOut(os.path.join(log_dir, "tensorboard"))
        self.log_dir = log_dir
        self.closed = False
        self._worker, self._submitted, self._last_step = None, 0, None
        if background:
            self._worker = RecordWorker(pending)
            atexit.register(self._at_exit)

    @staticmethod
    def _find(model: nn.Module, module: str | None) -> dict[str, nn.RNNBase]:
        found = {n: m for n, m in model.named_modules() if isinstance(m, RECURRENT)}
        if module is not None:
            if module not in found:
                raise ConfigError(f"module={module!r} is not an nn.RNN/LSTM/GRU of the model; it has "
                                  f"{', '.join(repr(n) for n in found) or 'none'}")
            found = {module: found[module]}
        if not found:
            raise ConfigError(f"the model ({type(model).__name__}) holds no nn.RNN/LSTM/GRU module: nothing to watch")
        for m in found.values():
            _module_arch(m)  # refuses proj_size and bias=False, one line each
        return found

    def _hook(self, name: str):
        cap = self._caps[name]

        def hook(mod, args, kwargs, output):
            out = output[0]
            if not torch.is_grad_enabled() or not isinstance(out, (Tensor, PackedSequence)):
                return
            x = args[0] if args else kwargs.get("input")
            hx = args[1] if len(args) > 1 else kwargs.get("hx")
            cap.calls += 1
            cap.packed = isinstance(x, PackedSequence)
            if cap.packed or not out.requires_grad:
                cap.grad = None
                return
            cap.x, cap.out, cap.grad = x.detach(), out.detach(), None
            cap.hx = None if hx is None else (tuple(h.detach() for h in hx) if isinstance(hx, tuple) else hx.detach())
            cap.versions = tuple(p._version for p in mod.parameters())

            def grad_hook(g):
                cap.grad = g.detach()
            out.register_hook(grad_hook)
        return hook

    # ---- per step ----------------------------------------------------------------------------------------
    def record(self, step: int, loss=None) -> None:
        """Append this backward pass's per-time-step ||dL/dh_t|| of every watched layer (call it after
        loss.backward(), before opt.step()); every ``every`` steps also the Jacobian / spectrum probe.
        background=True: checks and snapshots here, the rest in the worker; blocks while ``pending`` records wait."""
        if self.closed:
            raise ConfigError("record: this watch is closed")
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ConfigError(f"record: step={step!r} must be an integer >= 0")
        if self._worker is not None:
            self._worker.raise_error()
        msgs = []
        snaps = {}
        for name, rnn in self.modules.items():
            cap = self._caps[name]
            who = f"module {name!r}" if name else "the model"
            if cap.packed:
                raise ConfigError(f"record(step={step}): {who} ran on a PackedSequence; watch needs padded tensors")
            if cap.grad is None:
                raise ConfigError(f"record(step={step}): no backward pass reached the output of {who} since its last "
                                  "forward with gradients: call loss.backward() before w.record(step)")
            if tuple(p._version for p in rnn.parameters()) != cap.versions:
                raise ConfigError(f"record(step={step}): the weights of {who} changed since its forward pass (opt.step() "
                                  "before w.record?): call w.record(step) after loss.backward(), before opt.step()")
            if cap.calls > 1:
                msgs.append(f"{who} ran {cap.calls} times before step {step}'s record: only its last call is recorded")
            if rnn.training and rnn.dropout > 0 and rnn.num_layers > 1:
                msgs.append(f"{who}: dropout={rnn.dropout:g} between layers is active in training and its masks are "
                            "not visible: the chain runs on the network without it (the top layer's direct gradient "
                            "is the true one)")
            snaps[name] = self._snapshot(name, probe=step % self.every == 0)
            cap.grad, cap.calls = None, 0
        msgs = [m for m in msgs if m not in self._said]
        self._said.update(msgs)
        loss = _scalar(loss, "loss")
        if self._worker is None:
            self._write(step, loss, snaps, msgs)
        else:
            self._worker.submit(f"record of step {step}", self._write, step, loss, snaps, msgs)
            self._submitted += 1
            self._last_step = step

    def _snapshot(self, name: str, probe: bool) -> Snap:
        """The module and its last capture: live on the training thread, copies for the worker (the weights as
        they are now, before opt.step() changes them in place; the tensors cloned, whoever reuses them next).
        The engine's network (a probe; a bidirectional module's chain) is made here, on the training thread, in
        both modes: its init draws from the global RNG, which the worker must never touch (the loop's dropout
        draws from it concurrently)."""
        rnn, cap = self.modules[name], self._caps[name]
        net = _engine_net(rnn, cap.x.dtype) if probe or rnn.bidirectional else None
        if self._worker is None:
            return Snap(rnn, cap.x, cap.hx, cap.out, cap.grad, net)
        return Snap(frozen(rnn), *(cloned(t) for t in (cap.x, cap.hx, cap.out, cap.grad)), net)

    def _write(self, step: int, loss, snaps: dict, msgs: list) -> None:
        """The chain of every module, the record's line (and TensorBoard's), the probe when due."""
        norms = {}
        T = 0
        for name, snap in snaps.items():
            for g in self._totals(snap, name):
                lg = torch.log10(torch.linalg.vector_norm(g.double(), dim=-1)).mean(1)  # (T,) mean_b log10 ||.||
                norms[self.layers[len(norms)]] = lg.cpu().tolist()
                T = max(T, g.shape[0])
        rec = {"step": step, "loss": loss, "T": T, "log10_grad_norm": norms}
        if msgs:
            rec["messages"] = msgs
        self.writer.append("records", rec)
        if self.tb is not None:
            self.tb.record(step, rec["loss"], norms)
        if step % self.every == 0:
            self._probe(step, snaps)

    def _totals(self, snap: Snap, name: str) -> list[Tensor]:
        rnn = snap.rnn
        x, e, out = (_time_major(t, rnn.batch_first) for t in (snap.x, snap.grad, snap.out))
        hx = _batched(snap.hx)
        if rnn.bidirectional:
            return engine_total(rnn, x, hx, e, net=snap.net)
        return total_grads(rnn, x, hx, e, self._twins[name], top_out=out)

    def note(self, step: int, **values) -> None:
        """Append what the loop wants on the timeline at ``step`` (numbers, bools, short strings), e.g.
        ``grad_norm=gn, clipped=gn > 0.25, lr=...``; tensors are read with .item()."""
        if self.closed:
            raise ConfigError("note: this watch is closed")
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ConfigError(f"note: step={step!r} must be an integer >= 0")
        row = {"step": step}
        for k, v in values.items():
            if isinstance(v, Tensor):
                if v.numel() != 1:
                    raise ConfigError(f"note: {k} is a tensor of shape {tuple(v.shape)}; notes are single values")
                v = v.item()
            if isinstance(v, str):
                v = v[:200]
            elif not isinstance(v, (bool, int, float, np.number, np.bool_)) and v is not None:
                raise ConfigError(f"note: {k}={type(v).__name__}: notes are numbers, bools or short strings")
            row[k] = v
        self.writer.append("notes", row)

    # ---- every `every` steps ------------------------------------------------------------------------------
    def probe(self, step: int) -> None:
        """Jacobian sigma_max by lag, memory horizon and W_hh eigenvalues per gate block, at the current weights,
        on the last captured batch's first sequence (background=True: of a snapshot, in the worker)."""
        if self.closed:
            raise ConfigError("probe: this watch is closed")
        snaps = {n: self._snapshot(n, probe=True) for n in self.modules}
        if self._worker is None:
            self._probe(step, snaps)
        else:
            self._worker.submit(f"probe of step {step}", self._probe, step, snaps)

    def _probe(self, step: int, snaps: dict) -> None:
        row = probe_row(step, snaps, self.layers, self.num_lags, self.threshold)
        self.writer.append("probes", row)
        if self.tb is not None:
            self.tb.probe(step, row["lags"], row["log10_sigma_max"], row["horizon"])

    def flush(self) -> None:
        """background=True: wait until every record handed over is written; raise a worker failure (one line)."""
        if self._worker is not None and not self.closed:
            self._worker.wait()
            self._worker.raise_error()

    def close(self) -> None:
        """Remove the hooks, wait for the background worker's queue (its blocking count goes into the notes), close
        the files (the run directory stays readable); a worker failure not yet raised is raised after that."""
        if self.closed:
            return
        for h in self._handles:
            h.remove()
        w = self._worker
        if w is not None:
            atexit.unregister(self._at_exit)
            w.close()
            if self._last_step is not None:
                self.writer.append("notes", {"step": self._last_step, "background_records": self._submitted,
                                             "background_blocked": w.blocked,
                                             "background_blocked_s": round(w.blocked_s, 4)})
        self.writer.close()
        if self.tb is not None:
            self.tb.close()
        self.closed = True
        if w is not None:
            w.raise_error()

    def _at_exit(self) -> None:
        try:
            self.close()
        except WatchError as e:
            print(e, file=sys.stderr)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()
        else:  # the loop's own exception goes on; a worker failure is said, not put in its place
            try:
                self.close()
            except WatchError as e:
                print(e, file=sys.stderr)


def _engine_net(rnn: nn.RNNBase, dtype: torch.dtype):
    """``engine_net`` with the global RNG state put back after it (its cells' init draws from it): watching does
    not change the loop's random numbers (dropout masks, shuffles)."""
    with torch.random.fork_rng(devices=[]):
        return engine_net(rnn, dtype)


def _scalar(v, what: str):
    if v is None:
        return None
    if isinstance(v, Tensor):
        if v.numel() != 1:
            raise ConfigError(f"record: {what} is a tensor of shape {tuple(v.shape)}; pass the scalar loss")
        v = v.item()
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"record: {what}={type(v).__name__} is not a number") from None


def watch(model: nn.Module, log_dir: str, *, every: int = 100, module: str | None = None, num_lags: int = 12,
          horizon_threshold: float = 1e-3, overwrite: bool = False, tensorboard: bool = False,
          background: bool = False, pending: int = 2) -> Watch:
    """Start watching ``model``'s recurrent module(s), writing to ``log_dir``; see the module docstring.
    ``tensorboard=True`` also writes scalars and images for TensorBoard (analysis.watch_tensorboard).
    ``background=True`` runs the records' chains in one worker thread, at most ``pending`` waiting (the module
    docstring: it moves the work to another core, it does not remove it)."""
    return Watch(model, log_dir, every=every, module=module, num_lags=num_lags,
                 horizon_threshold=horizon_threshold, overwrite=overwrite, tensorboard=tensorboard,
                 background=background, pending=pending)
