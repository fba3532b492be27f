"""Words about the views and the settings, shared by the dashboard's tabs and the slide deck (no Streamlit).

    VIEW_TITLES[view]    the tab's label ("Gradient flow")
    VIEW_GUIDES[view]    the view's one-line guide: what the figures show and how to read them
    describe(config)     one line naming the cells and the settings that matter ("RNN (tanh), LSTM · task ...")
"""
from __future__ import annotations

from rnn_models.cells import cell_type

VIEW_TITLES = {
    "gradient-flow": "Gradient flow",
    "jacobians": "Jacobians",
    "spectrum": "Spectrum",
    "cell-state": "Cell state",
    "training": "Live training",
    "activations": "Activations",
    "atlas": "Atlas",
    "sensitivity": "Sensitivity",
}

VIEW_GUIDES = {
    "gradient-flow": (
        "Each line is ‖∂L/∂h_t‖: how strongly the loss still depends on the state at step t (the time axis says "
        "where the loss is read: the last step, every step or your own loss). Backpropagation multiplies one Jacobian ∂h_t/∂h_{t-1} per step, so a straight slope "
        "down to the left on the log axis is exponential vanishing, a slope up is explosion."),
    "jacobians": (
        "σ_max of ∂h_{T-1}/∂h_{T-1-k} is the most a change k steps back can still move the last state; σ_min "
        "the least (hollow points are below float resolution). The memory horizon is the first lag where σ_max "
        "falls under the threshold; for the RNN the dashed line is the bound (γ·σ_max(W_hh))^k that no lag can "
        "exceed. In a bidirectional network the dashed line is the backward direction (its own W_hh, read from "
        "t = T-1 back to 0) and the bound is dash-dotted."),
    "spectrum": (
        "Eigenvalues of W_hh outside the unit circle grow a linear recurrence, inside they shrink it; σ_max(W_hh) "
        "bounds how much one step can stretch a vector. The Lyapunov exponents are the average growth rates per "
        "step along the actual run (φ' and the gates included): all negative means the network forgets."),
    "cell-state": (
        "In the LSTM, c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t: the direct path back through c has Jacobian diag(f_t), "
        "so the dashed 'carousel' ∏ diag(f_t) is that path alone and the solid line every path; the GRU's "
        "analogue is ∏ diag(z_t). In RG-LRU, minGRU and minLSTM, h_t = a_t ⊙ h_{t-1} + ...: the kept share a_t "
        "(a_t, 1 − z_t, f'_t) is the whole Jacobian, so the two lines coincide (the LRU's fixed λ has no gate: see "
        "Jacobians). Gate maps show where gates sit near 0 (closed) or 1 (open)."),
    "training": (
        "Train each cell on the task and watch the loss against the chance level (dashed) and the global "
        "gradient norm before and after clipping. Clipping, threshold, optimizer and learning rate may change "
        "while it runs: the change takes effect at the next step and is marked on the plots."),
    "activations": (
        "Every backward step of a vanilla RNN multiplies by diag(φ'(a_t)) W_hh, so ‖∂h_t/∂h_{t-1}‖ ≤ "
        "γ·σ_max(W_hh) with γ = sup|φ'|: γ = 1/4 for the sigmoid makes it vanish faster; tanh gives 1 only near "
        "a = 0 and almost 0 once saturated; relu and linear pass exactly 1 where active."),
    "atlas": (
        "One configuration says whether a network forgets; the Atlas says where it starts to, as a setting moves. "
        "Each point is a full analysis at one value of the axis for each seed; the line is the mean over seeds, "
        "the band their min–max. Two axes give a line per value of the shorter one, or a heatmap."),
    "sensitivity": (
        "Zucchet & Orvieto (2024): vanishing and exploding ∂h_T/∂h_t are not the whole story, because as a "
        "recurrence's memory grows (eigenvalues λ → 1) the state's sensitivity to the recurrent parameters, "
        "‖∂h_t/∂θ‖², explodes faster than the state itself, as (1−λ²)⁻³ against 1/(1−λ²) for h_t = λh_{t-1} + x_t, "
        "even where ∂h_T/∂h_t stays below 1. Dividing by ‖h_t‖² (the ratio, what a normalisation does) still "
        "leaves (1−λ²)⁻²: the remedies are normalised inputs and reparameterised diagonal recurrences (the LRU's "
        "γ and λ = exp(−exp(ν) + iθ); its phase θ stays sensitive, see the curse-of-memory preset)."),
}


def _name(path: str) -> str:
    """A file's name without its folder ('python:inputs' as it is): what a slide or summary may show."""
    return path if path.startswith("python:") else path.replace("\\", "/").rsplit("/", 1)[-1]


def describe(cfg) -> str:
    """One line: the cells and the settings that matter, e.g. "RNN (tanh), LSTM · task adding · T=100 · ..."."""
    cells = ", ".join(f"{cell_type(c).label} ({cfg.activation})" if "activation" in cell_type(c).settings
                      else cell_type(c).label for c in cfg.cells)  # the RNN's activation, the gated cells' name
    extra = [] if cfg.state_dict_path else [  # loaded weights: no init made them
        f"init {cfg.init}" + (f" ×{cfg.init_scale:g}" if cfg.init not in ("default", "chrono") else "")]
    if cfg.forget_bias is not None:
        extra.append(f"b_f={cfg.forget_bias:g}")
    if cfg.layer_norm:
        extra.append("layer norm")
    if cfg.num_layers > 1:
        extra.append(f"{cfg.num_layers} layers")
    if cfg.bidirectional:
        extra.append("bidirectional")
    if cfg.truncate:
        extra.append(f"truncated BPTT k={cfg.truncate}")
    task = "task " + cfg.task + (f" ({'hello' if cfg.text == 'hello' else 'sonnets'})" if cfg.task == "charlm" else "")
    if cfg.inputs_path:  # a user's files: their inputs and loss, not a task (the task field is unused)
        task = f"inputs {_name(cfg.inputs_path)} · " + (
            f"loss on {_name(cfg.targets_path)} through {cfg.readout or 'the readout'} ({cfg.loss_steps} steps)"
            if cfg.targets_path else f"random probe loss ({cfg.loss_steps} steps)")
    if cfg.state_dict_path:
        task = f"weights {_name(cfg.state_dict_path)}" + (f" ({cfg.module})" if cfg.module else "") + " · " + task
    return (f"{cells} · {task} · T={cfg.seq_len} · H={cfg.hidden_size} · B={cfg.batch_size} · seed "
            f"{cfg.seed} · {cfg.dtype} · " + " · ".join(extra))


__all__ = ["VIEW_TITLES", "VIEW_GUIDES", "describe"]
