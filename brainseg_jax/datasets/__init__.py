"""TFDS builders of 2D brain slices and the input pipeline that reads them."""
