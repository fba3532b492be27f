"""One small module per view: TITLE (the tab's label), VIEW (analysis.figures' view name), GUIDE, render(ctx), and
NEEDS_FULL = True where the view reads the Jacobian products (it waits for the full analysis; the others are drawn
from the gradient pass alone while the full analysis is pending)."""
from __future__ import annotations

from dataclasses import dataclass, field

from . import activations, atlas, cell_state, gradient_flow, jacobians, sensitivity, spectrum, timeline, training


@dataclass
class Context:
    settings: object  # controls.Settings
    config: object  # ExperimentConfig in force
    results: dict  # {key: ExperimentResult}
    histories: dict | None = None  # {key: history dict} from the live-training tab
    extra: dict = field(default_factory=dict)
    own: bool = False  # results of an uploaded model (figures from ctx.results, not from the config)


TABS = (gradient_flow, jacobians, spectrum, cell_state, training, activations, sensitivity, atlas, timeline)


def needs_full(module) -> bool:
    """True for views that read the Jacobian products (result.jac), absent from a gradient-pass-only result."""
    return getattr(module, "NEEDS_FULL", False)
