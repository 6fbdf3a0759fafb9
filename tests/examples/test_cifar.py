"""Tests of the CIFAR-10 -> CIFAR-100 example (examples/cifar).

Data comes from ``tfds.testing.mock_data`` (random images, no download). The
fine-tuning tests go through the command-line entry point ``main(argv)`` with
a tiny CNN and share one pre-trained checkpoint.
"""

import json
import pathlib
import shutil

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds

from examples.cifar import (
  frontier,
  input_pipeline,
  main,
  models,
  optimizers,
  train,
)
from examples.cifar.configs import default

NUM_EXAMPLES = 96  # per split under mock_data
VAL = 16
TEST = 32
BATCH = 8
TINY_FLAGS = [
  "--config",
  "cpu_smoke",
  "--no-progress",
  "--set",
  "pretrain_epochs=1",
  "--set",
  "epochs=1",
  "--set",
  f"batch_size={BATCH}",
  "--set",
  "cnn_width=4",
  "--set",
  f"val_examples={VAL}",
  "--set",
  f"test_examples={TEST}",
  "--set",
  "eval_batch_size=16",
]


@pytest.fixture
def mock_cifar():
  """Mock CIFAR data (NUM_EXAMPLES random examples per split), fresh cache."""
  input_pipeline.clear_cache()
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
    yield
  input_pipeline.clear_cache()


# ----------------------------------------------------------------------------
# Input pipeline.


def test_load_split_matches_the_data_source(mock_cifar):
  for dataset, classes in (("cifar10", 10), ("cifar100", 100)):
    split = input_pipeline.load_split(dataset, "train", cache=False)
    assert split.images.shape == (NUM_EXAMPLES, 32, 32, 3)
    assert split.images.dtype == np.uint8
    assert split.labels.shape == (NUM_EXAMPLES,)
    assert split.labels.dtype == np.int32
    assert split.labels.min() >= 0 and split.labels.max() < classes
    source = tfds.data_source(dataset, split="train")
    for i in (0, 17, NUM_EXAMPLES - 1):
      np.testing.assert_array_equal(split.images[i], source[i]["image"])
      assert split.labels[i] == int(source[i]["label"])


def test_load_split_rejects_other_datasets():
  with pytest.raises(ValueError, match="dataset"):
    input_pipeline.load_split("mnist", "train")


