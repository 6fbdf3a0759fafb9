"""``results.json``, ``table.md`` and ``tradeoff.png`` of the sharded example."""

import pathlib
import platform
from collections.abc import Mapping
from typing import Any

import jax

from examples.common import runs
from examples.sharded_finetune import input_pipeline


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
  summary: dict[str, Any] = {"stdlib": str(input_pipeline.stdlib_root())}
  for name, d in domains.items():
    summary[name] = {
      "modules": list(d.modules),
      "train_bytes": int(d.train.size),
      "val_bytes": int(d.val.size),
      "files": list(d.n_files),
      "sha256": d.sha256,
    }
  return summary


def format_table(results: Mapping[str, Any]) -> str:
  """Markdown table of the final validation losses and their changes (nats/byte)."""
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


def plot_tradeoff(results: Mapping[str, Any], path: pathlib.Path) -> None:
  """Old- vs new-domain loss along every run; the right panel zooms on AdamW's."""
  import matplotlib  # Lazily: slow to import, and only process 0 plots.

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(12, 5))
  colors = {"adamw": plt.cm.Blues, "profit": plt.cm.Oranges}
  pre, finetune = results["pretrained"], results["finetune"]
  for ax in axes:
    for method, cmap in colors.items():
      mine = [r for r in finetune if r["method"] == method]
      for i, run in enumerate(mine):
        new, old = zip(*((h["new"], h["old"]) for h in run["history"]), strict=True)
        color = cmap(0.45 + 0.5 * (i + 1) / (len(mine) + 1))
        label = f"{method} lr={run['lr']:g}"
        ax.plot(new, old, "o-", ms=3, color=color, label=label)
        ax.plot([new[-1]], [old[-1]], "s", ms=6, color=ax.lines[-1].get_color())
    ax.plot([pre["new"]], [pre["old"]], "k*", ms=12, label="pre-trained")
    ax.set_xlabel("new-domain validation loss (nats/byte): transfer")
    ax.set_ylabel("old-domain validation loss (nats/byte): retention")
    ax.grid(alpha=0.3)
  axes[0].set_title("Fine-tuning trajectories (lower left is better)")
  axes[0].legend(fontsize=8)
  zoom = [pre] + [h for r in finetune if r["method"] == "adamw" for h in r["history"]]
  for set_lim, key in ((axes[1].set_xlim, "new"), (axes[1].set_ylim, "old")):
    values = [point[key] for point in zoom]
    pad = 0.15 * (max(values) - min(values) or 0.05)
    set_lim(min(values) - pad, max(values) + pad)
  axes[1].set_title("Zoom on the AdamW runs (squares: end of each run)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write(results: Mapping[str, Any], workdir: pathlib.Path) -> None:
  """Writes ``results.json``, ``table.md`` and ``tradeoff.png`` to ``workdir``."""
  workdir.mkdir(parents=True, exist_ok=True)
  runs.write_json(workdir / "results.json", results)
  (workdir / "table.md").write_text(format_table(results))
  plot_tradeoff(results, workdir / "tradeoff.png")
