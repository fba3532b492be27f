"""The Linear Recurrent Unit (Orvieto et al. 2023, "Resurrecting recurrent neural networks for long sequences")."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import State, _Cell
from .diagonal import DiagonalCell, RotationSteps, linear_scan
from .registry import register

# the paper's experiments on long sequences (its ring initialisation, Section 3.3 and the LRA tables)
R_MIN, R_MAX, PHASE_MAX = 0.9, 0.999, 6.28
_SCAN_CHUNK = 256  # steps per chunk of run_states
_OPEN = 1e-12  # u1, u2 ~ U[0, 1] are kept in [1e-12, 1 - 1e-12], so nu_log and theta_log stay finite


@register
class LRUCell(_Cell):
    r"""Linear Recurrent Unit: a complex diagonal linear recurrence, its state seen as real numbers.

    .. math::
        \lambda_j = \exp(-\exp(\nu_j) + i \exp(\theta_j))                  (|lambda_j| = exp(-exp(nu_j)) < 1)
        \gamma_j = \exp(\gamma^{\log}_j)     (initialised to \sqrt{1 - |\lambda_j|^2}; 1 without normalisation)
        h_t = \lambda \odot h_{t-1} + \gamma \odot ((B^{re} + i B^{im}) x_t)        h_t \in C^{H/2}

    Ring initialisation (the paper's Lemma 3.2): u1, u2 ~ U[0, 1],
    nu = log(-1/2 log(u1 (r_max^2 - r_min^2) + r_min^2)), theta = log(u2 * phase_max), so |lambda| is uniform
    in area on the ring r_min <= |lambda| <= r_max with phase in [0, phase_max]; B^re, B^im ~ N(0, 1/(2 I)).

    The state is real: H/2 complex units as the real view h = [Re h; Im h] (B, H), so every other part of the
    code sees an ordinary (B, H) state (H must be even). The paper's output y_t = Re(C h_t) + D x_t is left to
    the next layer or the readout, which is linear in [Re h; Im h] and so can express it.

    Per-step Jacobian (no input path through h_{t-1}): per unit j the 2 x 2 rotation-scaling block
    [[Re lambda_j, -Im lambda_j], [Im lambda_j, Re lambda_j]] between (Re h_j, Im h_j) at t-1 and at t; its
    singular values are both |lambda_j|. ``multipliers`` gives lambda itself (complex, (..., H/2)).

    The recurrence's coefficients are constant over t and the batch, so they are not in the projected input:
    xp_t = u_t = [Re(gamma B x_t); Im(gamma B x_t)] (B, H), and a step is h_t = a h + b roll(h, H/2) + u_t with
    a = [Re lambda; Re lambda], b = [-Im lambda; Im lambda] (``coefficients``; roll swaps the halves: [Im h; Re h]).
    A time loop builds a and b once (``stepper``); without a graph the whole run is one complex multiply-add per
    step (``run_states``). ``fixed_multipliers`` is lambda: every product over time is a power of it.

    Shapes: x_t (B, I) -> xp_t (B, H) -> state (h_t,), h_t (B, H); T steps: xp (T, B, H).
    """

    name, label, color = "lru", "LRU", "#CC79A7"  # Okabe-Ito reddish purple
    gate_names = ()  # no W_hh
    keep_gate = None
    settings = frozenset({"lru_r_min", "lru_r_max", "lru_phase_max", "lru_gamma"})
    diagonal = True
    # the recurrence's own parameters (lambda); each entry moves one complex unit (Re h_j, Im h_j) only
    recurrent_params = ("nu_log", "theta_log")
    unitwise_params = frozenset({"nu_log", "theta_log", "gamma_log"})
    activation_note = "is linear (a complex diagonal recurrence, no activation)"
    graph_per_unit = 15  # measured 14 (backprop route; 8 on the chain): benchmarks/calibrate_limits.py
    structured_products = True
    chunk_floats, chunk_temporaries = DiagonalCell.chunk_floats, DiagonalCell.chunk_temporaries
    product_flops = DiagonalCell.product_flops

    @classmethod
    def vjp_flops(cls, H: int) -> int:
        return 3 * H  # per unit a 2 x 2 rotation-scaling block: 4 multiplies and 2 adds

    @classmethod
    def check_config(cls, config) -> None:
        """A ModelConfig's LRU-specific constraint (called from its validation): H/2 complex units."""
        if config.hidden_size % 2:
            from ..config import ConfigError
            raise ConfigError(f"hidden_size={config.hidden_size} must be even for cell='lru': the state is the real "
                              f"view [Re h; Im h] of hidden_size/2 complex units")

    @classmethod
    def from_config(cls, input_size, hidden_size, config, dtype=None):
        return cls(input_size, hidden_size, r_min=getattr(config, "lru_r_min", R_MIN),
                   r_max=getattr(config, "lru_r_max", R_MAX), phase_max=getattr(config, "lru_phase_max", PHASE_MAX),
                   gamma=getattr(config, "lru_gamma", True), seed=getattr(config, "seed", 0), dtype=dtype)

    def __init__(self, input_size: int, hidden_size: int, *, r_min: float = R_MIN, r_max: float = R_MAX,
                 phase_max: float = PHASE_MAX, gamma: bool = True, seed: int = 0, dtype: torch.dtype | None = None):
        super().__init__()
        if hidden_size % 2:
            raise ValueError(f"hidden_size={hidden_size} must be even for cell='lru': the state is the real view "
                             "[Re h; Im h] of hidden_size/2 complex units")
        if not 0 <= r_min < r_max <= 1:
            raise ValueError(f"lru_r_min={r_min}, lru_r_max={r_max}: need 0 <= lru_r_min < lru_r_max <= 1")
        if not 0 < phase_max <= 2 * math.pi:
            raise ValueError(f"lru_phase_max={phase_max} is out of range: must be in (0, 2 pi]")
        N = hidden_size // 2
        self.input_size, self.hidden_size = input_size, hidden_size
        self.r_min, self.r_max, self.phase_max, self.gamma = r_min, r_max, phase_max, gamma
        self.nu_log = nn.Parameter(torch.empty(N, dtype=dtype))
        self.theta_log = nn.Parameter(torch.empty(N, dtype=dtype))
        self.B_re = nn.Parameter(torch.empty(N, input_size, dtype=dtype))
        self.B_im = nn.Parameter(torch.empty(N, input_size, dtype=dtype))
        self.gamma_log = nn.Parameter(torch.empty(N, dtype=dtype)) if gamma else None
        self.init_weights(None, torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def init_weights(self, config, gen: torch.Generator) -> None:
        """The paper's initialisation (class docstring), every draw from ``gen`` (in float64, then cast)."""
        N, I = self.hidden_size // 2, self.input_size
        u1 = torch.rand(N, generator=gen, dtype=torch.float64).clamp(_OPEN, 1 - _OPEN)
        u2 = torch.rand(N, generator=gen, dtype=torch.float64).clamp(_OPEN, 1 - _OPEN)
        # nu = log(-1/2 log(u1 (r_max^2 - r_min^2) + r_min^2))
        nu_log = torch.log(-0.5 * torch.log(u1 * (self.r_max ** 2 - self.r_min ** 2) + self.r_min ** 2))
        # theta = log(u2 phase_max)
        theta_log = torch.log(u2 * self.phase_max)
        # B_re, B_im ~ N(0, 1/(2 I))
        B_re = torch.randn(N, I, generator=gen, dtype=torch.float64) / math.sqrt(2 * I)
        B_im = torch.randn(N, I, generator=gen, dtype=torch.float64) / math.sqrt(2 * I)
        self.nu_log.copy_(nu_log)
        self.theta_log.copy_(theta_log)
        self.B_re.copy_(B_re)
        self.B_im.copy_(B_im)
        if self.gamma_log is not None:
            # gamma = sqrt(1 - |lambda|^2), |lambda|^2 = exp(-2 exp(nu))  ->  log gamma = 1/2 log(-expm1(-2 exp(nu)))
            self.gamma_log.copy_(0.5 * torch.log(-torch.expm1(-2 * torch.exp(nu_log))))

    def lambda_parts(self) -> tuple[Tensor, Tensor]:
        """(Re lambda, Im lambda), each (H/2,)."""
        # |lambda| = exp(-exp(nu)), arg lambda = exp(theta)
        mod, arg = torch.exp(-torch.exp(self.nu_log)), torch.exp(self.theta_log)
        return mod * torch.cos(arg), mod * torch.sin(arg)

    def coefficients(self) -> tuple[Tensor, Tensor]:
        """(a, b), each (H,): a = [Re l; Re l], b = [-Im l; Im l], so lambda h = a h + b roll(h, H/2) in the real
        view."""
        lr, li = self.lambda_parts()
        return torch.cat([lr, lr]), torch.cat([-li, li])

    def project(self, x_t: Tensor) -> Tensor:
        # u_t = gamma * (B_re + i B_im) x_t, as [Re; Im]: one GEMM with [gamma B_re; gamma B_im] (H, I)
        W = torch.cat([self.B_re, self.B_im])  # (H, I)
        if self.gamma_log is not None:
            g = torch.exp(self.gamma_log)  # (H/2,)
            W = W * torch.cat([g, g]).unsqueeze(-1)
        return F.linear(x_t, W)  # (..., H)

    def _forward(self, xp_t: Tensor, state: State):
        return self.stepper()(xp_t, state), {}

    def stepper(self):
        """The step with a and b built once (a time loop's T steps share them; autograd reaches lambda through
        them)."""
        a, b = self.coefficients()  # (H,) each
        N = self.hidden_size // 2

        def step(xp_t: Tensor, state: State) -> State:
            (h,) = state
            # h_t = lambda h_{t-1} + u_t:  [Re; Im] = [Re l Re h - Im l Im h; Re l Im h + Im l Re h] + u_t
            return (a * h + b * torch.roll(h, N, dims=-1) + xp_t,)
        return step

    @torch.no_grad()
    def run_states(self, xp: Tensor, state0: State) -> tuple[Tensor]:
        """Every h_t of a run as one complex multiply-add per step: h_t = lambda h_{t-1} + u_t in C^{H/2}, then the
        real view [Re h; Im h]; (T + 1, B, H) with h_{-1} = state0 first."""
        (h0,) = state0
        T, N = xp.shape[0], self.hidden_size // 2
        lam = torch.complex(*self.lambda_parts())  # (N,)
        out = xp.new_empty(T + 1, *xp.shape[1:])  # (T + 1, B, H) real views [Re h; Im h]
        out[0] = h0
        # in chunks of C steps (complex buffers that stay in cache, not three more copies of the whole run)
        C = _SCAN_CHUNK
        u = torch.empty(min(C, T), *xp.shape[1:-1], N, dtype=lam.dtype)  # (C, B, N) complex
        h = torch.complex(h0[..., :N], h0[..., N:])  # (B, N)
        for t0 in range(0, T, C):
            n = min(C, T - t0)
            torch.complex(xp[t0:t0 + n, ..., :N], xp[t0:t0 + n, ..., N:], out=u[:n])
            hc = linear_scan(lam, u[:n], h)  # (n + 1, B, N), h first
            out[t0 + 1:t0 + n + 1, ..., :N] = hc[1:].real
            out[t0 + 1:t0 + n + 1, ..., N:] = hc[1:].imag
            h = hc[-1]
        return (out,)

    def multipliers(self, xp_t: Tensor, state: State) -> Tensor:
        """lambda at each step: complex (..., H/2) (the same at every step: expanded, not copied); the state's
        complex form is multiplied by it."""
        return torch.complex(*self.lambda_parts()).expand(*xp_t.shape[:-1], self.hidden_size // 2)

    def fixed_multipliers(self) -> Tensor:
        """lambda (H/2,) complex: d h_t / d h_{t-1} at every step and for every sequence."""
        return torch.complex(*self.lambda_parts())

    def recurrent_eigenvalues(self) -> dict[str, Tensor]:
        """The fixed recurrence's eigenvalues lambda (H/2,) complex (the real view's are lambda and conj lambda)."""
        lr, li = self.lambda_parts()
        return {"λ": torch.complex(lr.detach(), li.detach())}

    def chunk_steps(self, xp: Tensor, st: State) -> RotationSteps:
        """The 2 x 2 blocks of lambda (a and b, expanded to (C, b, H)), applied without forming the (H, H)
        Jacobian."""
        a, b = self.coefficients()
        shape = (*xp.shape[:-1], self.hidden_size)
        return RotationSteps(a.expand(shape), b.expand(shape))

    vjp_steps = chunk_steps

    def _jacobian_closed_form(self, xp_t: Tensor, state: State) -> Tensor:
        # dh_t/dh_{t-1} = diag(a) + diag(b) rolled by H/2 columns = [[diag Re l, -diag Im l], [diag Im l, diag Re l]]
        a, b = (c.expand(*xp_t.shape[:-1], self.hidden_size) for c in self.coefficients())  # (..., H) each
        return torch.diag_embed(a) + torch.diag_embed(b).roll(self.hidden_size // 2, dims=-1)  # (..., H, H)

    def extra_repr(self) -> str:
        return (f"input_size={self.input_size}, hidden_size={self.hidden_size}, r_min={self.r_min}, "
                f"r_max={self.r_max}, phase_max={self.phase_max}, gamma={self.gamma}")
