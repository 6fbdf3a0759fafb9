r"""A multi-process (``jax.distributed``) job of the example on this machine.

``python -m examples.sharded_finetune.launch --processes 2 --devices-per-process
4 -- --quick``: ``main.py --quick --distributed`` in every process, with 4 CPU
devices each and process 0's coordinator on a free port (see the README).
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
  """This environment plus ``extra``: CPU only (unless set), the repo importable."""
  env = dict(os.environ, **(extra or {}))
  env["JAX_PLATFORMS"] = env.get("JAX_PLATFORMS") or "cpu"
  root = str(pathlib.Path(__file__).resolve().parents[2])
  env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
  env["PYTHONUNBUFFERED"] = "1"
  return env


def process_argv(
  args, *, process_id, processes, devices_per_process, port, start_timeout
) -> list[str]:
  """The command line of process ``process_id``."""
  return [
    *(sys.executable, "-m", "examples.sharded_finetune.main", *args, "--distributed"),
    f"--coordinator-address=127.0.0.1:{port}",
    f"--num-processes={processes}",
    f"--process-id={process_id}",
    f"--host-devices={devices_per_process}",
    f"--start-timeout={start_timeout}",
  ]


def _stream(pipe, log_path: pathlib.Path, echo) -> None:
  with open(log_path, "w") as log:
    for line in iter(pipe.readline, ""):
      for out in filter(None, (log, echo)):
        out.write(line)
        out.flush()
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


def _wait(procs, threads, log_dir: pathlib.Path, timeout: float | None) -> int:
  """Waits for the job; the first failure's code, or :data:`EXIT_TIMEOUT`."""
  deadline = None if timeout is None else time.monotonic() + timeout
  while True:
    codes = [p.poll() for p in procs]
    failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
    if failed:
      i, code = failed[0]
      log = log_dir / f"process_{i}.log"
      print(
        f"[launch] process {i} exited with code {code}; stopping the others. "
        f"Its log ({log}) ends:",
        file=sys.stderr,
      )
      threads[i].join(5)
      tail = log.read_text(errors="replace").splitlines(True)[-30:]
      print("".join(tail), file=sys.stderr, flush=True)
      return code
    if all(c == 0 for c in codes):
      return 0
    if deadline is not None and time.monotonic() > deadline:
      print(f"[launch] the job ran past {timeout} s; stopping it.", file=sys.stderr)
      return EXIT_TIMEOUT
    time.sleep(0.1)


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

  ``args``: ``main``'s flags (the distributed ones are added). The output of
  process I goes to ``log_dir/process_I.log`` (default: a new temporary
  folder), process 0's also to stdout with ``echo``. When a process fails the
  others are stopped and its exit code is returned (negative for a signal);
  past ``timeout`` s, :data:`EXIT_TIMEOUT`.
  """
  port = port or free_port()
  log_dir = pathlib.Path(log_dir or tempfile.mkdtemp(prefix="sharded_finetune_"))
  log_dir.mkdir(parents=True, exist_ok=True)
  env = child_env(env)
  common = dict(processes=processes, devices_per_process=devices_per_process)
  common.update(port=port, start_timeout=start_timeout)
  # Output through a pipe; a new session, so that a Ctrl-C reaches the launcher only.
  popen = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
  procs, threads = [], []
  for i in range(processes):
    argv = process_argv(args, process_id=i, **common)
    p = subprocess.Popen(argv, start_new_session=True, **popen)
    log = log_dir / f"process_{i}.log"
    out = sys.stdout if echo and i == 0 else None
    t = threading.Thread(target=_stream, args=(p.stdout, log, out), daemon=True)
    t.start()
    procs.append(p)
    threads.append(t)
  try:
    return _wait(procs, threads, log_dir, timeout)
  except KeyboardInterrupt:
    return 130
  finally:
    _stop(procs)
    for t in threads:
      t.join(5)


def main(argv: Sequence[str] | None = None) -> int:
  """The command line: launcher flags, ``--``, then ``main.py``'s flags."""
  argv = list(sys.argv[1:] if argv is None else argv)
  cut = argv.index("--") if "--" in argv else len(argv)
  parser = argparse.ArgumentParser(
    prog="python -m examples.sharded_finetune.launch",
    usage="%(prog)s [--processes N] [--devices-per-process K] [--port P] "
    "[--timeout S] [--start-timeout S] [--log-dir DIR] -- [main.py flags]",
    description=__doc__.split("\n\n")[0],
    epilog="Flags after -- go to examples.sharded_finetune.main.",
  )
  add = parser.add_argument
  add("--processes", type=int, default=2)
  add("--devices-per-process", type=int, default=4)
  add("--port", type=int, help="default: a free port")
  add("--timeout", type=float, help="seconds for the whole job")
  add("--start-timeout", type=int, default=60, help="seconds to reach the coordinator")
  add("--log-dir", help="default: a temporary folder")
  args = parser.parse_args(argv[:cut])

  def terminate(signum, frame):  # A SIGTERM stops the job as Ctrl-C does.
    raise KeyboardInterrupt

  signal.signal(signal.SIGTERM, terminate)
  if args.processes < 1 or args.devices_per_process < 1:
    parser.error("--processes and --devices-per-process must be >= 1.")
  return launch(argv[cut + 1 :], **vars(args))


if __name__ == "__main__":
  sys.exit(main())