def _random_split(n=50, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
  return input_pipeline.Split(images, np.arange(n, dtype=np.int32))


def _all_crops_and_flips(image):
  """Every 32x32 crop (offsets 0..8) of the 4-padded image, and its flip."""
  padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
  crops = []
  for dy in range(9):
    for dx in range(9):
      crop = padded[dy : dy + 32, dx : dx + 32]
      crops += [crop, crop[:, ::-1]]
  return crops


def test_train_batches_are_crops_and_flips_of_their_examples():
  split = _random_split()
  ds = input_pipeline.train_dataset(split, 8, seed=3, epoch=0)
  assert len(ds) == 50 // 8
  seen, unchanged = [], 0
  for batch in ds:
    assert batch["image"].shape == (8, 32, 32, 3)
    assert batch["image"].dtype == np.uint8
    for image, index in zip(batch["image"], batch["label"], strict=True):
      source = split.images[index]
      assert any(np.array_equal(image, c) for c in _all_crops_and_flips(source))
      unchanged += np.array_equal(image, source)
      seen.append(int(index))
  assert len(set(seen)) == len(seen) == 48  # a permutation, last partial dropped
  assert unchanged < 10  # 1 in 162 crops/flips is the identity


def test_train_dataset_is_deterministic_given_the_seed():
  split = _random_split()

  def epoch(seed, e):
    return [b for b in input_pipeline.train_dataset(split, 8, seed=seed, epoch=e)]

  chex.assert_trees_all_equal(epoch(0, 0), epoch(0, 0))
  for other in (epoch(1, 0), epoch(0, 1)):
    assert not np.array_equal(
      np.stack([b["label"] for b in epoch(0, 0)]),
      np.stack([b["label"] for b in other]),
    )


def test_group_stacks_consecutive_batches():
  split = _random_split()
  single = input_pipeline.train_dataset(split, 4, seed=0, epoch=2)
  grouped = input_pipeline.train_dataset(split, 4, seed=0, epoch=2, group=2)
  assert len(grouped) == len(single) // 2
  for i in range(len(grouped)):
    expected = jax.tree.map(
      lambda a, b: np.stack([a, b]), single[2 * i], single[2 * i + 1]
    )
    chex.assert_trees_all_equal(grouped[i], expected)


def test_eval_batches_are_the_unaugmented_images_in_order():
  split = _random_split(n=21)
  batches = list(input_pipeline.eval_dataset(split, 8))
  assert [b["image"].shape for b in batches] == [(8, 32, 32, 3)] * 3
  mask = np.concatenate([b["mask"] for b in batches])
  assert mask.sum() == 21 and not mask[21:].any()
  images = np.concatenate([b["image"] for b in batches])
  np.testing.assert_array_equal(images[:21], split.images)
  np.testing.assert_array_equal(
    np.concatenate([b["label"] for b in batches])[:21], split.labels
  )


def test_holdout_is_a_fixed_disjoint_split():
  split = _random_split(n=40)
  rest, held = input_pipeline.holdout(split, 10)
  assert len(held.labels) == 10 and len(rest.labels) == 30
  assert set(held.labels).isdisjoint(rest.labels)
  np.testing.assert_array_equal(
    held.labels, input_pipeline.holdout(split, 10)[1].labels
  )
  with pytest.raises(ValueError, match="`n`"):
    input_pipeline.holdout(split, 40)


# ----------------------------------------------------------------------------
# Models.


def _param_count(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


def _shapes(backbone, batch=2):
  """Params and features of ``backbone`` as shapes (traced, not compiled)."""
  images = jax.ShapeDtypeStruct((batch, 32, 32, 3), jnp.float32)
  params = jax.eval_shape(backbone.init, jax.random.key(0), images)
  return params, jax.eval_shape(backbone.apply, params, images)


def _forward(backbone, batch=2):
  """A real (compiled) forward pass at a tiny batch."""
  images = jnp.asarray(
    np.random.default_rng(0).normal(size=(batch, 32, 32, 3)), jnp.float32
  )
  params = jax.jit(backbone.init)(jax.random.key(0), images)
  return params, jax.jit(backbone.apply)(params, images)


def test_resnet18_features_and_parameter_count():
  backbone = models.create_backbone("resnet18")
  params, features = _forward(backbone)
  assert features.shape == (2, 512)
  assert np.all(np.isfinite(features)) and np.all(features >= 0)  # ReLU, pooled
  head = jax.eval_shape(models.Head(10).init, jax.random.key(1), features)
  # The CIFAR ResNet-18 with a 10-class head has 11,173,962 parameters (the
  # usual PyTorch count with BatchNorm; GroupNorm has the same scale/bias).
  assert _param_count(params) + _param_count(head) == 11_173_962


def _vit_parameter_count(dim, mlp, depth):
  tokens = (32 // 4) ** 2 + 1
  block = (
    2 * 2 * dim  # two LayerNorms
    + 4 * (dim * dim + dim)  # q, k, v, out projections
    + (dim * mlp + mlp)
    + (mlp * dim + dim)
  )  # MLP
  return (
    4 * 4 * 3 * dim
    + dim  # patch embedding
    + dim
    + tokens * dim  # class token, position embeddings
    + depth * block
    + 2 * dim
  )  # blocks, final LayerNorm


@pytest.mark.parametrize(
  "name,dim,mlp", [("vit_tiny", 192, 768), ("vit_small", 384, 1536)]
)
def test_vit_features_and_parameter_count(name, dim, mlp):
  backbone = models.create_backbone(name)
  params, features = _shapes(backbone)
  assert features.shape == (2, dim)
  assert _param_count(params) == _vit_parameter_count(dim, mlp, 12)
  # A compiled forward of the same architecture at depth 1 (the block code is
  # shared), to keep the compile time of the test modest.
  shallow = models.ViT(dim=dim, depth=1, num_heads=backbone.num_heads, mlp_dim=mlp)
  params, features = _forward(shallow)
  assert features.shape == (2, dim) and np.all(np.isfinite(features))
  assert _param_count(params) == _vit_parameter_count(dim, mlp, 1)


def test_small_cnn_features():
  # Shapes only: the fine-tuning tests below run this model for real.
  params, features = _shapes(models.create_backbone("cnn", cnn_width=8), batch=3)
  assert features.shape == (3, 64)
  convs = 3 * 9 * 8 + 8 * 9 * 16 + 16 * 9 * 32
  norms = 2 * (8 + 16 + 32)
  assert _param_count(params) == convs + norms + 32 * 64 + 64


def test_im2col_convolution_matches_lax_conv():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 9, 7, 5)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 5, 6)), jnp.float32)
  expected = jax.lax.conv_general_dilated(
    x,
    kernel,
    (1, 1),
    ((1, 1), (1, 1)),
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    precision="highest",
  )
  np.testing.assert_allclose(
    models.conv3x3_im2col(x, kernel), expected, rtol=1e-4, atol=1e-4
  )


