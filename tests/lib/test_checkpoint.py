"""Checkpoint/resume of the whole training state, in the middle of a cycle.

A PROFIT run is stopped after the reference steps of a cycle and before its
main step (the stored ``delta`` is then nonzero, and the update
count says that the main step comes next), saved with orbax, restored into
fresh objects (single device) or a fresh process (8-device mesh, restored
onto its shardings from abstract targets), and continued: the params and
optimizer state must be bit-identical to those of the uninterrupted run.
"""

import dataclasses
import doctest
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_profit
from examples.sharded_finetune import checkpointing, models, train
from examples.sharded_finetune.configs import quick
from tests.lib import _sharded_worker as worker
from tests.lib.test_sharding import run_worker


class _Runner:
  """Per-call PROFIT steps on one device; each instance has its own objects."""

  def __init__(self):
    self.mesh = models.make_mesh((1, 1), devices=jax.devices()[:1])
    model = worker.tiny_model()
    self.shardings, self.abstract_params = models.params_layout(model, self.mesh)
    self.tx = worker.profit_adamw()
    self.state_shardings = models.opt_state_shardings(
      self.tx, self.abstract_params, self.shardings, self.mesh
    )
    self.step = worker.per_call_step(
      train.make_loss_fn(model, self.mesh),
      self.tx,
      self.mesh,
      self.shardings,
      self.state_shardings,
    )
    self.model = model
    self.initial_params = None
    self.init_opt_state = jax.jit(self.tx.init, out_shardings=self.state_shardings)

  def fresh_state(self) -> checkpointing.TrainState:
    if self.initial_params is None:
      params, _ = models.init_params(self.model, self.mesh, seed=0)
      self.initial_params = jax.device_get(params)
    params = jax.device_put(self.initial_params, self.shardings)
    return checkpointing.TrainState(jnp.int32(0), params, self.init_opt_state(params))

  def run(self, state, stop):
    """Continues ``state`` (donated) up to ``stop`` calls in total."""
    p, s = state.params, state.opt_state
    for i in range(int(state.step), stop):
      p, s = self.step(p, s, worker.tokens(i))
    return checkpointing.TrainState(jnp.int32(stop), p, s)

  def restore_target(self):
    """The restore target from shapes alone, as a fresh process builds it."""
    return checkpointing.abstract_state(
      checkpointing.TrainState(
        jax.ShapeDtypeStruct((), jnp.int32),
        self.abstract_params,
        jax.eval_shape(self.tx.init, self.abstract_params),
      ),
      checkpointing.TrainState(
        models.replicated(self.mesh), self.shardings, self.state_shardings
      ),
    )


def _differs(a, b) -> bool:
  return any(jax.tree.leaves(jax.tree.map(lambda x, y: bool(np.any(x != y)), a, b)))


def test_single_device_mid_cycle_resume_is_bit_identical(tmp_path):
  first = _Runner()
  full = jax.device_get(first.run(first.fresh_state(), worker.TOTAL_CALLS))
  stopped = first.run(first.fresh_state(), worker.STOP_AFTER)
  cycle = worker.N_REF + 1
  assert int(stopped.opt_state.count) % cycle == worker.N_REF  # Main step next.
  moved = jax.tree.map(lambda d: bool(np.any(d != 0)), stopped.opt_state.delta)
  assert all(jax.tree.leaves(moved))  # delta matters for the next call.
  with checkpointing.manager(tmp_path) as mngr:
    assert checkpointing.save(mngr, stopped, extra={"history": [1.5]})
  saved = jax.device_get(stopped)
  del first, stopped

  fresh = _Runner()  # New optimizer, step function, manager and target.
  with checkpointing.manager(tmp_path) as mngr:
    assert mngr.latest_step() == worker.STOP_AFTER
    restored, extra = checkpointing.restore(mngr, fresh.restore_target())
  assert extra == {"history": [1.5]}
  assert isinstance(restored.opt_state, optax_profit.ProfitState)
  chex.assert_trees_all_equal_structs(restored, saved)
  restored_host = jax.device_get(restored)
  chex.assert_trees_all_equal(restored_host, saved)

  resumed = fresh.run(restored, worker.TOTAL_CALLS)
  chex.assert_trees_all_equal(jax.device_get(resumed), full)

  # The check can fail: resuming from the params alone (a fresh PROFIT state:
  # delta and the position in the cycle lost) lands elsewhere.
  params = jax.tree.map(jnp.asarray, restored_host.params)
  params_only = checkpointing.TrainState(
    restored_host.step, params, fresh.tx.init(params)
  )
  restarted = fresh.run(params_only, worker.TOTAL_CALLS)
  assert _differs(jax.device_get(restarted.params), full.params)


