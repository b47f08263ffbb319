"""Masks, the sparsity budget (eq. 10), stage 2 mask training, OMP, stage 3, export (DESIGN §5)."""
