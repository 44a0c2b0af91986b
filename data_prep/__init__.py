"""Volume preprocessing and synthetic-data generation for brainseg_jax training and evaluation."""