def test_unknown_model_is_rejected():
  with pytest.raises(ValueError, match="`model`"):
    models.create_backbone("resnet50")


# ----------------------------------------------------------------------------
# Fine-tuning through the command line.


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return tmp_path_factory.mktemp("cifar")


def _run(workdir, *flags):
  return main.main([*TINY_FLAGS, "--workdir", str(workdir), *flags])


def _config(*flags):
  return main.config_from_args(main.build_parser().parse_args([*TINY_FLAGS, *flags]))


def _restore_pretrained(results):
  """The pre-trained params, read back from the orbax checkpoint directly."""
  directory = pathlib.Path(results["pretrain"]["directory"]) / "checkpoints"
  step = max(int(p.name) for p in directory.iterdir() if p.name.isdigit())
  restored = ocp.StandardCheckpointer().restore(directory / str(step) / "state")
  return restored["params"]


def _independent_accuracy(config, backbone_params, head_params, dataset):
  """Accuracy on the mock test split, computed here with plain Flax calls."""
  source = tfds.data_source(dataset, split="test")
  n = min(TEST, len(source))
  images = np.stack([source[i]["image"] for i in range(n)]).astype(np.float32) / 255
  images = (images - np.array(models.CIFAR_MEAN)) / np.array(models.CIFAR_STD)
  labels = np.array([int(source[i]["label"]) for i in range(n)])
  backbone = models.create_backbone(config.model, cnn_width=config.cnn_width)
  features = backbone.apply(
    {"params": backbone_params}, jnp.asarray(images, jnp.float32)
  )
  logits = nn.Dense(head_params["Dense_0"]["kernel"].shape[-1]).apply(
    {"params": head_params["Dense_0"]}, features
  )
  return float(np.mean(np.argmax(logits, -1) == labels)), n


def _bits(tree):
  return jax.tree.map(lambda x: np.asarray(x).view(np.uint32), tree)


