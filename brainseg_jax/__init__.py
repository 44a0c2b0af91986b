"""brainseg_jax: unsupervised anomaly segmentation of brain MRI in JAX."""

__version__ = "0.2.0"
