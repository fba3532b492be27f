"""Ready-made experiments that reproduce classic results; each sets every setting at once.

    PRESETS: {name: Preset(name, config, what_to_look_for, train, title, variant)}

``config`` is an ExperimentConfig (``compare`` lists the cells shown side by side); ``what_to_look_for`` is two
lines (what to look at, what it means); ``train`` is None or {"steps": N, "variants": {label: overrides},
"steps_per_tick": n} for presets about training (the live-training tab starts one trainer per cell and variant
and advances n steps per tick); ``variant`` is None or a second run of the same cells with a few fields changed
({"forget_bias": 0.0}), drawn beside the first.

Each preset was run with the engine and its effect is checked by ``tests/test_presets.py`` (seq_len 100, hidden 64,
batch 16 unless said, Jacobian spectra over the first 4 sequences; numbers measured on seed 0):

    default           tanh RNN vs LSTM vs GRU, chrono init (the gated cells' keep-gate biases ~ log U[1, T-1]),
                      adding task, T=100, H=64: ||dL/dh_0|| / ||dL/dh_99|| ~ 5e-22 (RNN), 1e-3 (LSTM),
                      0.2 (GRU); memory horizon (||dh_99/dh_99-k|| < 1e-3) 16 steps for the RNN, none within
                      99 lags for the LSTM and GRU.
    vanishing-tanh    tanh RNN, default init: the gradient falls by ~1e-23 over 100 steps, horizon ~15.
    exploding         linear RNN, W_hh scaled to spectral radius 1.2 (sigma_max ~2.2 > 1/gamma = 1):
                      ||dL/dh_0|| ~ 1.6e7 x the last step's (Pascanu et al. 2013).
    irnn              ReLU RNN, W_hh = I (Le, Jaitly, Hinton 2015), adding task: the gradient at t=0 is still
                      ~0.8 of the last step's.
    orthogonal-linear linear RNN, orthogonal W_hh: every singular value of dh_99/dh_99-k is 1: the norm is kept
                      exactly over all 100 steps.
    forget-bias       LSTM with forget-gate bias 1 (Jozefowicz et al. 2015) vs 0: ratio ~8e-9 vs ~6e-22,
                      horizon 42 vs 14.
    layer-norm        tanh RNN with spectral radius 3 (explodes: ~2e10 without layer norm) with layer norm:
                      the gradient stays within a factor ~10 over 100 steps.
    clipping          linear RNN, spectral radius 1.2, T=50, adding, SGD lr 0.05: without clipping a NaN
                      appears at step 1 and the run stops; with norm clipping (threshold 1) the loss falls from
                      ~3e4 to the chance level (~0.17) within 100 steps.
    truncated-bptt    GRU, adding, T=100, k=20: the truncated ||dL/dh_t|| equals the full one for t >= 80 and is
                      exactly 0 for t < 80. Training (Adam lr 0.02, seeds 0-2): full BPTT's loss (20-step mean)
                      falls below 0.05 at steps 190-230, truncated k=20's at 280-300, and stays several times
                      higher (0.003-0.009 vs <= 0.001 over steps 450-500): the state still carries the first
                      marker across the cut, only the gradient does not, so the weights learned inside the
                      window do the rest.
    bidirectional     bidirectional LSTM, b_f=4, a loss at every step (random probe): ||dL/d[h_fwd; h_bwd]|| is a
                      U, 9x (t=0) and 5x (t=99) its lowest value mid-sequence; with b_f=0 it is flat (max/min 1.0).
                      With a last-step loss the backward direction gets no gradient before T-1 (h_bwd_{T-1} has
                      read x_{T-1} alone), hence the loss at every step.
    stacked           3-layer tanh RNN, random probe: at t=99 the layers get 1, 0.58, 0.29 (top to bottom);
                      back in time each layer loses 0.22-0.26 decades per step (~1e-22 to 1e-26 at t=0), where the
                      lower layers get more than the top (more paths: down a layer at any step).
    charlm-hello      3-unit tanh RNN (as in the lecture's figure) on "hello" (V=4), T=20, Adam lr 0.03:
                      perplexity 4.2 at step 0, 1.04 by step 90, ~1.02 at 300 (a window starting at an 'l' cannot
                      know which 'l' it is: ln 2 once per window).
    curse-of-memory   linear RNN (W_hh = r x orthogonal) and LRU (|lambda| in [r - 0.005, r], gamma-normalised),
                      T=500, H=32 (random probe), r = 0.99 vs 0.9: ||dL/dh_0|| / ||dL/dh_499|| = 10^-2.2 vs
                      10^-22.8 (RNN; LRU 10^-2.5 vs 10^-23.2: no explosion, the longer memory only vanishes less),
                      yet the RNN's log10 S_499 = log10 mean ||dh_499/d(W_hh, b_hh)||^2 is 6.46 vs 4.08 (+2.4
                      decades), its log10 E = log10 mean ||h_499||^2 2.77 vs 1.83 (+0.9), the ratio 3.70 vs 2.25
                      (+1.5); the scalar closed forms (Zucchet & Orvieto 2024) give +3.0, +1.0 and +2.0. The LRU's
                      E stays 1.16 vs 1.17 (gamma), its sensitivity to nu_log 0.90 vs 0.83 (the exp(-exp(nu))
                      parameterisation), but to theta_log (the phase) 5.81 vs 3.87 (+1.9: not tamed).
    lru-t2000         LRU (ring 0.9 <= |lambda| <= 0.999) vs LSTM vs GRU (default init), T=2000, H=64, B=16,
                      Jacobians of 4 sequences at 42 log-spaced lags (light settings: ~5 s on 2 cores, ~180 GFLOP
                      and ~400 MB estimated): log10 ||dL/dh_0|| / ||dL/dh_1999|| = -4.4 (LRU), -399 (LSTM), -368
                      (GRU); the LRU's slope over t = 0..1000 is log10 max|lambda| = log10 0.9962 per step and its
                      sigma_max at lag k is max|lambda|^k (to 1e-13 in log10); memory horizon (1e-3) ~1800 (reported
                      1999: crossed between the log-spaced lags 1695 and 1999) vs 17 and 20. With init=chrono the
                      LSTM's ratio is 10^-4.4 and the GRU's 10^-0.65.
    mingru            minGRU vs GRU, default init, variant W_hh at spectral radius 5: the minGRU's
                      ||dL/dh_0|| / ||dL/dh_99|| = 10^-24.0 in both runs (horizon 15), its Jacobian's sigma_max
                      equals the kept-share path prod (1 - z_t) (to 3e-7 in log10) and never exceeds 1; the GRU's
                      10^-18.8 (horizon 18), its sigma_max at lag 99 10^-17.9 vs the update-gate path 10^-25.1;
                      with spectral radius 5 the GRU explodes: 10^+6.4, sigma_max 10^8.5 at lag 99.
    charlm-text       tanh RNN and LSTM, H=128, T=64, B=32, Adam lr 0.005 on the sonnets (V=60): perplexity ~60
                      at step 0, ~10 by step 90-100 (RNN 10.0, LSTM 10.6), 5.4 (RNN) and 6.2 (LSTM) at step 300;
                      samples at temperature 0.8 hold words ("the", "thou", "And") and line breaks by step ~150.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .config import ExperimentConfig


@dataclass(frozen=True)
class Preset:
    name: str
    config: ExperimentConfig
    what_to_look_for: str  # two lines
    train: dict | None = None
    title: str = ""
    variant: dict | None = field(default=None)

    @property
    def lines(self) -> list[str]:
        return self.what_to_look_for.splitlines()


def _p(name, title, config, line1, line2, train=None, variant=None) -> Preset:
    return Preset(name=name, config=config, what_to_look_for=f"{line1}\n{line2}", train=train, title=title,
                  variant=variant)


# Jacobian spectra over the first 4 of the 16 sequences (the gradient norms use all 16) and at ~34 log-spaced lags
# (exact at those lags; plots are log-scaled): the default view computes in ~1.2 s on 2 cores (3.5-6 s with every
# lag of the whole batch). The result's notes and the page say so; the sidebar's Analysis section lifts both.
_BASE = dict(seq_len=100, hidden_size=64, batch_size=16, seed=0, jacobian_batch=4, jacobian_lags="log")

PRESETS: dict[str, Preset] = {p.name: p for p in [
    _p("default", "RNN vs LSTM vs GRU: who still hears the first step?",
       ExperimentConfig(cell="rnn", compare=("rnn", "lstm", "gru"), init="chrono", task="adding", **_BASE),
       "Gradient flow: the tanh RNN's ||dL/dh_t|| collapses by ~20 orders of magnitude over 100 steps, while "
       "the LSTM (through c_t) and the GRU (through z_t) keep it within a few.",
       "Jacobians: the RNN's memory horizon is ~16 steps; the gated cells never drop below the threshold. "
       "(Chrono init sets the LSTM/GRU keep-gate biases; the RNN keeps the default init.)"),
    _p("vanishing-tanh", "Vanishing gradients in a tanh RNN",
       ExperimentConfig(cell="rnn", activation="tanh", init="default", task="random", **_BASE),
       "||dL/dh_t|| falls exponentially as t moves away from the loss: a straight line on the log axis.",
       "Each step multiplies by diag(tanh'(a_t)) W_hh, whose norm is below 1 here; the Jacobian view shows the "
       "same decay by lag and a horizon of ~15 steps."),
    _p("exploding", "Exploding gradients: spectral radius above 1",
       ExperimentConfig(cell="rnn", activation="linear", init="spectral", init_scale=1.2, task="random", **_BASE),
       "A linear RNN with W_hh scaled to spectral radius 1.2: ||dL/dh_t|| grows ~1e7-fold going back 100 steps.",
       "sigma_max(W_hh) ~2.2 > 1/gamma = 1, so the Pascanu bound no longer forbids growth; the eigenvalues "
       "outside the unit circle (spectrum view) are the directions that blow up."),
    _p("irnn", "IRNN: ReLU with identity init (Le et al. 2015)",
       ExperimentConfig(cell="rnn", activation="relu", init="identity", init_scale=1.0, task="adding", **_BASE),
       "With W_hh = I and ReLU, active units pass the gradient unchanged: ||dL/dh_t|| stays nearly flat.",
       "Jacobians: sigma_max stays at 1 for every lag (units that are off contribute 0, not decay); "
       "a unit that never switches on is a dead ReLU."),
    _p("orthogonal-linear", "Orthogonal linear RNN: the norm is kept exactly",
       ExperimentConfig(cell="rnn", activation="linear", init="orthogonal", init_scale=1.0, task="random", **_BASE),
       "With phi = identity and an orthogonal W_hh, dh_{T-1}/dh_{T-1-k} = W_hh^k is orthogonal: every singular "
       "value is exactly 1.",
       "The gradient neither vanishes nor explodes at any lag, but such a network is linear: it cannot compute "
       "much. The gated cells keep the norm while staying nonlinear."),
    _p("forget-bias", "LSTM forget-gate bias 1 vs 0 (Jozefowicz et al. 2015)",
       ExperimentConfig(cell="lstm", forget_bias=1.0, task="random", **_BASE),
       "Solid/dark: forget bias b_f = 1, so f_t ~ sigmoid(1) ~ 0.73 at the start; light: b_f = 0, f_t ~ 0.5.",
       "The carousel prod diag(f_t) decays as f^k, so b_f = 1 stretches the memory horizon ~3x (cell-state and "
       "Jacobian views).",
       variant={"forget_bias": 0.0}),
    _p("layer-norm", "Layer norm keeps the Jacobian in range",
       ExperimentConfig(cell="rnn", activation="tanh", init="spectral", init_scale=3.0, layer_norm=True,
                        task="random", **_BASE),
       "A tanh RNN with spectral radius 3 explodes (light line, layer_norm=false: ~1e10); with layer norm the "
       "gradient stays within about a factor of 10 over 100 steps.",
       "Layer norm divides the pre-activation by its own spread, so scaling W_hh up no longer scales the "
       "per-step Jacobian (per-step Jacobians by autograd here: slower).",
       variant={"layer_norm": False}),
    _p("clipping", "Gradient clipping rescues an exploding run (train it)",
       ExperimentConfig(cell="rnn", activation="linear", init="spectral", init_scale=1.2, task="adding",
                        seq_len=50, hidden_size=64, batch_size=16, seed=0, jacobian_batch=4, optimizer="sgd", lr=0.05,
                        clip="none", clip_threshold=1.0, train_steps=150),
       "Live training tab: press Start. Without clipping the first update overflows: NaN at step 1, the run "
       "stops. With norm clipping (threshold 1) the loss falls to the chance level.",
       "Clipping rescales g to threshold * g/||g|| when ||g|| is larger: the direction is kept, the step is "
       "bounded (Pascanu et al. 2013). Change the clip mode while it runs: the change is marked on the plots.",
       train={"steps": 150, "variants": {"clip=none": {"clip": "none"},
                                         "clip=norm": {"clip": "norm", "clip_threshold": 1.0}}}),
    _p("truncated-bptt", "Truncated BPTT: backpropagate only k = 20 steps",
       ExperimentConfig(cell="gru", task="adding", truncate=20, lr=0.02, train_steps=400, **_BASE),
       "Gradient flow: the truncated gradient (dashed) equals the full one (solid) inside the last k = 20 steps "
       "and is exactly 0 before the cut at t = T-k = 80: no learning signal crosses it.",
       "Live training (Start): full BPTT learns the adding task by ~step 200-230 (loss < 0.05); truncated k=20 "
       "gets there ~60-90 steps later and stays several times higher: only the weights learned inside the "
       "window carry the first marker's value across the cut.",
       train={"steps": 400, "steps_per_tick": 5,
              "variants": {"full BPTT": {"truncate": 0}, "truncated k=20": {"truncate": 20}}}),
    _p("bidirectional", "Bidirectional LSTM: forward + backward, concatenated",
       ExperimentConfig(cell="lstm", bidirectional=True, forget_bias=4.0, task="random", loss_steps="all", **_BASE),
       "Gradient flow: with a loss at every step (as in tagging) h→_t feeds every later loss, so the forward "
       "gradient (dashed) grows toward t=0; h←_t feeds every earlier one (dotted, grows toward T-1). The "
       "concatenation [h→_t; h←_t] (thick) is a U: ~9x (t=0) and ~5x (t=T-1) above its lowest point mid-sequence.",
       "The U's depth is the memory: with b_f = 4 the cells keep state for many steps; the light run (b_f = 0) "
       "forgets within a few steps, each h_t hears only nearby losses, and its line is flat. Jacobians: one "
       "curve per direction.",
       variant={"forget_bias": 0.0}),
    _p("stacked", "Stacked RNN: 3 layers, vanishing through depth and time",
       ExperimentConfig(cell="rnn", activation="tanh", num_layers=3, task="random", **_BASE),
       "Gradient flow, stacked-layer map: brightest at the top layer's last step, where the loss reads; it fades "
       "leftward (~0.25 decades per step back in time) and downward (the bottom layer gets ~1/3 of the top's at "
       "t = T-1): every hop, back in time or down a layer, multiplies by a Jacobian diag(φ')W.",
       "Far back all three layers have lost 20+ orders of magnitude (the lower ones a little less: more paths "
       "step down somewhere along the way). Depth adds L-1 hops, time adds T; choose the analysed layer "
       "in the sidebar for its Jacobians."),
    _p("curse-of-memory", "Beyond vanishing: the curse of memory",
       ExperimentConfig(cell="rnn", compare=("rnn", "lru"), activation="linear", init="orthogonal", init_scale=0.99,
                        lru_r_min=0.985, lru_r_max=0.99, task="random", seq_len=500, hidden_size=32, batch_size=16,
                        seed=0, jacobian_batch=4, jacobian_lags="log"),
       "Sensitivity tab: a linear RNN (W_hh = r × orthogonal) and an LRU (|λ| ≈ r) at r = 0.99 (dark) and 0.9 "
       "(light). ∂h_T/∂h_t never explodes (norm r^k), yet from 0.9 to 0.99 the RNN's sensitivity to W_hh and b_hh, "
       "log10 ‖∂h_T/∂θ‖², rises ~2.4 decades while its size log10 ‖h_T‖² rises ~0.9.",
       "Zucchet & Orvieto (2024): for h_t = λh_{t-1} + x_t, E[h²] = 1/(1−λ²) but E[(∂h/∂λ)²] = (1+λ²)/(1−λ²)³. "
       "The LRU's γ normalisation keeps its size flat and its |λ| = exp(−exp(ν)) keeps ∂h/∂ν flat, but its phase "
       "parameter θ still gains ~1.9 decades (click the per-parameter lines in the legend).",
       variant={"init_scale": 0.9, "lru_r_min": 0.895, "lru_r_max": 0.9}),
    _p("lru-t2000", "LRU vs LSTM vs GRU at T = 2000",
       ExperimentConfig(cell="lstm", compare=("lstm", "gru", "lru"), task="random", seq_len=2000, hidden_size=64,
                        batch_size=16, seed=0, jacobian_batch=4, jacobian_lags="log"),
       "Gradient flow (log axis): over 2000 steps the LRU's ‖∂L/∂h_t‖ falls only ~4.4 decades, a straight line "
       "whose slope far back is log10 of its largest |λ| (0.996, drawn from the ring 0.9 ≤ |λ| ≤ 0.999); the LSTM's and "
       "GRU's fall ~0.2 decades per step, below float64's range (10^−308, dotted) before t ≈ 400, so the chart draws "
       "the exact log10 values: ~400 and ~370 decades down at t = 0.",
       "Jacobians: the LRU's ∂h_T/∂h_{T−k} has singular values exactly |λ_j|^k (linear, no W_hh mixing the units): "
       "its memory horizon (max|λ|^k < 10^−3) is ~1,800 steps, the LSTM's 17 and the GRU's 20 at the default init (chrono "
       "init holds theirs too). Light settings: H = 64, Jacobians of 4 sequences at log-spaced lags."),
    _p("mingru", "minGRU: gates without a hidden-state nonlinearity",
       ExperimentConfig(cell="gru", compare=("gru", "mingru"), task="random", **_BASE),
       "The minGRU's gate reads x_t alone: h_t = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ h̃_t, so ∂h_t/∂h_{t−1} = diag(1 − z_t): "
       "each unit's gradient is scaled by its own 1 − z_t < 1, it can vanish but never explode, and the full "
       "Jacobian is the kept-share path ∏ (1 − z_t) (Cell state: the two lines coincide).",
       "The GRU's gates read h_{t−1} through W_hh: at lag 99 its Jacobian is ~7 decades above its gate path ∏ z_t, "
       "and with W_hh at spectral radius 5 (light) its gradient grows ~10^6 over 100 steps; the minGRU has no W_hh "
       "(the variant does not apply to it: no light minGRU line), and how long it remembers is set by x_t alone: "
       "here ~0.24 decades lost per step.",
       variant={"init": "spectral", "init_scale": 5.0}),
    _p("charlm-hello", "Character-level LM on \"hello\" (h, e, l, o)",
       ExperimentConfig(cell="rnn", hidden_size=3, task="charlm", text="hello", seq_len=20, batch_size=16, seed=0,
                        jacobian_batch=4, lr=0.03, train_steps=150),
       "Live training: the 3-unit RNN of the lecture reads \"hellohello...\" one character at a time and "
       "predicts the next; perplexity exp(J) falls from about the vocabulary size V = 4 to ~1.03 within "
       "~100 steps.",
       "After 'l' the next character is 'l' or 'o': only the state h_t (the previous characters) can tell, "
       "so perplexity ~1 means the RNN remembers. Samples turn into \"hellohello\".",
       train={"steps": 150, "steps_per_tick": 3}),
    _p("charlm-text", "Character-level LM on Shakespeare's sonnets",
       ExperimentConfig(cell="rnn", compare=("rnn", "lstm"), hidden_size=128, task="charlm", text="shipped",
                        seq_len=64, batch_size=32, seed=0, jacobian_batch=4, lr=0.005, train_steps=300),
       "Live training (Start): perplexity starts at the vocabulary size V = 60 (a uniform guess), falls below 10 "
       "by step ~100-120 and to ~5-6 by step 300, for the tanh RNN and the LSTM alike.",
       "The samples (every 10 steps and at each pause) go from random characters to word-like text with spaces, "
       "capitals and line breaks; lower the temperature for likelier, more repetitive text.",
       train={"steps": 300, "steps_per_tick": 2}),
]}

DEFAULT_PRESET = "default"

__all__ = ["Preset", "PRESETS", "DEFAULT_PRESET"]
