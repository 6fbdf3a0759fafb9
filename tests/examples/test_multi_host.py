"""Multi-process (``jax.distributed``) runs of the sharded example, on localhost.

Every job here is the example's own command line, started by its launcher
(``examples/sharded_finetune/launch.py``: 2 processes x 4 simulated CPU
devices, gloo collectives, a free port) or as one process with 8 devices, on
the tiniest configuration that still has a reference step to checkpoint
after: a 1-block, 32-wide LM, no pre-training, 6 fine-tuning batches (3
PROFIT cycles, ``n_ref = 1``), one batch and one ``tx.update`` per call.
The jobs share a compilation cache (the relaunches reuse the first jobs'
executables) and each runs once per module:

* 2 x 4 and 1 x 8, PROFIT(SGD) and PROFIT(AdamW): same diagnostics, params to
  float32 rounding (SGD) or within AdamW's sign sensitivity;
* 2 x 4 killed after the checkpoint at batch 3 (after cycle 2's reference
  step, before its main step), relaunched on 2 x 4: bit-identical to the
  uninterrupted 2 x 4 run;
* the same checkpoint relaunched on 1 x 8 (killed again after batch 4), then
  back on 2 x 4: the global state moves between meshes and process counts;
* ``make_train_step`` (one cycle per call) on 2 x 4;
* a process that cannot reach the coordinator, a process 0 whose peers never
  come, processes started with different configurations: a clear error
  within the start timeout.
"""

import json
import pathlib
import shutil
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from examples.sharded_finetune import launch, main, train

ROOT = pathlib.Path(__file__).resolve().parents[2]
JOB_TIMEOUT = 300  # seconds per job; a job normally takes 15 to 60 s.
SGD_LR, ADAMW_LR = 0.5, 1e-2
SGD_RUN, ADAMW_RUN = f"profit_sgd_lr{SGD_LR:.0e}", f"profit_lr{ADAMW_LR:.0e}"
CONFIG = [
  "--quick",
  *("--set", "seq_len=16", "--set", "batch_size=8", "--set", "eval_windows=8"),
  *("--set", "d_model=32", "--set", "num_layers=1", "--set", "num_heads=4"),
  *("--set", "d_ff=64", "--set", "pretrain_steps=0", "--set", "ft_steps=6"),
  *("--set", "eval_every=6", "--set", "checkpoint_every=3"),
  *("--set", "adamw_lrs=", "--set", "train_step=per_call"),
  # Reference steps as long as the main steps: PROFIT(SGD)'s main steps then
  # project (omega < 0) at batch 4 only, so both branches are compared.
  *("--set", "profit_ratio=1"),
]
SGD_ONLY = [*CONFIG, "--set", "profit_lrs=", "--set", f"profit_sgd_lrs={SGD_LR}"]
BOTH = [*CONFIG, "--set", f"profit_lrs={ADAMW_LR}", "--set", f"profit_sgd_lrs={SGD_LR}"]
#: Batch 3: cycle 2's reference step is taken, its main step is next.
STOP_MID_CYCLE = 3
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> pathlib.Path:
  return tmp_path_factory.mktemp("jax_cache")