@pytest.mark.parametrize("optimizer", default.OPTIMIZERS)
def test_finetune_each_optimizer(mock_cifar, workdir, optimizer):
  flags = ("--set", f"optimizer={optimizer}", "--set", "lr=1e-2")
  results = _run(workdir, *flags)
  config = _config(*flags)
  (run,) = results["runs"]
  assert run["optimizer"] == optimizer
  directory = pathlib.Path(run["directory"])
  assert (directory / "result.json").exists() and (directory / "curves.png").exists()
  for name in ("results.json", "table.md", "curves.png"):
    assert (workdir / name).exists()

  # Batches: (NUM_EXAMPLES - VAL) // BATCH = 10 per epoch, in 5 calls of 2.
  assert run["batches_seen"] == 10
  assert run["main_steps"] == (5 if optimizer == "profit" else 10)
  assert [h["epoch"] for h in run["history"]] == [0, 1]

  pretrained = _restore_pretrained(results)
  data = input_pipeline.load_data(config)
  finetuned = train.load_finetuned(
    config, directory, data, {"params": pretrained}, optimizer, 1e-2
  )
  # The frozen CIFAR-10 head is bit-identical; the backbone has moved.
  chex.assert_trees_all_equal(
    _bits(finetuned["frozen_head"]), _bits(pretrained["head"])
  )
  assert any(
    not np.array_equal(a, b)
    for a, b in zip(
      jax.tree.leaves(finetuned["backbone"]),
      jax.tree.leaves(pretrained["backbone"]),
      strict=True,
    )
  )
  # CIFAR-10 accuracy = fine-tuned backbone + frozen CIFAR-10 head.
  acc10, n = _independent_accuracy(
    config, finetuned["backbone"], pretrained["head"], "cifar10"
  )
  assert abs(run["final"]["c10_test_accuracy"] - acc10) <= 1 / n + 1e-9
  acc100, n = _independent_accuracy(
    config, finetuned["backbone"], finetuned["head"], "cifar100"
  )
  assert abs(run["final"]["c100_test_accuracy"] - acc100) <= 1 / n + 1e-9
  if optimizer == "profit":
    assert 0.0 <= run["history"][1]["projected_fraction"] <= 1.0
    assert run["ref_lr"] == pytest.approx(1e-2 / config.ratio)


def test_head_only_keeps_the_backbone(mock_cifar, workdir):
  flags = ("--set", "optimizer=profit", "--set", "lr=1e-2", "--set", "head_only=true")
  results = _run(workdir, *flags)
  config = _config(*flags)
  (run,) = results["runs"]
  pretrained = _restore_pretrained(results)
  finetuned = train.load_finetuned(
    config,
    run["directory"],
    input_pipeline.load_data(config),
    {"params": pretrained},
    "profit",
    1e-2,
  )
  chex.assert_trees_all_equal(
    _bits(finetuned["backbone"]), _bits(pretrained["backbone"])
  )
  fresh_head = models.init_head(config, 100, jax.random.key(config.seed + 1))
  assert not np.array_equal(
    finetuned["head"]["Dense_0"]["kernel"], fresh_head["Dense_0"]["kernel"]
  )


def test_interrupted_profit_run_resumes_to_the_same_result(
  mock_cifar, workdir, tmp_path, monkeypatch
):
  flags = (
    "--set",
    "optimizer=profit",
    "--set",
    "lr=1e-2",
    "--set",
    "epochs=2",
    "--set",
    "warmup_epochs=1",
  )
  first = _run(workdir, *flags)
  uninterrupted = first["runs"][0]
  # PROFIT's warm-up epoch is 10 plain Adam steps, then 5 cycles of 2 batches.
  assert uninterrupted["main_steps"] == 10 + 5
  assert uninterrupted["batches_seen"] == 20

  other = tmp_path / "other"
  shutil.copytree(workdir / "pretrain", other / "pretrain")
  evaluations = {"n": 0}
  original = train._eval_all

  def interrupt_in_epoch_two(*args, **kwargs):
    evaluations["n"] += 1
    if evaluations["n"] == 3:  # before-training, epoch 1, epoch 2
      raise KeyboardInterrupt
    return original(*args, **kwargs)

  monkeypatch.setattr(train, "_eval_all", interrupt_in_epoch_two)
  with pytest.raises(KeyboardInterrupt):
    _run(other, *flags)
  run_dirs = list((other / "finetune").iterdir())
  assert len(run_dirs) == 1 and not (run_dirs[0] / "result.json").exists()
  monkeypatch.setattr(train, "_eval_all", original)

  resumed = _run(other, *flags)["runs"][0]

  def without_times(history):
    return [
      {k: v for k, v in h.items() if k not in ("wall_s", "cpu_s")} for h in history
    ]

  assert without_times(resumed["history"]) == without_times(uninterrupted["history"])
  config = _config(*flags)
  pretrained = {"params": _restore_pretrained(first)}
  data = input_pipeline.load_data(config)
  a = train.load_finetuned(
    config, uninterrupted["directory"], data, pretrained, "profit", 1e-2
  )
  b = train.load_finetuned(
    config, resumed["directory"], data, pretrained, "profit", 1e-2
  )
  chex.assert_trees_all_equal(_bits(a), _bits(b))


