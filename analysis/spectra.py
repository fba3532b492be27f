"""Spectra of the recurrent weights W_hh: eigenvalues, singular values and spectral radius, per gate block
(NaN for a block holding a non-finite weight: ``analysis.finite`` keeps it from LAPACK)."""
from __future__ import annotations

import numpy as np

from . import finite

GATE_NAMES = {"rnn": ("h",), "lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}


def weight_spectra(cell, cell_type: str) -> dict[str, dict]:
    """For each H x H block of W_hh (LSTM i, f, g, o; GRU r, z, n; the whole matrix for the vanilla RNN):
    eigenvalues (complex), singular values (descending) and spectral radius max|lambda|."""
    H = cell.hidden_size
    W = cell.weight_hh.detach().double()
    out = {}
    for name, block in zip(GATE_NAMES[cell_type], W.split(H, dim=0)):
        eig = finite.eigvals(block).numpy()  # NaN for a non-finite block: LAPACK never sees it
        sv = finite.svdvals(block).numpy()
        out[name] = {"eigenvalues": eig, "singular_values": sv, "spectral_radius": float(np.abs(eig).max()),
                     "sigma_max": float(sv[0])}
    return out
