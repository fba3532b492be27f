"""ExperimentResult -> the JSON contract (``result.to_dict()``, the command line's ``--json``).

Units: every plain quantity ``x`` has its exact ``log10_x`` twin where it is carried in log space (Jacobian
quantities, ||dL/dh_t|| where the exact chain ran); None stands for a non-finite value (JSON has no NaN).

Renamed in issue 18: ``cell_grad_norm`` is now the TOTAL ||dL/dc_t|| (what ``retain_grad()`` on c_t gives);
the carry path alone (the old ``cell_grad_norm``, exactly 0 at t = T-1) is ``cell_carry_grad_norm``.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from rnn_models.cells import cell_type

from .jacobians import JacobianResult

if TYPE_CHECKING:
    from .engine import ExperimentResult


def _num(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _list(a) -> list:
    return [_num(v) for v in np.asarray(a, dtype=float).ravel()] if a is not None else None


def _log10(a) -> list | None:
    if a is None:
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        return _list(np.log10(np.asarray(a, dtype=float)))


CELL_GRAD_NOTE = ("cell_grad_norm = ||dL/dc_t|| total (through h_t = o_t tanh(c_t) and the later steps: what "
                  "retain_grad() on c_t gives); cell_carry_grad_norm = the part through c_{t+1} alone (0 at t = T-1)")


def _pow10(a) -> list | None:
    if a is None:
        return None
    with np.errstate(over="ignore", under="ignore"):
        return _list(np.power(10.0, np.asarray(a, dtype=float)))


def _jac_dict(j: JacobianResult) -> dict:
    return {
        "lag": list(j.lag),
        "spectral_norm": _pow10(j.spectral_norm),
        "min_singular_value": _pow10(j.min_singular_value),
        "singular_values": [_pow10(row) for row in j.singular_values],
        "log10_spectral_norm": _list(j.spectral_norm),
        "log10_min_singular_value": _list(j.min_singular_value),
        "min_singular_value_reliable": [bool(v) for v in j.min_reliable],
        "state_spectral_norm": _pow10(j.state_spectral_norm),
        "lyapunov_exponents": _list(j.lyapunov),
        "sequences_analysed": j.batch_analysed,
        "method": j.method,
        "nonfinite": j.nonfinite,
        "sigma_max_estimate": j.extras.get("sigma_max_estimate"),
    }


def result_to_dict(r: ExperimentResult) -> dict:
    c = r.config
    kind = cell_type(c.cell)
    spectra = r.spectra
    whole = list(spectra) == ["h"]  # one block, the whole W_hh (the vanilla RNN): plain numbers, not per gate
    if not spectra:  # not computed (views without spectrum / jacobians)
        radius = None
    elif whole:
        radius = _num(spectra["h"]["spectral_radius"])  # None (JSON null) where W_hh holds a NaN / Inf
    else:
        radius = {k: _num(v["spectral_radius"]) for k, v in spectra.items()}
    cell_flow = None
    if kind.c_index is not None and r.jac is not None:  # a memory cell c (the LSTM's) and its keep gate
        cell_flow = {"full": _pow10(r.jac.cell_full), "carousel": _pow10(r.jac.cell_carousel),
                     "log10_full": _list(r.jac.cell_full), "log10_carousel": _list(r.jac.cell_carousel),
                     "note": "full = ||dc_{T-1}/dc_{T-1-k}||_2 (every path); carousel = "
                             f"||prod diag({kind.keep_gate})||_2 (the forget-gate path alone)"}
    gate_flow = None
    if kind.keep_gate is not None and kind.c_index is None and r.jac is not None:  # a keep gate on h (the GRU's)
        gate_flow = {"update_gate_path": _pow10(r.jac.update_gate_path),
                     "log10_update_gate_path": _list(r.jac.update_gate_path),
                     "note": f"||prod diag({kind.keep_gate})||_2: the path through the update gate alone"}
    return {
        "config": c.to_dict(),
        "views": list(r.views),
        "provenance": r.provenance,
        "task": {"name": r.spec.name, "chance_loss": r.spec.chance_loss, "loss_steps": r.spec.loss_steps,
                 "input_size": r.spec.input_size, "output_size": r.spec.output_size},
        "loss_steps": r.spec.loss_steps if c.loss_steps == "auto" else c.loss_steps,
        "probe_loss": _num(r.grad.loss),
        "grad_norm": _pow10(r.grad.log10_grad_norm) if r.grad.log10_grad_norm is not None else _list(r.grad.grad_norm),
        "log10_grad_norm": _list(r.grad.log10_grad_norm if r.grad.log10_grad_norm is not None
                                 else np.log10(np.asarray(r.grad.grad_norm, dtype=float))),
        "grad_norm_method": r.grad.method,
        "grad_norm_underflow_t": r.grad.underflow_t,
        "grad_norm_band": {"p10": _list(r.grad.grad_norm_band[0]), "p90": _list(r.grad.grad_norm_band[1])},
        "log10_grad_norm_band": None if getattr(r.grad, "log10_grad_norm_band", None) is None else
        {"p10": _list(r.grad.log10_grad_norm_band[0]), "p90": _list(r.grad.log10_grad_norm_band[1])},
        "grad_norm_per_layer": [_list(row) for row in r.grad.per_layer],
        "grad_norm_per_direction": [_list(row) for row in r.grad.per_direction],
        "log10_grad_norm_per_layer": [_log10(row) for row in r.grad.per_layer],
        "cell_grad_norm": _list(r.grad.cell_grad_norm),
        "log10_cell_grad_norm": _log10(r.grad.cell_grad_norm),
        "cell_carry_grad_norm": _list(r.grad.cell_carry_grad_norm),
        "log10_cell_carry_grad_norm": _log10(r.grad.cell_carry_grad_norm),
        "cell_grad_note": None if r.grad.cell_grad_norm is None else CELL_GRAD_NOTE,
        "grad_norm_truncated": _list(r.truncated.grad_norm) if r.truncated is not None else None,
        "jacobian": _jac_dict(r.jac) if r.jac is not None else None,
        "jacobian_backward": _jac_dict(r.jac_backward) if r.jac_backward is not None else None,
        "cell_flow": cell_flow,
        "gate_flow": gate_flow,
        "spectral_radius": radius,
        "sigma_max": None if not spectra else _num(spectra["h"]["sigma_max"]) if whole else
        {k: _num(v["sigma_max"]) for k, v in spectra.items()},
        "gamma": c.model_config(c.input_size).gamma if "activation" in kind.settings else None,
        "memory_horizon": r.memory_horizon,
        "memory_horizon_detail": r.horizon_detail,
        "horizon_threshold": c.horizon_threshold,
        "saturation": r.saturation,
        "param_sensitivity": r.param_sensitivity.to_dict() if r.param_sensitivity is not None else None,
        "nonfinite": r.nonfinite,
        "notes": r.notes,
        "timings": r.timings,
    }
