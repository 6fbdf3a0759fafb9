"""Smoke run of the benchmark command: every section runs and writes its tables.

Times are not asserted (they are measured by ``python -m benchmarks.run``,
not by tests); what is checked is that the command still runs end to end at
a tiny size, writes every candidate's row and the JSON, and reports no
failed section.
"""

import json

from benchmarks import run


def test_update_section_runs_at_a_tiny_size(tmp_path, capsys):
  out, raw = tmp_path / "RESULTS.md", tmp_path / "raw.json"
  run.main(
    [
      "--only",
      "update",
      "--sizes",
      "2e4",
      "--rounds",
      "1",
      "--out",
      str(out),
      "--json",
      str(raw),
    ]
  )
  text = out.read_text()
  assert "failed" not in text, text
  assert "(run in progress)" not in text
  update = json.loads(raw.read_text())["update"]
  per_call, cycle = update["20000 per-call"], update["20000 make_train_step"]
  for medians in (per_call, cycle):
    assert {"sgd", "adamw", "profit n_ref=1", "profit n_ref=3"} <= medians.keys()
    for name, ms in medians.items():
      assert f"| {name} |" in text
      assert ms > 0, name
  for variant in ("select", "in-place", "lax.cond", "unordered", "plain sums"):
    assert f"profit n_ref=1, {variant}" in per_call
  capsys.readouterr()


def _check_ratios(timings: dict, base: str) -> None:
  """Every ratio is its median over the baseline's, from the same JSON."""
  assert timings[base]["ratio"] == 1.0
  for name, t in timings.items():
    assert t["q25_s"] <= t["median_s"] <= t["q75_s"], name
    assert t["ratio"] == t["median_s"] / timings[base]["median_s"], name


def test_device_check_smoke_writes_every_table(tmp_path, capsys):
  from benchmarks import device

  out = tmp_path / "device"
  results = device.main(["--smoke", "--out", str(out), "--commit", "abc123"])
  printed = capsys.readouterr().out
  files = sorted(p for p in out.rglob("*") if p.is_file())
  assert [p.name for p in files] == ["device.json", "device.md"]
  assert all(p.stat().st_size < 16e6 for p in files)
  saved = json.loads((out / "device.json").read_text())
  assert saved["failed"] == {} and saved["skipped"] == {}, saved
  env = saved["environment"]
  assert env["commit"] == "abc123" and env["jax"] and env["optax"] and env["device"]
  text = (out / "device.md").read_text()
  for heading in (
    "## Summary",
    "## Update alone",
    "### Optimizer update per batch: per-call",
    "### Optimizer update per batch: make_train_step",
    "## Whole train step",
    "## Per-call drivers with `--xla_gpu_enable_command_buffer",
    "## Peak device memory",
  ):
    assert heading in text, heading
  (size,) = saved["update"]
  for path in ("per-call", "make_train_step"):
    timings = saved["update"][size][path]["timings"]
    _check_ratios(timings, "adamw")
    assert {"sgd", "adamw", "profit n_ref=1", "profit n_ref=1, delta bf16"} <= set(
      timings
    )
  per_call = saved["update"][size]["per-call"]["timings"]
  assert device.UPDATE_NAMES <= set(per_call)
  for key, train in saved["train"].items():
    assert key.startswith(("resnet18", "transformer")), key
    assert set(train["vs adamw loop"]) == {
      "adamw, loop",
      "adamw, make_train_step",
      "profit, loop",
      "profit, make_train_step",
    }
    _check_ratios(train["vs adamw loop"], "adamw, loop")
    _check_ratios(train["vs adamw make_train_step"], "adamw, make_train_step")
  (cb,) = saved["command buffers"].values()
  assert device.COMMAND_BUFFER_NAMES <= set(cb["per-call"]["timings"])
  _check_ratios(cb["per-call"]["timings"], "adamw")
  # The summary quotes the JSON's numbers, and is printed last.
  rows = {r["check"]: r for r in saved["summary"]}
  resnet = next(k for k in saved["train"] if k.startswith("resnet18"))
  loop = saved["train"][resnet]["vs adamw loop"]["profit, loop"]["ratio"]
  assert rows["resnet18: PROFIT loop / AdamW loop"]["measured"] == f"{loop:.3f}x"
  assert all(r["measured"] != "not run" for r in saved["summary"])
  assert printed.rstrip().endswith(
    device.summary_table([tuple(r.values()) for r in saved["summary"]])[-1]
  )
  assert device.SMOKE_NOTE in text
  assert results["summary"] == saved["summary"]


def test_device_check_skips_what_does_not_fit_the_budget(tmp_path, capsys):
  from benchmarks import device

  saved = device.main(["--smoke", "--out", str(tmp_path), "--budget-s", "-1"])
  capsys.readouterr()
  assert set(saved["skipped"]) == {"update", "train", "command buffers", "peaks"}
  assert {r["measured"] for r in saved["summary"]} == {"not run"}
  assert "Section update not run" in (tmp_path / "device.md").read_text()
