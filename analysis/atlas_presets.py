"""The Atlas's presets: a base config, one or two axes, seeds, the metric shown, and what to look for.

Each runs with ``sweep(preset.config, preset.vary, preset.seeds, preset.metrics)`` (the dashboard, the CLI
line in ``command``, the slow tests that check each claim below).
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import ExperimentConfig

# only what the sweep's metrics read; about 80 log-spaced lags (steps of ~5%) place the memory horizon within ~5%
_FAST = dict(jacobian_lags="log", num_log_lags=120, n_singular=1, lyapunov_k=1)


@dataclass(frozen=True)
class AtlasPreset:
    title: str
    config: ExperimentConfig
    vary: tuple[str, ...]
    seeds: int
    metrics: tuple[str, ...]
    metric: str  # the one drawn first
    lines: tuple[str, str]

    def command(self) -> str:
        """The same sweep on the command line (flags for the fields that differ from the defaults)."""
        base = ExperimentConfig().to_dict()
        flags = [f"--{k.replace('_', '-')} {v}" for k, v in self.config.to_dict().items()
                 if v != base[k] and k != "compare"]
        vary = " ".join(f"--vary {v}" for v in self.vary)
        return (f"python -m analysis sweep {' '.join(flags)} {vary} --seeds {self.seeds} "
                f"--metrics {','.join(self.metrics)}")


ATLAS_PRESETS: dict[str, AtlasPreset] = {
    "edge-of-chaos": AtlasPreset(
        "Edge of chaos: tanh RNN, spectral radius 0.5 → 2",
        ExperimentConfig(cell="rnn", activation="tanh", init="spectral", hidden_size=128, input_size=1, seq_len=200,
                         batch_size=4, **_FAST),
        ("init_scale=0.5:2.0:13",), 3, ("lyapunov_max", "memory_horizon", "grad_ratio"), "lyapunov_max",
        ("The largest Lyapunov exponent λ₁ is negative while W_hh contracts (ordered: the network forgets its past "
         "at rate λ₁ per step) and crosses zero into chaos (λ₁ > 0: nearby trajectories diverge) as the gain grows.",
         "Here (H = 128, small inputs, T = 200) it crosses near g ≈ 1.3; in the large-network limit without input "
         "the edge is g = 1 (Sompolinsky et al. 1988). The band is the spread over seeds, widest at the edge."),
    ),
    "forget-bias": AtlasPreset(
        "LSTM forget-gate bias b_f −2 → 4 and the memory horizon",
        ExperimentConfig(cell="lstm", hidden_size=64, seq_len=400, batch_size=4, **_FAST),
        ("forget_bias=-2:4:13",), 2, ("memory_horizon", "grad_ratio", "lyapunov_max"), "memory_horizon",
        ("The memory horizon (first of ~80 log-spaced lags where ‖∂h_T-1/∂h_T-1-k‖ < 10⁻³) grows steeply with the "
         "forget-gate bias: σ(b_f) near 1 keeps the cell state's carousel open (Jozefowicz et al. 2015: b_f = 1).",
         "Triangles mark seeds whose gradient never fell below the threshold within T-1 = 399 lags: the horizon "
         "is longer than the sequence."),
    ),
    "irnn": AtlasPreset(
        "IRNN: ReLU RNN with W_hh = a·I, a 0.8 → 1.2 (adding task)",
        ExperimentConfig(cell="rnn", activation="relu", init="identity", hidden_size=64, task="adding", seq_len=100,
                         batch_size=4, **_FAST),
        ("init_scale=0.8:1.2:9",), 2, ("grad_ratio", "memory_horizon"), "grad_ratio",
        ("With W_hh = a·I each step multiplies the surviving gradient by a, so log10 ‖∂L/∂h_0‖/‖∂L/∂h_T-1‖ follows "
         "(T-1)·log10 a: about −9.6 at a = 0.8, 0 at a = 1, +7.8 at a = 1.2 for T = 100.",
         "a = 1 (Le, Jaitly and Hinton 2015) is the only scale that neither vanishes nor explodes over 100 steps."),
    ),
    "adding-vs-T": AtlasPreset(
        "Adding task vs T: RNN, LSTM, GRU trained 400 steps",
        ExperimentConfig(cell="rnn", task="adding", hidden_size=32, batch_size=32, seq_len=10, lr=1e-2,
                         train_steps=400, **_FAST),
        ("cell=rnn,lstm,gru", "seq_len=5,10,20,40"), 1, ("final_loss_over_chance", "final_loss"),
        "final_loss_over_chance",
        ("Final training loss over chance (1 = predicts the mean: learned nothing) after 400 Adam steps as the two "
         "marked numbers move T apart: each cell learns short sequences and fails past some length.",
         "Seed 0 here: the RNN fails from T = 20 (ratio ≈ 1), the LSTM from T = 40, the GRU still learns at T = 40 "
         "(≈ 0.007); about 1-2 minutes on two cores. More steps move every boundary right."),
    ),
}
DEFAULT_ATLAS = "edge-of-chaos"
