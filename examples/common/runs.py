"""Run naming, cached results and orbax checkpoints, shared by the examples.

A run's folder is named by a readable prefix and a digest of every setting its
result depends on (:func:`run_name`), so a changed setting gets a new folder
and an unchanged one is found again: a run resumes from its latest orbax
checkpoint (:class:`Checkpoints`: the training state plus the JSON history so
far), and a finished run's ``result.json`` (:func:`write_json`,
:func:`load_result`) is loaded instead of run again, so an interrupted sweep
continues where it stopped.
"""

import functools
import hashlib
import json
import pathlib
import time
from collections.abc import Callable
from typing import Any

import orbax.checkpoint as ocp


def digest(settings: Any, length: int = 10) -> str:
  """A ``length``-character SHA-256 digest of JSON-serializable ``settings``."""
  text = json.dumps(settings, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:length]


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


def resume(
  checkpoints: Checkpoints, state: Any, first: Callable[[], dict[str, Any]]
) -> tuple[int, Any, list[dict[str, Any]], list[float]]:
  """Resumes an epoch-checkpointed run from its latest checkpoint, or starts it.

  Args:
    checkpoints: the run's checkpoints.
    state: the initial training state (its structure, shapes and dtypes).
    first: the metrics before training: history entry 0 (``{"epoch": 0,
      **first(), "wall_s": 0, "cpu_s": 0}``), saved as checkpoint 0 of a new
      run.

  Returns:
    ``(epochs done, state, history, [wall_s, cpu_s] so far)``.
  """
  restored = checkpoints.restore(state)
  if restored is not None:
    start, state, history = restored
    clock = [history[-1]["wall_s"], history[-1].get("cpu_s", 0.0)]
    return start, state, history, clock
  history = [{"epoch": 0, **first(), "wall_s": 0.0, "cpu_s": 0.0}]
  checkpoints.save(0, state, history)
  return 0, state, history, [0.0, 0.0]


def end_epoch(
  checkpoints: Checkpoints,
  epoch: int,
  due: bool,
  state: Any,
  history: list[dict[str, Any]],
  clock: list[float],
  start: tuple[float, float],
) -> None:
  """Ends ``epoch``: a checkpoint if ``due``, then the epoch's time in ``clock``.

  Args:
    checkpoints: the run's checkpoints.
    epoch: the epochs done.
    due: whether to save a checkpoint now.
    state: the training state.
    history: the history so far; its last entry gets the times.
    clock: the run's ``[wall_s, cpu_s]`` before the epoch, updated in place.
    start: the epoch's ``(time.perf_counter(), time.process_time())`` at its
      start.
  """
  if due:
    checkpoints.save(epoch, state, history)
  clock[0] += time.perf_counter() - start[0]
  clock[1] += time.process_time() - start[1]
  history[-1].update(wall_s=clock[0], cpu_s=clock[1])  # now with the checkpoint


def _times(clock: list[float], start: tuple[float, float]) -> dict[str, float]:
  return {
    "wall_s": clock[0] + time.perf_counter() - start[0],
    "cpu_s": clock[1] + time.process_time() - start[1],
  }


def run_epochs(
  checkpoints: Checkpoints,
  resumed: tuple[int, Any, list[dict[str, Any]], list[float]],
  epochs: int,
  every: int,
  epoch_fn: Callable[..., tuple[Any, list[dict[str, Any]]]],
  log: Callable[[int, dict[str, Any]], None],
) -> tuple[Any, list[dict[str, Any]], list[float]]:
  """Trains a run from where :func:`resume` left it to ``epochs``, then closes.

  Args:
    checkpoints: the run's checkpoints.
    resumed: :func:`resume`'s ``(start, state, history, clock)``.
    epochs: the run's epochs.
    every: a checkpoint every this many epochs, and after the last.
    epoch_fn: ``(epoch, state, times) -> (state, new history entries)``;
      ``times()`` is the run's ``{"wall_s", "cpu_s"}`` up to now.
    log: called with the epoch and its last entry once it has ended.

  Returns:
    ``(state, history, [wall_s, cpu_s])``.
  """
  _, state, history, clock = resumed
  for epoch in range(resumed[0], epochs):
    start = (time.perf_counter(), time.process_time())
    state, entries = epoch_fn(epoch, state, functools.partial(_times, clock, start))
    history += entries
    due = (epoch + 1) % every == 0 or epoch + 1 == epochs
    end_epoch(checkpoints, epoch + 1, due, state, history, clock, start)
    log(epoch, entries[-1])
  checkpoints.close()
  return state, history, clock
