"""The built-in demo: synthetic spectrograms and the pruning lab run end to end."""
