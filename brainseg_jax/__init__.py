"""brainseg_jax: unsupervised anomaly segmentation of brain MRI in JAX."""
