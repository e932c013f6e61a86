"""The golden model, in two halves that do not import each other: ``bitexact`` (the bit-accurate
reference of the hardware, numpy on Python ints) and ``training`` (PyTorch training that exports
the golden tensors). Both build on the contract, ``sparsetrain.arch``."""