def test_sweep_writes_the_table(mock_cifar, workdir):
  # One learning rate for every optimizer: no per-optimizer grid, lr 1e-2.
  results = _run(workdir, "--sweep", "--set", "sweep_lrs=", "--set", "lr=1e-2")
  assert list(results["selected"]) == list(default.OPTIMIZERS)
  table = (workdir / "table.md").read_text()
  assert "| Backbone | SGD | Adam | Lookahead | Adan | PROFIT |" in table
  saved = json.loads((workdir / "results.json").read_text())
  for name, run in saved["selected"].items():
    assert run["optimizer"] == name and run["lr"] == 1e-2


@pytest.mark.parametrize(
  "flags,name",
  [
    (["--set", "lr=-1"], "lr"),
    (["--set", "optimizer=rmsprop"], "optimizer"),
    (["--optimizer", "adam"], "--optimizer"),  # removed: use --set optimizer=adam
    (["--sweep", "--frontier"], "--frontier"),
    (["--set", "l2sp_alpha=-1"], "l2sp_alpha"),
    (["--set", "lp_epochs=1"], "lp_epochs"),  # must be below epochs (1)
    (["--set", "wise_points=1"], "wise_points"),
    (["--set", "levels=0.9,1.5"], "levels"),
    (["--set", "nope=1"], "FIELD"),
    (["--set", "n_ref=0"], "n_ref"),
    (["--set", "sgd_momentum=2"], "sgd_momentum"),
  ],
)
def test_bad_flags_name_the_argument(flags, name, capsys):
  with pytest.raises(SystemExit):
    main.main([*TINY_FLAGS, *flags])
  assert name in capsys.readouterr().err


def test_optimizers_only_see_trainable_params():
  config = _config("--set", "optimizer=profit")
  params = models.init_params(config, 100, jax.random.key(0))
  opt = optimizers.create_optimizer("profit", 1e-2, config, steps_per_epoch=4)
  state = opt.tx.init(opt.wrap(params))
  (profit_state,) = [
    s
    for s in jax.tree.leaves(state, is_leaf=lambda s: hasattr(s, "delta"))
    if hasattr(s, "delta")
  ]
  assert jax.tree.structure(profit_state.delta) == jax.tree.structure(params)
  head_only = _config("--set", "optimizer=profit", "--set", "head_only=true")
  opt = optimizers.create_optimizer("profit", 1e-2, head_only, steps_per_epoch=4)
  grads = jax.tree.map(jnp.ones_like, params)
  wrapped = opt.wrap(params)
  updates, _ = jax.jit(opt.tx.update)(grads, opt.tx.init(wrapped), wrapped)
  assert all(not np.any(u) for u in jax.tree.leaves(updates["backbone"]))
  assert optax.tree.norm(updates["head"]) > 0


# ----------------------------------------------------------------------------
# The frontier.


def _pt(old, new, **extra):
  return {
    "old_val": old,
    "new_val": new,
    "old_test": old - 0.01,
    "new_test": new + 0.01,
    **extra,
  }


def test_frontier_selection_on_a_hand_made_curve():
  # A curve along training: CIFAR-10 falls from the base 0.50 as CIFAR-100 rises,
  # then CIFAR-100 overfits.
  curve = [
    _pt(0.50, 0.01, batches=0),
    _pt(0.48, 0.05, batches=10),
    _pt(0.46, 0.08, batches=20),
    _pt(0.41, 0.10, batches=30),
    _pt(0.36, 0.09, batches=40),
    _pt(0.30, 0.11, batches=50),
  ]
  base = 0.50
  # Levels 95/90/80/70 % of 0.50: 0.475, 0.45, 0.40, 0.35.
  picks = {
    level: frontier.select(curve, base, level)["batches"]
    for level in (0.95, 0.9, 0.8, 0.7)
  }
  assert picks == {0.95: 10, 0.9: 20, 0.8: 30, 0.7: 30}
  assert frontier.select(curve, base, 1.01) is None
  # Ties in new-task accuracy go to the higher old-task accuracy.
  tied = [_pt(0.45, 0.10, batches=5), _pt(0.47, 0.10, batches=9)]
  assert frontier.select(tied, base, 0.8)["batches"] == 9
  assert [p["batches"] for p in frontier.pareto(curve)] == [0, 10, 20, 30, 50]
  rows = frontier.table(
    {"fam": {0: curve, 1: curve[:3]}}, {0: base, 1: base}, (0.95, 0.7)
  )
  assert rows[0]["new_test"] == pytest.approx([0.06, 0.06])
  assert rows[1]["new_test"] == pytest.approx([0.11, 0.09])
  text = frontier.format_table(rows, (0.95, 0.7))
  assert "| fam | 6.00 (6.00-6.00) | 10.00 (9.00-11.00) |" in text