def _env(cache: pathlib.Path) -> dict[str, str]:
  return launch.child_env(
    {
      "JAX_COMPILATION_CACHE_DIR": str(cache),
      "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
  )


def run_job(
  name: str,
  workdir: pathlib.Path,
  args: list[str],
  cache: pathlib.Path,
  *,
  processes: int,
  expect: int = 0,
) -> list[str]:
  """Runs the example (``processes`` x ``8 // processes`` devices); its logs."""
  logs = workdir / f"logs_{name}"
  started = time.perf_counter()
  args = [*args, "--workdir", str(workdir)]
  command = [sys.executable, "-m", "examples.sharded_finetune.main"]
  if processes > 1:
    code = launch.launch(
      args,
      processes=processes,
      devices_per_process=8 // processes,
      timeout=JOB_TIMEOUT,
      start_timeout=60,
      log_dir=logs,
      echo=False,
      env=_env(cache),
    )
  else:
    logs.mkdir(parents=True)
    with open(logs / "process_0.log", "w") as log:
      code = subprocess.run(
        [*command, *args, "--host-devices", "8"],
        cwd=ROOT,
        env=_env(cache),
        stdout=log,
        stderr=subprocess.STDOUT,
        timeout=JOB_TIMEOUT,
        check=False,
      ).returncode
  TIMES[name] = time.perf_counter() - started
  texts = [(logs / f"process_{i}.log").read_text() for i in range(processes)]
  assert code == expect, f"{name}: exit code {code}:\n{texts[0][-5000:]}"
  return texts


def results(workdir: pathlib.Path) -> dict[str, dict]:
  """``results.json``'s fine-tuning records, by run name."""
  data = json.loads((workdir / "results.json").read_text())
  return {r["name"]: r for r in data["finetune"]} | {"_all": data}


def latest_state_dir(workdir: pathlib.Path, run: str) -> pathlib.Path:
  """The ``state`` item of the run's latest checkpoint."""
  (run_dir,) = (workdir / "checkpoints").glob(f"{run}-*")
  step = max(int(p.name) for p in run_dir.iterdir() if p.name.isdigit())
  return (run_dir / str(step) / "state").absolute()


def final_state(workdir: pathlib.Path, run: str) -> dict[str, np.ndarray]:
  """The run's latest checkpoint, read on this 1-device process as NumPy."""
  path = latest_state_dir(workdir, run)
  ckptr = ocp.PyTreeCheckpointer()
  tree = ckptr.metadata(path).item_metadata.tree
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  state = ckptr.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))
  return {
    jax.tree_util.keystr(p): np.asarray(x)
    for p, x in jax.tree_util.tree_leaves_with_path(state)
  }