def test_restore_without_checkpoint_names_the_directory(tmp_path):
  with checkpointing.manager(tmp_path / "empty") as mngr:
    with pytest.raises(FileNotFoundError, match="empty"):
      checkpointing.restore(mngr, {})


def _load(path):
  with np.load(path) as data:
    return dict(data)


def test_sharded_mid_cycle_resume_in_a_fresh_process_is_bit_identical(tmp_path):
  run_worker(tmp_path, "ckpt-save")
  run_worker(tmp_path, "ckpt-resume")  # A fresh process: nothing in memory.
  saved = json.loads((tmp_path / "ckpt-save.json").read_text())
  resumed = json.loads((tmp_path / "ckpt-resume.json").read_text())
  assert saved["count"] == resumed["count"] == worker.STOP_AFTER
  assert resumed["step"] == worker.STOP_AFTER
  assert resumed["opt_state_type"] == "ProfitState"
  assert resumed["extra"] == {"note": "mid-cycle"}

  # Restored onto the mesh with the saved shardings; the params' mirrors in
  # the PROFIT state share the params' shardings, which are really sharded.
  assert resumed["restored"].keys() == saved["saved"].keys()
  for key, leaf in saved["saved"].items():
    assert resumed["restored"][key] == leaf, key
  params = {
    k[len(".params") :]: v for k, v in saved["saved"].items() if k.startswith(".params")
  }
  assert len(params) == 16
  for path, leaf in params.items():
    assert leaf["shard_shape"] != leaf["shape"], path
    for mirror in (".delta", ".main_state[0].mu", ".main_state[0].nu"):
      assert saved["saved"][".opt_state" + mirror + path]["spec"] == leaf["spec"]

  at_interrupt = _load(tmp_path / "at_interrupt.npz")
  restored = _load(tmp_path / "restored.npz")
  assert at_interrupt.keys() == restored.keys()
  for key in at_interrupt:
    np.testing.assert_array_equal(restored[key], at_interrupt[key], err_msg=key)
  delta = {k: v for k, v in at_interrupt.items() if ".delta" in k}
  assert delta
  for key, value in delta.items():
    assert np.any(value != 0), f"{key}: the run was not mid-cycle"

  uninterrupted = _load(tmp_path / "uninterrupted.npz")
  final = _load(tmp_path / "resumed.npz")
  assert uninterrupted.keys() == final.keys()
  for key in uninterrupted:
    np.testing.assert_array_equal(final[key], uninterrupted[key], err_msg=key)


def test_example_resumes_a_finetuning_run(tmp_path):
  """The example's loop: stop after 2 PROFIT cycles, resume, finish."""
  config = dataclasses.replace(
    quick.get_config(),
    seq_len=16,
    batch_size=4,
    eval_windows=4,
    d_model=16,
    num_layers=1,
    num_heads=2,
    d_ff=32,
    eval_every=2,
    checkpoint_every=4,
  )
  mesh = models.make_mesh((1, 1), devices=jax.devices()[:1])
  exp = train.Experiment(config, tmp_path, mesh=mesh, show_progress=False)
  spec = checkpointing.RunSpec("profit", 1e-3)

  def run(directory, num_batches):
    return exp.train(
      spec,
      exp.init_params(0),
      num_batches=num_batches,
      domain="new",
      stream=train.FINETUNE_STREAM,
      checkpoint_dir=tmp_path / directory,
    )

  full_params, full = run("full", 8)
  _, first = run("split", 4)
  resumed_params, second = run("split", 8)
  assert full["resumed_from_step"] is None and first["resumed_from_step"] is None
  assert second["resumed_from_step"] == 4
  chex.assert_trees_all_equal(
    jax.device_get(resumed_params), jax.device_get(full_params)
  )
  assert second["history"] == full["history"]
  assert [h["step"] for h in full["history"]] == [0, 2, 4, 6, 8]
  # Both fine-tuning domains are evaluated, at the same points.
  assert all({"old", "new"} <= h.keys() for h in full["history"])
  # The loss moved: the run did train.
  assert full["history"][-1]["new"] != full["history"][0]["new"]


def test_checkpointing_docstring_example():
  result = doctest.testmod(checkpointing, optionflags=doctest.ELLIPSIS)
  assert result.attempted > 0 and result.failed == 0
