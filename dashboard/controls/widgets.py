"""Controls drawn inside the views: training task and run controls, temperature, display toggles, gate choice."""
from __future__ import annotations

import streamlit as st

from analysis.config import CLIP_MODES, OPTIMIZERS, TASK_NAMES, ExperimentConfig

def training_task_control(config: ExperimentConfig) -> ExperimentConfig:
    """The config to train: the random probe cannot be trained, so a task is chosen for it here."""
    if config.task != "random":
        return config
    trainable = [t for t in TASK_NAMES if t != "random"]
    st.selectbox("Task to train on (the random probe has no target)", trainable, key="train_task")
    return config.replace(task=st.session_state.get("train_task", "adding"))

def training_controls() -> dict:
    """Clip mode, threshold, optimizer and lr widgets; they may change while training runs."""
    c = st.columns(4)
    c[0].selectbox("Clipping", list(CLIP_MODES), key="clip",
                   help="norm: g <- threshold * g / ||g|| when ||g|| > threshold; value: clamp each component.")
    c[1].number_input("Clip threshold", min_value=1e-6, max_value=1e12, key="clip_threshold", format="%.3g")
    c[2].selectbox("Optimizer", list(OPTIMIZERS), key="optimizer")
    c[3].number_input("Learning rate", min_value=1e-7, max_value=100.0, key="lr", format="%.2e", step=1e-4)
    ss = st.session_state
    return {"clip": ss["clip"], "clip_threshold": float(ss["clip_threshold"]), "optimizer": ss["optimizer"],
            "lr": float(ss["lr"])}

def training_run_controls() -> tuple[int, int]:
    c = st.columns(2)
    c[0].number_input("Stop after N steps (0 = up to this session's budget)", min_value=0, max_value=1_000_000, step=10,
                      key="train_steps")
    c[1].number_input("Steps per tick (every 0.5 s)", min_value=1, max_value=50, step=1, key="train_steps_per_tick")
    ss = st.session_state
    return int(ss["train_steps"]), int(ss["train_steps_per_tick"])

def temperature_control() -> float:
    """The sampling temperature of the character-level LM (display only: it never changes the training)."""
    st.slider("Sampling temperature", 0.1, 2.0, step=0.1, key="temperature",
              help="x_{t+1} ~ softmax(y_t / temperature): below 1 the likeliest characters win more often, "
                   "above 1 the choice grows more random.")
    return float(st.session_state["temperature"])

def display_toggle(label: str, key: str, help: str | None = None, disabled: bool = False) -> bool:
    """A display-only switch (never recomputes the analysis)."""
    return st.toggle(label, key=key, help=help, disabled=disabled)

def gate_choice(options: list[str]) -> str | None:
    if not options:
        return None
    if st.session_state.get("display_gate") not in options:
        st.session_state["display_gate"] = options[0]
    return st.segmented_control("Gate shown", options, key="display_gate", required=True)

