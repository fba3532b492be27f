# Puts the repository root on sys.path so `pytest` finds rnn_models/ and analysis/ from any directory.
