"""The results file and table of the sharded fine-tuning example.

:func:`write` puts ``results.json``, ``table.md`` and (through ``plotting``)
``tradeoff.png`` into the output folder; :func:`format_table` is the table the
command line also prints.
"""

import pathlib
import platform
from collections.abc import Mapping
from typing import Any

import jax

from examples.common import runs
from examples.sharded_finetune import input_pipeline, plotting


def environment(mesh: jax.sharding.Mesh) -> dict[str, Any]:
  """The machine, versions and mesh, for the results file."""
  return {
    "python": platform.python_version(),
    "jax": jax.__version__,
    "platform": jax.default_backend(),
    "device_kind": jax.devices()[0].device_kind,
    "devices": jax.device_count(),
    "processes": jax.process_count(),
    "mesh": dict(mesh.shape),
    "machine": platform.machine(),
    "processor": platform.processor(),
  }


def data_summary(domains: Mapping[str, input_pipeline.Domain]) -> dict[str, Any]:
  """Where the text came from and each domain's modules, sizes and digest."""
  return {
    "stdlib": str(input_pipeline.stdlib_root()),
    **{
      name: {
        "modules": list(d.modules),
        "train_bytes": int(d.train.size),
        "val_bytes": int(d.val.size),
        "files": list(d.n_files),
        "sha256": d.sha256,
      }
      for name, d in domains.items()
    },
  }


def format_table(results: Mapping[str, Any]) -> str:
  """A Markdown table of the final validation losses (nats per byte).

  Args:
    results: the results dict of ``train.train_and_evaluate``.

  Returns:
    The table: the pre-trained model, then every fine-tuning run with its
    change from the pre-trained model in parentheses.
  """
  pre = results["pretrained"]
  lines = [
    "| run | lr | optimizer steps | old-domain val loss (retention) | "
    "new-domain val loss (transfer) |",
    "|---|---|---|---|---|",
    f"| pre-trained | | | {pre['old']:.4f} | {pre['new']:.4f} |",
  ]
  for run in results["finetune"]:
    old, new = run["final"]["old"], run["final"]["new"]
    lines.append(
      f"| {run['method']} | {run['lr']:g} | {run['optimizer_steps']} | "
      f"{old:.4f} ({old - pre['old']:+.4f}) | {new:.4f} ({new - pre['new']:+.4f}) |"
    )
  return "\n".join(lines) + "\n"


def write(results: Mapping[str, Any], workdir: pathlib.Path) -> None:
  """Writes ``results.json``, ``table.md`` and ``tradeoff.png`` to ``workdir``.

  Args:
    results: the results dict of ``train.train_and_evaluate``.
    workdir: the output folder (created if missing).
  """
  workdir.mkdir(parents=True, exist_ok=True)
  runs.write_json(workdir / "results.json", results)
  (workdir / "table.md").write_text(format_table(results))
  plotting.plot_tradeoff(results, workdir / "tradeoff.png")
