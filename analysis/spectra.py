"""Spectra of the recurrent weights W_hh: eigenvalues, singular values and spectral radius, per gate block
(NaN for a block holding a non-finite weight: ``analysis.finite`` keeps it from LAPACK).

The blocks are the cell's own (``cell.recurrent_blocks()``: LSTM i, f, g, o; GRU r, z, n; the whole matrix "h"
for the vanilla RNN). A cell whose recurrence is a fixed elementwise multiplier instead of a W_hh (a diagonal
cell) gives its eigenvalues itself (``cell.recurrent_eigenvalues()``); its singular values are then |lambda|.
"""
from __future__ import annotations

import numpy as np
import torch

from . import finite


def _entry(eig: np.ndarray, sv: np.ndarray) -> dict:
    return {"eigenvalues": eig, "singular_values": sv, "spectral_radius": float(np.abs(eig).max()),
            "sigma_max": float(sv[0])}


def weight_spectra(cell, cell_type: str | None = None) -> dict[str, dict]:
    """For each H x H block of W_hh (or each fixed diagonal recurrence): eigenvalues (complex), singular values
    (descending) and spectral radius max|lambda|. ``cell_type`` is not needed (the cell says); kept for callers."""
    out = {}
    fixed = cell.recurrent_eigenvalues()
    if fixed:
        for name, lam in fixed.items():
            lam = torch.as_tensor(lam).detach().to(torch.complex128)
            eig = lam.numpy()
            # diag(lambda): singular values |lambda|, descending
            sv = np.sort(np.abs(eig))[::-1].copy()
            out[name] = _entry(eig, sv)
        return out
    for name, block in cell.recurrent_blocks().items():
        block = block.detach().double()
        eig = finite.eigvals(block).numpy()  # NaN for a non-finite block: LAPACK never sees it
        sv = finite.svdvals(block).numpy()
        out[name] = _entry(eig, sv)
    return out
