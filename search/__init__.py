"""Run config, the CLI and (later) the Ray Tune sparsity search (DESIGN.md §6)."""
