"""PROFIT on a device mesh: state shardings, communication, and results.

The multi-device work runs once, in a subprocess with 8 simulated CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8`` must be set before
JAX starts), by ``tests/lib/_sharded_worker.py sharding``; it writes sharding
specs, compiled HLO and params to a temporary directory. The tests below
check them against expectations computed here: the logical axis rules of the
example, the params' own shardings, a plain-AdamW baseline and a
single-device run.
"""

import collections
import json
import math
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.lib import _sharded_worker

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "lib" / "_sharded_worker.py"
NUM_DEVICES = 8
MESH = {"data": 4, "model": 2}


def run_worker(out: pathlib.Path, *tasks: str, timeout: int = 600) -> None:
  """Runs ``_sharded_worker.py`` with 8 CPU devices; fails with its log."""
  env = dict(os.environ)
  # 8 CPU devices; a long collective timeout, as on a busy 2-core machine a
  # device thread can arrive later than XLA's default 40 s.
  flags = (
    f"--xla_force_host_platform_device_count={NUM_DEVICES}",
    "--xla_cpu_collective_call_terminate_timeout_seconds=600",
  )
  names = {flag.split("=")[0] for flag in flags}
  env["XLA_FLAGS"] = " ".join(
    [f for f in env.get("XLA_FLAGS", "").split() if f.split("=")[0] not in names]
    + list(flags)
  )
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
  )
  result = subprocess.run(
    [sys.executable, str(WORKER), str(out), *tasks],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
    check=False,
  )
  assert result.returncode == 0, (
    f"worker {tasks} failed ({result.returncode}):\n"
    f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
  )


# ---------------------------------------------------------------------------
# A parser of collectives in compiled (post-optimisation) HLO text.

COLLECTIVE_OPS = (
  "all-gather",
  "all-reduce",
  "reduce-scatter",
  "all-to-all",
  "ragged-all-to-all",
  "collective-permute",
  "collective-broadcast",
)
# `%name = TYPE OPCODE(operands), attributes`; TYPE is an array type such as
# `f32[64,32]{1,0}` or a tuple `(f32[], /*index=5*/f32[8])`. Async pairs
# (`all-gather-start` / `-done`) are counted once, at the start.
_INSTRUCTION = re.compile(
  r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(?P<type>.*?)\s+"
  r"(?P<op>" + "|".join(COLLECTIVE_OPS) + r")(?:-start)?\("
)
_ARRAY_TYPE = re.compile(
  r"\b(?:pred|[su](?:2|4|8|16|32|64)|bf16|f16|f32|f64|c64|c128|f8e\w+)"
  r"\[([\d,]*)\]"
)


def collectives(hlo: str) -> list[tuple[str, tuple[tuple[int, ...], ...]]]:
  """``(opcode, result shapes)`` of every collective instruction in ``hlo``."""
  found = []
  for line in hlo.splitlines():
    match = _INSTRUCTION.match(line)
    if match is None:
      continue
    shapes = tuple(
      tuple(int(d) for d in dims.split(",") if d)
      for dims in _ARRAY_TYPE.findall(match["type"])
    )
    found.append((match["op"], shapes))
  return found


def test_parser_reads_collectives_and_ignores_their_uses():
  hlo = "\n".join(
    [
      "  %all-gather.3 = f32[64,32]{1,0} all-gather(f32[16,32]{1,0} %p), "
      "channel_id=1, dimensions={0}",
      "  %all-reduce.8 = (f32[], f32[], /*index=2*/f32[]) all-reduce(%a, %b, %c)",
      "  ROOT %ags = (f32[8]{0}, f32[32]{0}) all-gather-start(f32[8]{0} %x)",
      "  %agd = f32[32]{0} all-gather-done((f32[8]{0}, f32[32]{0}) %ags)",
      "  %fusion.1 = f32[64,32]{1,0} fusion(%all-gather.3, %all-reduce.8), kind=kLoop",
      "  %gte = f32[] get-tuple-element(%all-reduce.8), index=0",
      "  %rs = bf16[4,8]{1,0} reduce-scatter(bf16[16,8]{1,0} %y), dimensions={0}",
    ]
  )
  assert collectives(hlo) == [
    ("all-gather", ((64, 32),)),
    ("all-reduce", ((), (), ())),
    ("all-gather", ((8,), (32,))),
    ("reduce-scatter", ((4, 8),)),
  ]


# ---------------------------------------------------------------------------
# The worker's results.


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
  out = tmp_path_factory.mktemp("sharding")
  run_worker(out, "sharding")
  report = json.loads((out / "sharding.json").read_text())
  return out, report


