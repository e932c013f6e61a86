"""PyTorch training of the golden model: networks, Fashion-MNIST data, activation-gradient pruning,
Campfire weight pruning, the sparse backward, golden tensor export and distributed runs."""