def test_frontier_mode_through_the_cli(mock_cifar, tmp_path):
  flags = [
    *TINY_FLAGS,
    "--workdir",
    str(tmp_path),
    "--frontier",
    "--set",
    "epochs=2",
    "--set",
    "pretrain_batch_size=8",
    "--set",
    f"c10_val_examples={VAL}",
    "--set",
    "evals_per_epoch=2",
    "--set",
    "wise_points=3",
    "--set",
    "frontier_lrs=1e-2",
    "--set",
    "l2sp_alphas=0.1",
    "--set",
    "l2sp_lr=1e-2",
    "--set",
    "frontier_head_lrs=1e-2",
    "--set",
    "seeds=0",
    "--set",
    "batch_sizes=4",
  ]
  results = main.main(flags)
  saved = json.loads((tmp_path / "frontier.json").read_text())
  assert (tmp_path / "frontier.png").exists() and (tmp_path / "frontier.md").exists()
  families = {
    "full FT",
    "L2-SP",
    "LP-FT",
    "head only",
    "PROFIT",
    "WiSE-FT",
    "WiSE-FT of PROFIT",
  }
  assert set(saved["frontier"][str(BATCH)]["families"]) == families
  assert set(saved["frontier"]["4"]["families"]) == {
    "full FT",
    "PROFIT",
    "WiSE-FT",
    "WiSE-FT of PROFIT",
  }
  # Equal batch budget at each batch size: 2 epochs of (96 - 16) // b batches,
  # in whole cycles of 2; PROFIT makes half as many main steps.
  for run in saved["runs"]:
    per_epoch = ((NUM_EXAMPLES - VAL) // run["batch_size"]) // 2 * 2
    assert run["batches_seen"] == 2 * per_epoch
    assert run["history"][0]["batches_seen"] == 0
    assert len(run["history"]) == 1 + 2 * 2  # two evaluations per epoch
    assert run["main_steps"] == run["batches_seen"] // (
      2 if run["optimizer"] == "profit" else 1
    )
  # WiSE-FT: a = 0 is the pre-trained backbone (CIFAR-10 with the frozen head
  # equals the pre-trained model's), a = 1 the run's final weights.
  base_c10 = saved["pretrain"]["c10_test_accuracy"]
  for run in (r for r in saved["runs"] if "wise" in r):
    assert [w["a"] for w in run["wise"]] == [0.0, 0.5, 1.0]
    assert run["wise"][0]["c10_test_accuracy"] == base_c10
    assert run["wise"][0]["c10_val_accuracy"] == saved["base_c10_val_accuracy"]
    for key in ("c10_test_accuracy", "c100_test_accuracy", "c100_val_accuracy"):
      assert run["wise"][-1][key] == run["final"][key]
  # Head only never moves CIFAR-10.
  (head,) = [r for r in saved["runs"] if r["family"] == "head only"]
  assert {h["c10_test_accuracy"] for h in head["history"]} == {base_c10}
  # PROFIT logged its diagnostics along training.
  for row in saved["frontier"][str(BATCH)]["mechanism"]["profit_runs"]:
    assert len(row["removed_fraction"]) == 4
    assert all(0.0 <= f <= 1.0 for f in row["removed_fraction"])
    assert all(-1.0 <= c <= 1.0 for c in row["cosine"])
  assert "| WiSE-FT of PROFIT |" in results["table"]
  assert "| 4 | PROFIT |" in results["study_table"]
