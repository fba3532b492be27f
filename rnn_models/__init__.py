"""rnn_models: the math of recurrent cells (RNN, LSTM, GRU); knows nothing of tasks, analysis or UI."""
from .cells import GRUCell, LayerNorm, LSTMCell, RNNCell, make_cell
from .config import ACTIVATION_GAMMA, ACTIVATIONS, CELLS, INITS, ConfigError, ModelConfig
from .init import initialize_cell, spectral_radius
from .network import RecurrentNetwork, Run, Trace, infer_config_from_torch_state_dict, run_cell

__all__ = ["RNNCell", "LSTMCell", "GRUCell", "LayerNorm", "make_cell", "ModelConfig", "ConfigError", "CELLS",
           "ACTIVATIONS", "INITS", "ACTIVATION_GAMMA", "initialize_cell", "spectral_radius", "RecurrentNetwork",
           "Run", "Trace", "run_cell", "infer_config_from_torch_state_dict"]
