"""Subcommands of the `sparsetrain` command, discovered by sparsetrain.cli."""
