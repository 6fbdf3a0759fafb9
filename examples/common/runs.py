"""Run naming, cached results and orbax checkpoints, shared by the examples.

A run's folder is named by a readable prefix and a digest of every setting its
result depends on (:func:`run_name`), so a changed setting gets a new folder
and an unchanged one is found again: a run resumes from its latest orbax
checkpoint (:class:`Checkpoints`: the training state plus the JSON history so
far), and a finished run's ``result.json`` (:func:`write_json`,
:func:`load_result`) is loaded instead of run again, so an interrupted sweep
continues where it stopped.
"""

import hashlib
import json
import pathlib
from typing import Any

import orbax.checkpoint as ocp


def digest(settings: Any) -> str:
  """A 10-character digest of JSON-serializable ``settings``."""
  text = json.dumps(settings, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:10]


def run_name(prefix: str, settings: Any) -> str:
  """``<prefix>-<digest(settings)>``."""
  return f"{prefix}-{digest(settings)}"


def write_json(path: pathlib.Path, payload: Any) -> None:
  """Writes ``payload`` as JSON atomically (a crash leaves no partial file)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(payload, indent=1, default=str))
  tmp.replace(path)


def load_result(path: pathlib.Path) -> dict[str, Any] | None:
  """The cached result at ``path``, or None if the run has not finished."""
  return json.loads(path.read_text()) if path.exists() else None


class Checkpoints:
  """Orbax checkpoints of one run: ``state`` pytree plus a JSON ``history``.

  Args:
    directory: the run's folder; checkpoints go to ``<directory>/checkpoints``.
  """

  def __init__(self, directory: pathlib.Path):
    self._manager = ocp.CheckpointManager(
      directory.absolute() / "checkpoints",
      options=ocp.CheckpointManagerOptions(
        max_to_keep=1, create=True, enable_async_checkpointing=False
      ),
    )

  def save(self, step: int, state: Any, history: list[dict[str, Any]]) -> None:
    """Saves ``state`` and ``history`` as checkpoint ``step``."""
    self._manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), history=ocp.args.JsonSave(history)
      ),
    )
    self._manager.wait_until_finished()

  def restore(self, target: Any) -> tuple[int, Any, list[dict[str, Any]]] | None:
    """``(step, state, history)`` of the latest checkpoint, or None.

    Args:
      target: a pytree with the state's structure, shapes and dtypes.
    """
    step = self._manager.latest_step()
    if step is None:
      return None
    restored = self._manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), history=ocp.args.JsonRestore()
      ),
    )
    return step, restored["state"], list(restored["history"])

  def close(self) -> None:
    """Releases the manager."""
    self._manager.close()
