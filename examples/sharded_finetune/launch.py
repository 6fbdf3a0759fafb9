r"""Starts a multi-process (``jax.distributed``) job of the example on this machine.

Usage, from the repository root::

  python -m examples.sharded_finetune.launch --processes 2 \
      --devices-per-process 4 -- --quick --workdir /tmp/mh

Everything after ``--`` goes to ``python -m examples.sharded_finetune.main``
in every process, followed by ``--distributed --coordinator-address
127.0.0.1:PORT --num-processes N --process-id I --host-devices K``: N
processes with K simulated CPU devices each, CPU collectives over gloo,
process 0 hosting the coordinator on a free port. Process 0's output is
streamed; each process's output is also written to
``--log-dir/process_I.log``. If a process fails, every other process is
stopped and the launcher exits with the failed process's exit code, after
printing the tail of its log. ``--timeout`` bounds the whole job.

This simulates a multi-host job on one machine (CPU devices, localhost). On a
real cluster run ``main.py --distributed`` once per host instead (see the
example's README).
"""

import argparse
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence

#: Exit code of the launcher when ``--timeout`` expires.
EXIT_TIMEOUT = 124


def free_port() -> int:
  """A TCP port on 127.0.0.1 that is free now."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
  """The environment of a process: CPU only, the repository importable.

  Args:
    extra: variables to add (e.g. ``JAX_COMPILATION_CACHE_DIR``).

  Returns:
    This process's environment with ``JAX_PLATFORMS=cpu`` (unless set), the
    repository on ``PYTHONPATH``, unbuffered output and ``extra``.
  """
  env = dict(os.environ, **(extra or {}))
  env["JAX_PLATFORMS"] = env.get("JAX_PLATFORMS") or "cpu"
  root = str(pathlib.Path(__file__).resolve().parents[2])
  env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
  env["PYTHONUNBUFFERED"] = "1"
  return env


def process_argv(
  args: Sequence[str],
  *,
  process_id: int,
  processes: int,
  devices_per_process: int,
  port: int,
  start_timeout: int,
) -> list[str]:
  """The command line of process ``process_id``."""
  return [
    sys.executable,
    "-m",
    "examples.sharded_finetune.main",
    *args,
    "--distributed",
    f"--coordinator-address=127.0.0.1:{port}",
    f"--num-processes={processes}",
    f"--process-id={process_id}",
    f"--host-devices={devices_per_process}",
    f"--start-timeout={start_timeout}",
  ]


def _stream(pipe, log_path: pathlib.Path, echo) -> None:
  with open(log_path, "w") as log:
    for line in iter(pipe.readline, ""):
      log.write(line)
      log.flush()
      if echo is not None:
        echo.write(line)
        echo.flush()
  pipe.close()


def _stop(procs: Sequence[subprocess.Popen], grace: float = 5.0) -> None:
  """SIGTERM to every process still running, SIGKILL after ``grace`` s."""
  for p in procs:
    if p.poll() is None:
      p.send_signal(signal.SIGTERM)
  deadline = time.monotonic() + grace
  for p in procs:
    try:
      p.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
      p.kill()
      p.wait()


def _tail(path: pathlib.Path, lines: int = 30) -> str:
  return "".join(path.read_text(errors="replace").splitlines(True)[-lines:])


def launch(
  args: Sequence[str],
  *,
  processes: int = 2,
  devices_per_process: int = 4,
  port: int | None = None,
  timeout: float | None = None,
  start_timeout: int = 60,
  log_dir: str | pathlib.Path | None = None,
  echo: bool = True,
  env: Mapping[str, str] | None = None,
) -> int:
  """Runs the example in ``processes`` local processes; returns the exit code.

  Args:
    args: flags of ``examples.sharded_finetune.main`` (the distributed ones
      are added).
    processes: number of processes.
    devices_per_process: simulated CPU devices per process.
    port: the coordinator's port (default: a free one).
    timeout: seconds for the whole job; then every process is stopped and
      :data:`EXIT_TIMEOUT` is returned.
    start_timeout: ``--start-timeout`` of the processes (seconds for all of
      them to connect to the coordinator).
    log_dir: where ``process_I.log`` go (default: a new temporary folder).
    echo: stream process 0's output to this process's stdout.
    env: extra environment variables of the processes.

  Returns:
    0 if every process succeeded, else the first failure's exit code (a
    negative number for a signal), or :data:`EXIT_TIMEOUT`.
  """
  port = port or free_port()
  log_dir = pathlib.Path(log_dir or tempfile.mkdtemp(prefix="sharded_finetune_"))
  log_dir.mkdir(parents=True, exist_ok=True)
  env = child_env(env)
  procs, threads = [], []
  for i in range(processes):
    argv = process_argv(
      args,
      process_id=i,
      processes=processes,
      devices_per_process=devices_per_process,
      port=port,
      start_timeout=start_timeout,
    )
    p = subprocess.Popen(
      argv,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
      start_new_session=True,  # A Ctrl-C reaches the launcher only.
    )
    procs.append(p)
    t = threading.Thread(
      target=_stream,
      args=(
        p.stdout,
        log_dir / f"process_{i}.log",
        sys.stdout if echo and i == 0 else None,
      ),
      daemon=True,
    )
    t.start()
    threads.append(t)
  deadline = None if timeout is None else time.monotonic() + timeout
  code = 0
  try:
    while True:
      codes = [p.poll() for p in procs]
      failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
      if failed:
        i, code = failed[0]
        print(
          f"[launch] process {i} exited with code {code}; stopping the others. "
          f"Its log ({log_dir / f'process_{i}.log'}) ends:",
          file=sys.stderr,
        )
        threads[i].join(5)
        print(_tail(log_dir / f"process_{i}.log"), file=sys.stderr, flush=True)
        break
      if all(c == 0 for c in codes):
        break
      if deadline is not None and time.monotonic() > deadline:
        print(f"[launch] the job ran past {timeout} s; stopping it.", file=sys.stderr)
        code = EXIT_TIMEOUT
        break
      time.sleep(0.1)
  except KeyboardInterrupt:
    code = 130
  finally:
    _stop(procs)
    for t in threads:
      t.join(5)
  return code


def main(argv: Sequence[str] | None = None) -> int:
  """The command line (see the module docstring)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  rest: list[str] = []
  if "--" in argv:
    cut = argv.index("--")
    argv, rest = argv[:cut], argv[cut + 1 :]
  parser = argparse.ArgumentParser(
    prog="python -m examples.sharded_finetune.launch",
    usage="%(prog)s [--processes N] [--devices-per-process K] [--port P] "
    "[--timeout S] [--start-timeout S] [--log-dir DIR] -- [main.py flags]",
    description=__doc__.split("\n\n")[0],
    epilog="Flags after -- go to examples.sharded_finetune.main.",
  )
  parser.add_argument("--processes", type=int, default=2)
  parser.add_argument("--devices-per-process", type=int, default=4)
  parser.add_argument("--port", type=int, default=None, help="default: a free port")
  parser.add_argument(
    "--timeout", type=float, default=None, help="seconds for the whole job"
  )
  parser.add_argument(
    "--start-timeout",
    type=int,
    default=60,
    help="seconds for every process to connect to the coordinator",
  )
  parser.add_argument("--log-dir", default=None, help="default: a temporary folder")
  args = parser.parse_args(argv)

  def terminate(signum, frame):  # A SIGTERM stops the job as Ctrl-C does.
    raise KeyboardInterrupt

  signal.signal(signal.SIGTERM, terminate)
  if args.processes < 1 or args.devices_per_process < 1:
    parser.error("--processes and --devices-per-process must be >= 1.")
  return launch(
    rest,
    processes=args.processes,
    devices_per_process=args.devices_per_process,
    port=args.port,
    timeout=args.timeout,
    start_timeout=args.start_timeout,
    log_dir=args.log_dir,
  )


if __name__ == "__main__":
  sys.exit(main())
