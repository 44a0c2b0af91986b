"""Orbax checkpoints of the train state, with errors a user can act on.

Orbax writes each checkpoint into a temporary folder and renames it when it
is complete, so a killed run never leaves a half-written checkpoint that would
be picked up as the latest one.
"""

import os

import jax
import orbax.checkpoint as ocp

from brainseg_jax.errors import UserError


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


class Checkpointer:
  """Saves the train state (and the config beside it) and restores the latest."""

  def __init__(self, workdir: str, max_to_keep: int = 3, create: bool = True):
    self.directory = checkpoint_dir(workdir)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state, config_dict: dict):
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config_dict)))

  def restore(self, template_state, step: int | None = None):
    """Restores `step` (default: latest) onto the shardings of `template_state`."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise UserError(f"no checkpoint in {self.directory}: train first "
                      "(python launch.py --config=... --workdir=...)")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template_state)
    try:
      restored = self._manager.restore(
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    except Exception as e:  # Orbax raises many types for unreadable files.
      first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
      raise UserError(f"checkpoint {self.directory}/{step} cannot be restored "
                      f"({type(e).__name__}: {first_line[:300]}); delete it to resume "
                      "from the previous one, or retrain") from e
    return restored.state

  def saved_config(self, step: int | None = None) -> dict | None:
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    return self._manager.restore(
        step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config

  def wait_until_finished(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.close()
