"""The contract between the packages: definitions every layer (hw, golden, compiler, perf) shares,
free of torch and simulation code (docs/architecture.md is the prose of the same contract)."""