def params_of(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  return {k: v for k, v in state.items() if k.startswith("['params']")}


# ---------------------------------------------------------------------------
# The jobs (module-scoped: each runs once).


@pytest.fixture(scope="module")
def two_by_four(tmp_path_factory, cache):
  """2 processes x 4 devices, both PROFIT runs, uninterrupted."""
  workdir = tmp_path_factory.mktemp("two_by_four")
  logs = run_job("2x4", workdir, BOTH, cache, processes=2)
  return workdir, logs


@pytest.fixture(scope="module")
def one_by_eight(tmp_path_factory, cache):
  """1 process x 8 devices, the same runs."""
  workdir = tmp_path_factory.mktemp("one_by_eight")
  run_job("1x8", workdir, BOTH, cache, processes=1)
  return workdir


@pytest.fixture(scope="module")
def killed(tmp_path_factory, cache, two_by_four):
  """2 x 4, PROFIT(SGD), every process exits abruptly after batch 3's checkpoint.

  After ``two_by_four``, whose executables it then finds in the cache.
  """
  workdir = tmp_path_factory.mktemp("killed")
  logs = run_job(
    "2x4 killed",
    workdir,
    [*SGD_ONLY, "--stop-after-step", str(STOP_MID_CYCLE)],
    cache,
    processes=2,
    expect=train.EXIT_STOPPED,
  )
  return workdir, logs


def _copy(killed_dir: pathlib.Path, tmp_path_factory, name: str) -> pathlib.Path:
  workdir = tmp_path_factory.mktemp(name)
  shutil.copytree(killed_dir / "checkpoints", workdir / "checkpoints")
  return workdir


@pytest.fixture(scope="module")
def relaunched(tmp_path_factory, cache, killed):
  """The killed job relaunched, 2 x 4 again."""
  workdir = _copy(killed[0], tmp_path_factory, "relaunched")
  run_job("2x4 relaunch", workdir, SGD_ONLY, cache, processes=2)
  return workdir


@pytest.fixture(scope="module")
def resharded(tmp_path_factory, cache, killed, one_by_eight):
  """The killed job relaunched on 1 x 8 (killed after batch 4), then on 2 x 4."""
  workdir = _copy(killed[0], tmp_path_factory, "resharded")
  run_job(
    "1x8 from 2x4",
    workdir,
    [*SGD_ONLY, "--set", "checkpoint_every=1", "--stop-after-step", "4"],
    cache,
    processes=1,
    expect=train.EXIT_STOPPED,
  )
  mid = checkpoint_position(workdir)
  run_job("2x4 from 1x8", workdir, SGD_ONLY, cache, processes=2)
  return workdir, mid


def checkpoint_position(workdir: pathlib.Path) -> dict:
  """The step and PROFIT update count of the run's latest checkpoint."""
  state = final_state(workdir, SGD_RUN)
  return {
    "step": int(state["['step']"]),
    "count": int(state["['opt_state']['count']"]),
  }


@pytest.fixture(scope="module")
def cycle_two_by_four(tmp_path_factory, cache, two_by_four):
  """2 x 4 with ``make_train_step`` (one PROFIT cycle per call)."""
  workdir = tmp_path_factory.mktemp("cycle")
  run_job(
    "2x4 make_train_step",
    workdir,
    [*SGD_ONLY, "--set", "train_step=cycle"],
    cache,
    processes=2,
  )
  return workdir


@pytest.fixture(scope="module", autouse=True)
def report_times():
  yield
  if TIMES:
    print("\nmulti-host job wall times:", {k: round(v, 1) for k, v in TIMES.items()})


# ---------------------------------------------------------------------------
# 2 x 4 against 1 x 8.


def _assert_same_diagnostics(a: list[dict], b: list[dict], rtol: float = 1e-5):
  assert [d["step"] for d in a] == [d["step"] for d in b] == [2, 4, 6]
  assert [d["projected"] for d in a] == [d["projected"] for d in b]
  for x, y in zip(a, b, strict=True):
    np.testing.assert_allclose(x["omega"], y["omega"], rtol=rtol)
    np.testing.assert_allclose(x["delta_norm"], y["delta_norm"], rtol=rtol)


def test_two_processes_match_one_process_with_sgd(two_by_four, one_by_eight):
  two, one = results(two_by_four[0]), results(one_by_eight)
  assert two["_all"]["environment"]["processes"] == 2
  assert one["_all"]["environment"]["processes"] == 1
  assert two["_all"]["environment"]["mesh"] == {"data": 4, "model": 2}
  _assert_same_diagnostics(two[SGD_RUN]["diagnostics"], one[SGD_RUN]["diagnostics"])
  assert [d["projected"] for d in one[SGD_RUN]["diagnostics"]] == [
    False,
    True,
    False,
  ]
  p2 = params_of(final_state(two_by_four[0], SGD_RUN))
  p1 = params_of(final_state(one_by_eight, SGD_RUN))
  assert p2.keys() == p1.keys() and len(p2) == 16
  for k in p1:
    np.testing.assert_allclose(p2[k], p1[k], rtol=1e-5, atol=1e-6, err_msg=k)
  np.testing.assert_allclose(
    two[SGD_RUN]["final"]["new"], one[SGD_RUN]["final"]["new"], rtol=1e-5
  )


def test_two_processes_match_one_process_with_adamw(two_by_four, one_by_eight):
  """Adam turns reduction-order noise into sign flips: <= 2 lr per main step."""
  two, one = results(two_by_four[0]), results(one_by_eight)
  _assert_same_diagnostics(
    two[ADAMW_RUN]["diagnostics"], one[ADAMW_RUN]["diagnostics"], rtol=1e-4
  )
  p2 = params_of(final_state(two_by_four[0], ADAMW_RUN))
  p1 = params_of(final_state(one_by_eight, ADAMW_RUN))
  main_steps = len(one[ADAMW_RUN]["diagnostics"])
  differ, total = 0, 0
  for k in p1:
    diff = np.abs(p2[k] - p1[k])
    assert diff.max() <= 2 * ADAMW_LR * main_steps * 1.01, k
    differ += int((diff > 1e-5).sum())
    total += diff.size
  assert differ <= 0.01 * total, f"{differ} of {total} params differ by > 1e-5"


def test_only_process_zero_reports(two_by_four):
  workdir, (log0, log1) = two_by_four
  assert (workdir / "results.json").exists() and (workdir / "table.md").exists()
  assert "profit_sgd" in log0 and "wall time" in log0 and "batch" in log0
  ours = [line for line in log1.splitlines() if not line.startswith("[Gloo]")]
  for marker in ("batch", "|", "wall time", "mesh", "profit"):
    assert not any(marker in line for line in ours), (marker, ours)


# ---------------------------------------------------------------------------
# Kill, relaunch, reshard.


def test_killed_job_stopped_after_its_checkpoint(killed):
  workdir, (log0, log1) = killed
  assert f"stopped after the checkpoint at batch {STOP_MID_CYCLE}" in log0
  assert "stopped" not in log1
  assert not (workdir / "results.json").exists()
  state = final_state(workdir, SGD_RUN)
  assert int(state["['opt_state']['count']"]) == STOP_MID_CYCLE  # mid-cycle
  assert int(state["['step']"]) == STOP_MID_CYCLE
  # Each process wrote its own shards.
  written = {p.name for p in latest_state_dir(workdir, SGD_RUN).glob("ocdbt.process_*")}
  assert written == {"ocdbt.process_0", "ocdbt.process_1"}


def test_relaunch_after_kill_is_bit_identical(relaunched, two_by_four):
  resumed = results(relaunched)[SGD_RUN]
  assert resumed["resumed_from_step"] == STOP_MID_CYCLE
  full = results(two_by_four[0])[SGD_RUN]
  assert resumed["history"] == full["history"]
  # Every main step's omega, ||delta|| and projection, those before the kill
  # read back from the checkpoint.
  assert resumed["diagnostics"] == full["diagnostics"]
  a, b = final_state(relaunched, SGD_RUN), final_state(two_by_four[0], SGD_RUN)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_relaunch_on_other_process_counts(resharded, two_by_four, one_by_eight):
  """2 x 4 -> 1 x 8 (from batch 3) -> 2 x 4 (from batch 4): the same run."""
  workdir, mid = resharded
  assert mid == {"step": 4, "count": 4}  # 1 x 8 took cycle 2's main step.
  resumed = results(workdir)[SGD_RUN]
  assert resumed["resumed_from_step"] == 4
  full = results(two_by_four[0])[SGD_RUN]
  # Main steps 2 (2 x 4), 4 (1 x 8) and 6 (2 x 4) against the 2 x 4 run's.
  _assert_same_diagnostics(resumed["diagnostics"], full["diagnostics"])
  a = final_state(workdir, SGD_RUN)
  b = final_state(two_by_four[0], SGD_RUN)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)


