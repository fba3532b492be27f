"""analysis: what we measure (gradient norms, Jacobian products, spectra, training); never imports Streamlit."""
from .config import ExperimentConfig
from .experiment import ExperimentResult, run_comparison, run_experiment
from .own_model import analyze

__all__ = ["ExperimentConfig", "ExperimentResult", "run_experiment", "run_comparison", "analyze"]
