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