# ---------------------------------------------------------------------------
# make_train_step in the 2-process job.


def test_make_train_step_in_two_processes(cycle_two_by_four, two_by_four):
  cyc = results(cycle_two_by_four)[SGD_RUN]
  per_call = results(two_by_four[0])[SGD_RUN]
  assert cyc["batches"] == per_call["batches"] == 6
  _assert_same_diagnostics(cyc["diagnostics"], per_call["diagnostics"])
  a = params_of(final_state(cycle_two_by_four, SGD_RUN))
  b = params_of(final_state(two_by_four[0], SGD_RUN))
  for k in b:
    np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)


# ---------------------------------------------------------------------------
# Start-up faults: a clear error within the timeout, not a hang.

START_TIMEOUT = 5


def _main_process(process_id: int, port: int, *extra: str) -> subprocess.Popen:
  argv = launch.process_argv(
    [*SGD_ONLY, "--workdir", "unused", *extra],
    process_id=process_id,
    processes=2,
    devices_per_process=4,
    port=port,
    start_timeout=START_TIMEOUT,
  )
  return subprocess.Popen(
    argv,
    cwd=ROOT,
    env=launch.child_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )


def _finish(proc: subprocess.Popen, limit: float) -> tuple[int, str]:
  try:
    out, _ = proc.communicate(timeout=limit)
  except subprocess.TimeoutExpired:
    proc.kill()
    out, _ = proc.communicate()
    pytest.fail(f"still running after {limit} s:\n{out[-3000:]}")
  return proc.returncode, out


