"""analysis: what we measure (gradient norms, Jacobian products, spectra, training); never imports Streamlit."""
__version__ = "0.1.0"  # the one place: pyproject.toml reads it, gdlab --version and the dashboard show it

from .config import ExperimentConfig
from .experiment import ExperimentResult, run_comparison, run_experiment
from .own_model import analyze  # noqa: E402
from .sweep import sweep  # noqa: E402 - the function; its helpers live in the module analysis.sweep
from .run_files import load_run  # noqa: E402
from .watch import watch  # noqa: E402

__all__ = ["__version__", "ExperimentConfig", "ExperimentResult", "run_experiment", "run_comparison", "sweep",
           "analyze", "watch", "load_run"]
