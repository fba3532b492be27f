r"""TensorBoard output of ``watch(..., tensorboard=True)``, beside the run directory's own files (tensorboard is
imported lazily: only this option needs it; pinned tensorboard==2.21.0).

Written into ``<log_dir>/tensorboard`` with torch's SummaryWriter:
    scalars   watch/loss; watch/<layer>/log10_grad_norm_first_t and _last_t (log10 ||dL/dh_t|| at t = 0 and T-1,
              geometric mean over the batch) at every record; watch/<layer>/horizon and
              watch/<layer>/log10_sigma_max_lag<k> (longest lag) at every probe
    images    watch/<layer>/grad_norm_timeline at every probe: the records since the previous probe as a grey image
              (rows t = 0 at the top .. T-1, columns training steps), log10 ||dL/dh_t|| mapped linearly from the
              timeline's fixed scale [ZMIN, ZMAX] to black..white (values beyond it clipped; missing values black)
"""
from __future__ import annotations

import math

import numpy as np

from rnn_models.config import ConfigError

ZMIN, ZMAX = -8.0, 2.0  # as analysis.figures.timeline (not imported: plotly is not needed here)


class TensorBoardOut:
    @staticmethod
    def check():
        """torch's SummaryWriter, or one line saying how to get TensorBoard."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("tensorboard=True needs TensorBoard: pip install tensorboard==2.21.0") from None
        return SummaryWriter

    def __init__(self, log_dir: str):
        self.writer = self.check()(log_dir=log_dir)
        self.pending: dict[str, list[list[float]]] = {}

    def record(self, step: int, loss, norms: dict) -> None:
        if loss is not None and math.isfinite(loss):
            self.writer.add_scalar("watch/loss", loss, step)
        for layer, row in norms.items():
            if row and row[0] is not None and math.isfinite(row[0]):
                self.writer.add_scalar(f"watch/{layer}/log10_grad_norm_first_t", row[0], step)
            if row and row[-1] is not None and math.isfinite(row[-1]):
                self.writer.add_scalar(f"watch/{layer}/log10_grad_norm_last_t", row[-1], step)
            self.pending.setdefault(layer, []).append(list(row))

    def probe(self, step: int, lags: list, sig: dict, hz: dict) -> None:
        for layer, s in sig.items():
            if hz.get(layer) is not None:
                self.writer.add_scalar(f"watch/{layer}/horizon", hz[layer], step)
            if s:
                self.writer.add_scalar(f"watch/{layer}/log10_sigma_max_lag{lags[-1]}", s[-1], step)
        for layer, rows in self.pending.items():
            if rows:
                self.writer.add_image(f"watch/{layer}/grad_norm_timeline", grey_image(rows), step, dataformats="HW")
        self.pending = {}
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def grey_image(rows: list[list[float]]) -> np.ndarray:
    """(T, N) float32 in [0, 1] from N records of T log10 norms (None / NaN -> 0), on the fixed scale."""
    T = max(len(r) for r in rows)
    z = np.full((T, len(rows)), np.nan)
    for j, r in enumerate(rows):
        z[: len(r), j] = [np.nan if v is None else v for v in r]
    img = np.clip((z - ZMIN) / (ZMAX - ZMIN), 0.0, 1.0)
    return np.nan_to_num(img, nan=0.0).astype(np.float32)