@pytest.mark.parametrize("process_id", [1, 0])
def test_missing_coordinator_or_peer_is_a_clear_error(process_id):
  """Process 1 with no coordinator; process 0 whose peer never comes."""
  started = time.perf_counter()
  code, out = _finish(_main_process(process_id, launch.free_port()), 60)
  TIMES[f"coordinator timeout, process {process_id}"] = time.perf_counter() - started
  assert code == main.EXIT_START_FAILED, out[-3000:]
  if process_id:
    assert "could not reach the coordinator at 127.0.0.1:" in out
  else:
    assert f"did not start within {START_TIMEOUT} s" in out


def test_processes_with_different_configs_stop_with_an_error():
  started = time.perf_counter()
  port = launch.free_port()
  procs = [_main_process(0, port), _main_process(1, port, "--set", "ft_steps=8")]
  outcomes = [_finish(p, 60) for p in procs]
  TIMES["config mismatch"] = time.perf_counter() - started
  for i, (code, out) in enumerate(outcomes):
    assert code == main.EXIT_START_FAILED, out[-3000:]
    assert "started with different settings (config of process" in out
    assert f"process {i}:" in out


# ---------------------------------------------------------------------------
# The launcher itself.


def test_launcher_stops_every_process_when_one_fails(monkeypatch, tmp_path):
  """Process 1 fails at once; process 0 (asleep for a minute) is stopped."""
  scripts = {
    0: "import time; print('waiting', flush=True); time.sleep(60)",
    1: "import sys; print('failing', flush=True); sys.exit(7)",
  }
  monkeypatch.setattr(
    launch,
    "process_argv",
    lambda args, *, process_id, **_: [sys.executable, "-c", scripts[process_id]],
  )
  started = time.perf_counter()
  code = launch.launch([], processes=2, log_dir=tmp_path, echo=False, timeout=30)
  assert code == 7
  assert time.perf_counter() - started < 20
  assert (tmp_path / "process_1.log").read_text() == "failing\n"
  assert (tmp_path / "process_0.log").read_text() == "waiting\n"


def test_launcher_timeout_stops_the_job(monkeypatch, tmp_path):
  monkeypatch.setattr(
    launch,
    "process_argv",
    lambda args, **_: [sys.executable, "-c", "import time; time.sleep(60)"],
  )
  started = time.perf_counter()
  code = launch.launch([], processes=2, log_dir=tmp_path, echo=False, timeout=2)
  assert code == launch.EXIT_TIMEOUT
  assert time.perf_counter() - started < 15


def test_launcher_passes_a_usage_error_on():
  """A bad flag: every process exits with argparse's code 2, before JAX."""
  code = launch.launch(["--set", "seq_len=0"], processes=2, echo=False, timeout=60)
  assert code == 2
  assert main.EXIT_STOPPED == train.EXIT_STOPPED


def test_launcher_command_line():
  argv = launch.process_argv(
    ["--quick"],
    process_id=1,
    processes=2,
    devices_per_process=4,
    port=1234,
    start_timeout=9,
  )
  assert argv[1:] == [
    "-m",
    "examples.sharded_finetune.main",
    "--quick",
    "--distributed",
    "--coordinator-address=127.0.0.1:1234",
    "--num-processes=2",
    "--process-id=1",
    "--host-devices=4",
    "--start-timeout=9",
  ]
