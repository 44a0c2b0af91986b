"""The installed console commands (pyproject.toml's [project.scripts]).

Each imports its command only when called, so that the training commands can
first restart with malloc set for XLA's per-step buffers, before JAX is
imported (host_memory.restart_with_huge_pages), as launch.py does.
"""

from brainseg_jax import host_memory


def train():
  host_memory.restart_with_huge_pages()
  from brainseg_jax import launch
  launch.main()


def compare():
  host_memory.restart_with_huge_pages()
  from brainseg_jax import compare as command
  command.main()


def evaluate():
  from brainseg_jax import eval as command
  command.main()


def predict():
  from brainseg_jax import predict as command
  command.main()


def calibrate():
  from brainseg_jax import calibrate as command
  command.main()


def build():
  from brainseg_jax import build as command
  command.main()


def sample():
  from brainseg_jax import sample as command
  command.main()


def export():
  from brainseg_jax import export as command
  command.main()
