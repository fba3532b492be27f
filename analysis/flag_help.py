"""One line of help per ``ExperimentConfig`` field: what ``--help`` prints beside each flag built from the field.

The allowed values of a choice field are not repeated here: argparse shows them from ``config.FIELD_CHOICES`` (the
tuples the config's validation checks against), and the ranges are the validation's own messages. A test checks that
every field has a line, so a new field cannot reach the command line without one.
"""
from __future__ import annotations

FIELD_HELP = {
    # model
    "cell": "recurrent cell (a vanilla RNN, an LSTM, a GRU, or a diagonal LRU, RG-LRU, minGRU, minLSTM)",
    "compare": "comma-separated cells analysed side by side on the same data and seed, e.g. rnn,lstm,gru",
    "activation": "phi of the vanilla RNN (gated cells use their own sigmoid/tanh)",
    "hidden_size": "H, units per layer and direction",
    "input_size": "I, features per step (default: what the task needs; 8 for the random task)",
    "num_layers": "L, stacked layers",
    "bidirectional": "add a time-reversed cell per layer",
    "init": "weight initialization (see rnn_models/init.py)",
    "init_scale": "gain (xavier, orthogonal), scale a of W_hh = a*I (identity), spectral radius (spectral)",
    "layer_norm": "layer normalization inside the cell (Ba et al. 2016)",
    "peephole": "LSTM only: peephole connections (i, f see c_{t-1}; o sees c_t)",
    "forget_bias": "LSTM only: the forget gate's total bias (default: the init's)",
    "lru_r_min": "LRU only: inner radius of the ring |lambda| is drawn from at initialization (Orvieto et al. 2023)",
    "lru_r_max": "LRU only: outer radius of that ring (at most 1)",
    "lru_phase_max": "LRU only: arg lambda is drawn from [0, this] at initialization (radians, at most 2 pi)",
    "lru_gamma": "LRU only: normalize the input by gamma = sqrt(1 - |lambda|^2) (a trainable gamma_log)",
    # data
    "task": "data and loss: the random probe u.h_T-1, or a synthetic task with a chance level",
    "seq_len": "T, steps per sequence",
    "batch_size": "B, sequences per batch",
    "seed": "seed of the weights and the data",
    "dtype": "floating-point precision of the whole analysis",
    "text": "charlm task: the corpus (Shakespeare's sonnets, or 'hello')",
    "inputs_path": "your inputs: a .npy/.pt array (T, B, I) analysed with the random probe loss",
    "state_dict_path": "a state_dict file (torch.nn.RNN/LSTM/GRU or a whole model's); its architecture replaces the "
                       "model flags",
    # your own model
    "module": "the recurrent module's name inside the state_dict (when the file holds several), e.g. rnn",
    "readout": "an nn.Linear in the same state_dict whose outputs the targets score, e.g. decoder",
    "embedding": "an nn.Embedding in the same state_dict that turns token-id inputs into vectors, e.g. encoder",
    "targets_path": "the readout's targets (.npy/.pt): class ids -> cross-entropy, floats -> MSE",
    "h0_path": "the initial state (.npy/.pt: h0, or the tuple (h0, c0))",
    "batch_first": "the inputs file is (B, T, I)",
    # analysis
    "loss_steps": "where the loss is taken: the task decides (auto), the last step, or every step",
    "layer": "the layer analysed (-1 = the last)",
    "jacobian_lags": "Jacobian products at every lag 0..T-1, or at about --num-log-lags log-spaced lags",
    "num_log_lags": "lags reported with --jacobian-lags log",
    "jacobian_batch": "sequences analysed for the Jacobians (0 = the whole batch)",
    "n_singular": "top singular values kept per lag",
    "horizon_threshold": "the memory horizon is the first lag whose product norm falls below this",
    "lyapunov_k": "Lyapunov exponents computed (QR method; 0 = none)",
    "truncate": "truncated-BPTT window k (0 = full backpropagation)",
    "spectra": "LSTM state sigma_max: exact svdvals at every lag, or a certified block-iteration estimate",
    "jacobian_detail": ("Jacobian detail: light (log-spaced lags, 4 sequences), exact (as configured), or auto "
                        "(light for your own model when exact is estimated above 10 s; said in the notes)"),
    # compute
    "threads": "threads of the analysis (0 = every core this process may use)",
    "device": "where the engine runs (cuda is refused without a GPU; auto falls back to cpu and says so)",
    # training
    "optimizer": "training: the optimizer",
    "lr": "training: the learning rate",
    "clip": "training: gradient clipping by the global norm or by value (or none)",
    "clip_threshold": "training: the clipping threshold",
    "train_steps": "training steps (train: default 100; a sweep's final_loss metrics need them)",
}
