"""sparsetrain: hardware generator and RTL verification toolkit for sparse CNN training."""
__version__ = "0.1.0"