def _expected_spec(path: str) -> list:
  """The FSDP + tensor-parallel layout the example's README promises."""
  if path.endswith("['embedding']"):
    return ["model", "data"]  # [vocab, embed]
  if path == "['positions']":
    return [None, "data"]  # [length, embed]
  if re.search(r"\['(query|key|value)'\]\['kernel'\]$", path):
    return ["data", "model"]  # [embed, heads]
  if path.endswith("['out']['kernel']"):
    return ["model", "data"]  # [heads, embed]
  if path.endswith("['mlp_in']['kernel']"):
    return ["data", "model"]
  if path.endswith("['mlp_in']['bias']"):
    return ["model"]
  if path.endswith("['mlp_out']['kernel']"):
    return ["model", "data"]
  if re.search(r"\['(ln_\w+)'\]\['(scale|bias)'\]$|\['mlp_out'\]\['bias'\]$", path):
    return ["data"]
  raise AssertionError(f"unexpected param {path}")


def _shard_shape(shape: list[int], spec: list) -> list[int]:
  sizes = [1 if axis is None else MESH[axis] for axis in spec]
  return [d // s for d, s in zip(shape, sizes, strict=True)]


def test_params_are_sharded_fsdp_and_tensor_parallel(worker):
  _, report = worker
  params = report["params"]
  assert len(params) == 16
  for path, leaf in params.items():
    assert leaf["mesh"] == MESH, path
    assert leaf["spec"] == _expected_spec(path), path
    assert leaf["shard_shape"] == _shard_shape(leaf["shape"], leaf["spec"]), path
    assert leaf["shard_shape"] != leaf["shape"], f"{path} is not sharded"


def _check_state_like_params(state: dict, params: dict, mirrors: tuple[str, ...]):
  """Each param's mirrors in the state carry exactly the param's sharding."""
  matched = set()
  for path, leaf in params.items():
    for prefix in mirrors:
      key = prefix + path
      assert key in state, f"state has no {key}"
      got = state[key]
      assert got["shape"] == leaf["shape"], key
      assert got["spec"] == leaf["spec"], (key, got["spec"], leaf["spec"])
      assert got["shard_shape"] == leaf["shard_shape"], key
      assert got["mesh"] == leaf["mesh"], key
      matched.add(key)
  # Anything else in the state is a scalar (counts, omega, ...): no other,
  # e.g. replicated, copy of a param hides in it.
  for key, leaf in state.items():
    if key not in matched:
      assert leaf["shape"] == [], f"unexpected non-scalar state leaf {key}"


PROFIT_ADAMW_MIRRORS = (".delta", ".main_state[0].mu", ".main_state[0].nu")


def test_eager_init_state_has_the_params_shardings(worker):
  _, report = worker
  _check_state_like_params(
    report["state_eager_init"], report["params"], PROFIT_ADAMW_MIRRORS
  )


def test_jitted_updates_keep_the_shardings(worker):
  """A whole cycle and a reference step under jax.jit without shardings."""
  _, report = worker
  assert report["count_after_updates"] == _sharded_worker.N_REF + 2
  _check_state_like_params(
    report["state_after_updates"], report["params"], PROFIT_ADAMW_MIRRORS
  )
  for path, leaf in report["params"].items():
    assert report["params_after_updates"][path]["spec"] == leaf["spec"], path


def test_explicit_mesh_state_and_updates_keep_the_shardings(worker):
  """Sharding-in-types (``AxisType.Explicit``): no ShardingTypeError, same specs."""
  _, report = worker
  explicit = report["explicit"]
  _check_state_like_params(explicit["state"], explicit["params"], PROFIT_ADAMW_MIRRORS)
  _check_state_like_params(explicit["updates"], explicit["params"], ("",))
  for path, leaf in explicit["params"].items():
    assert leaf["spec"] == report["params"][path]["spec"], path


def _param_shapes(report: dict) -> set[tuple[int, ...]]:
  return {tuple(leaf["shape"]) for leaf in report["params"].values()}


def test_update_communicates_only_scalars(worker):
  """The optimizer update: omega and ||delta||^2 all-reduces, nothing else."""
  out, _ = worker
  found = collectives((out / "update.hlo").read_text())
  assert found, "no collectives: the global omega needs a cross-device sum"
  for op, shapes in found:
    assert op == "all-reduce", (op, shapes)
    assert all(shape == () for shape in shapes), (op, shapes)


def test_cpu_update_gathers_only_per_device_partial_sums(worker):
  """XLA:CPU's one-pass reduction: partial sums gathered, never an array.

  The SPMD partitioner combines a variadic reduction's per-device partial
  sums with all-gathers of at most one value per device.
  """
  out, _ = worker
  found = collectives((out / "update_cpu.hlo").read_text())
  assert any(op == "all-gather" for op, _ in found), "the check below is vacuous"
  for op, shapes in found:
    assert op in ("all-reduce", "all-gather"), (op, shapes)
    for shape in shapes:
      assert math.prod(shape) <= _sharded_worker.NUM_DEVICES, (op, shape)


def test_replicated_delta_shows_parameter_all_gathers(worker):
  """The check above can fail: a replicated delta all-gathers params."""
  out, report = worker
  found = collectives((out / "update_replicated.hlo").read_text())
  gathered = {s for op, shapes in found if op == "all-gather" for s in shapes}
  sharded = _param_shapes(report)
  assert sharded <= gathered, sharded - gathered


def _arrays(found, scalars: bool):
  """Counts ``(opcode, shape)`` of each array moved (tuples split).

  XLA combines independent collectives into tuple-shaped ones differently
  from one program to the next, so the arrays are compared, not the
  instructions.
  """
  return collections.Counter(
    (op, shape) for op, shapes in found for shape in shapes if (shape == ()) == scalars
  )


def test_train_step_adds_only_scalar_all_reduces_to_adamw(worker):
  """A train step moves exactly the arrays AdamW's moves, plus scalars.

  One batch per call (gradient, ``tx.update``, ``apply_updates``). Both steps
  all-gather weights for the forward pass (that is FSDP) and reduce
  gradients; PROFIT adds only the scalar reductions of omega and
  ||delta||^2.
  """
  out, _ = worker
  profit = collectives((out / "batch_step_profit.hlo").read_text())
  adamw = collectives((out / "batch_step_adamw.hlo").read_text())
  assert any(op == "all-gather" for op, _ in adamw)  # FSDP gathers weights.
  assert _arrays(profit, scalars=False) == _arrays(adamw, scalars=False)
  extra = _arrays(profit, scalars=True) - _arrays(adamw, scalars=True)
  assert extra, "PROFIT's omega needs a cross-device sum"
  assert {op for op, _ in extra} == {"all-reduce"}


def test_example_cycle_step_adds_no_array_collective(worker):
  """The example's step (a scan over one cycle): PROFIT(SGD) vs SGD.

  XLA may peel or unroll the scan differently for the two optimizers, so the
  arrays moved are compared as kinds (opcode and shape), not counted.
  """
  out, _ = worker
  profit = collectives((out / "cycle_step_profit.hlo").read_text())
  sgd = collectives((out / "cycle_step_sgd.hlo").read_text())
  new_kinds = set(_arrays(profit, scalars=False)) - set(_arrays(sgd, scalars=False))
  assert not new_kinds, new_kinds
  assert ("all-reduce", ()) in _arrays(profit, scalars=True)


def test_sharded_run_matches_single_device(worker):
  """Four PROFIT cycles of the example's step, on the 4x2 mesh and on 1 device.

  The main optimizer is SGD with momentum. With Adam, the per-coordinate
  normalisation turns the float noise of a different reduction order, in
  coordinates whose gradient is near zero, into steps of +-lr (measured here:
  PROFIT(AdamW) on the mesh and on one device differ by up to 5e-4 after one
  main step with lr=1e-2, while their gradients agree to 5e-8). PROFIT's own
  sharded code (delta, omega, projection, restore) is the same for every
  main optimizer, and the AdamW state's shardings are checked above.
  """
  out, report = worker
  init = {k: np.load(out / f"init_{k}.npz") for k in ("sharded", "single")}
  final = {k: np.load(out / f"final_{k}.npz") for k in ("sharded", "single")}
  assert set(final["sharded"]) == set(final["single"]) == set(report["params"])
  largest_change = 0.0
  for key in final["single"]:
    np.testing.assert_array_equal(init["sharded"][key], init["single"][key])
    np.testing.assert_allclose(
      final["sharded"][key], final["single"][key], rtol=1e-5, atol=1e-6, err_msg=key
    )
    change = np.abs(final["single"][key] - init["single"][key]).max()
    largest_change = max(largest_change, float(change))
  assert largest_change > 1e-2  # The tolerance is far below the training signal.
  sharded = report["run_sharded"]["diagnostics"]
  single = report["run_single"]["diagnostics"]
  assert [d["projected"] for d in sharded] == [d["projected"] for d in single]
  assert 0 < sum(d["projected"] for d in single) < len(single)  # Both branches.
  for a, b in zip(sharded, single, strict=True):
    np.testing.assert_allclose(a["omega"], b["omega"], rtol=1e-4)
    np.testing.assert_allclose(a["delta_norm"], b["delta_norm"], rtol=1e-5)
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
  for path, leaf in report["run_sharded"]["params"].items():
    assert leaf["spec"] == report["params"][path]["spec"], path
