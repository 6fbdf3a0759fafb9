"""The sharded example's command line, config validation and run keys.

No training here (``test_checkpoint.py`` and ``test_sharding.py`` run the
example's code): ``--set`` overrides land in the selected config, bad values
fail naming their field, and the checkpoint directories (the cache of
pre-training and of every run) change exactly when a field that determines
that run changes.
"""

import dataclasses
import pathlib

import pytest

from examples.sharded_finetune import checkpointing, main
from examples.sharded_finetune.configs import default, quick


def _config(argv: list[str]) -> default.Config:
  return main.config_from_args(main.build_parser().parse_args(argv))


def test_set_overrides_the_selected_config():
  config = _config(
    [
      "--quick",
      "--set",
      "mesh_shape=2,-1",
      "--set",
      "adamw_lrs=",
      "--set",
      "profit_lrs=1e-4,3e-3",
      "--set",
      "ft_steps=8",
      "--set",
      "split_letter=k",
    ]
  )
  expected = dataclasses.replace(
    quick.get_config(),
    mesh_shape=(2, -1),
    adamw_lrs=(),
    profit_lrs=(1e-4, 3e-3),
    ft_steps=8,
    split_letter="k",
  )
  assert config == expected
  assert _config([]) == default.Config()


def test_per_field_flags_are_gone():
  with pytest.raises(SystemExit):
    main.build_parser().parse_args(["--ft-steps", "8"])


@pytest.mark.parametrize(
  "field, value",
  [
    ("seq_len", 0),
    ("n_ref", True),
    ("pretrain_warmup", -1),
    ("num_heads", 3),  # Does not divide d_model = 128.
    ("eval_windows", 500),  # Not a multiple of batch_size = 32.
    ("pretrain_lr", float("nan")),
    ("profit_ratio", 0.0),
    ("weight_decay", 1.0),
    ("adamw_lrs", (1e-4, -1e-4)),
    ("split_letter", "z"),
    ("val_mod", 1),
    ("mesh_shape", (8,)),
  ],
)
def test_validate_names_the_bad_field(field, value):
  config = dataclasses.replace(default.Config(), **{field: value})
  with pytest.raises(ValueError, match=f"`{field}`"):
    default.validate(config)


def test_validate_needs_a_learning_rate_and_a_divisible_batch():
  with pytest.raises(ValueError, match=r"`adamw_lrs`.*`profit_lrs`"):
    default.validate(dataclasses.replace(default.Config(), adamw_lrs=(), profit_lrs=()))
  config = dataclasses.replace(default.Config(), batch_size=16)
  default.validate(config, data_parallelism=4)
  with pytest.raises(ValueError, match=r"`batch_size`.*data axis"):
    default.validate(config, data_parallelism=3)


def test_bad_set_is_a_usage_error(capsys):
  with pytest.raises(SystemExit) as exit_info:
    main.main(["--quick", "--set", "seq_len=0"])
  assert exit_info.value.code == 2
  assert "`seq_len`" in capsys.readouterr().err


#: Fields that determine the pre-trained model, with a different valid value.
PRETRAIN_CHANGES = {
  "split_letter": "k",
  "val_mod": 7,
  "seq_len": 32,
  "batch_size": 8,
  "d_model": 32,
  "num_layers": 1,
  "num_heads": 2,
  "d_ff": 64,
  "pretrain_steps": 10,
  "pretrain_lr": 1e-3,
  "pretrain_warmup": 5,
  "weight_decay": 0.0,
  "seed": 1,
}
#: Fields of the fine-tuning runs only: one pre-training serves them all.
FINETUNE_ONLY_CHANGES = {
  "ft_steps": 100,
  "profit_ratio": 10.0,
  "adamw_lrs": (1e-2,),
  "profit_lrs": (1e-2,),
}


@pytest.mark.parametrize("field", sorted(PRETRAIN_CHANGES))
def test_pretrain_cache_is_keyed_by_its_fields(field):
  workdir = pathlib.Path("w")
  config = default.Config()
  changed = dataclasses.replace(config, **{field: PRETRAIN_CHANGES[field]})
  assert checkpointing.pretrain_dir(workdir, changed) != checkpointing.pretrain_dir(
    workdir, config
  )
  spec = checkpointing.RunSpec("adamw", 1e-4)
  assert checkpointing.finetune_dir(
    workdir, changed, spec
  ) != checkpointing.finetune_dir(workdir, config, spec)


@pytest.mark.parametrize("field", sorted(FINETUNE_ONLY_CHANGES))
def test_pretrain_cache_is_shared_by_finetuning_changes(field):
  workdir = pathlib.Path("w")
  config = default.Config()
  changed = dataclasses.replace(config, **{field: FINETUNE_ONLY_CHANGES[field]})
  assert checkpointing.pretrain_dir(workdir, changed) == checkpointing.pretrain_dir(
    workdir, config
  )


def test_finetune_dirs_are_named_and_keyed_per_run():
  workdir = pathlib.Path("w")
  config = default.Config()
  adamw, profit = (
    checkpointing.RunSpec("adamw", 1e-4),
    checkpointing.RunSpec("profit", 1e-4),
  )
  assert checkpointing.finetune_specs(config) == [
    *(checkpointing.RunSpec("adamw", lr) for lr in config.adamw_lrs),
    *(checkpointing.RunSpec("profit", lr) for lr in config.profit_lrs),
  ]
  dirs = {
    checkpointing.finetune_dir(workdir, config, s)
    for s in checkpointing.finetune_specs(config)
  }
  assert len(dirs) == len(config.adamw_lrs) + len(config.profit_lrs)
  assert checkpointing.finetune_dir(workdir, config, profit).name.startswith(
    "profit_lr1e-04-"
  )
  assert (
    checkpointing.finetune_dir(workdir, config, adamw).parent == workdir / "checkpoints"
  )
  # profit_ratio sets PROFIT's reference learning rate only.
  ratio = dataclasses.replace(config, profit_ratio=10.0)
  assert checkpointing.finetune_dir(
    workdir, ratio, profit
  ) != checkpointing.finetune_dir(workdir, config, profit)
  assert checkpointing.finetune_dir(
    workdir, ratio, adamw
  ) == checkpointing.finetune_dir(workdir, config, adamw)
  # Every run sees ft_steps and n_ref (the batches per call).
  for field, value in (("ft_steps", 100), ("n_ref", 2)):
    changed = dataclasses.replace(config, **{field: value})
    for spec in (adamw, profit):
      assert checkpointing.finetune_dir(
        workdir, changed, spec
      ) != checkpointing.finetune_dir(workdir, config, spec)


def test_multi_host_fields_validate_and_key_the_runs():
  config = default.Config()
  default.validate(dataclasses.replace(config, pretrain_steps=0))  # No pre-training.
  default.validate(dataclasses.replace(config, train_step="per_call"))
  for field, value in (("pretrain_steps", -1), ("train_step", "scan")):
    with pytest.raises(ValueError, match=f"`{field}`"):
      default.validate(dataclasses.replace(config, **{field: value}))
  workdir = pathlib.Path("w")
  spec = checkpointing.RunSpec("profit_sgd", 0.5)
  sgd = dataclasses.replace(config, profit_sgd_lrs=(0.5,))
  assert checkpointing.finetune_specs(sgd)[-1] == spec
  assert checkpointing.finetune_dir(workdir, sgd, spec).name.startswith(
    "profit_sgd_lr5e-01-"
  )
  # The default train step keeps the keys of earlier versions; per_call
  # changes every run's key (mid-cycle checkpoints, another program).
  assert checkpointing.pretrain_key(config) == {
    **{f: getattr(config, f) for f in checkpointing._PRETRAIN_FIELDS},
    "version": checkpointing.CHECKPOINT_VERSION,
  }
  per_call = dataclasses.replace(config, train_step="per_call")
  assert checkpointing.pretrain_dir(workdir, per_call) != checkpointing.pretrain_dir(
    workdir, config
  )
  assert checkpointing.finetune_dir(
    workdir, per_call, spec
  ) != checkpointing.finetune_dir(workdir, config, spec)


def test_distributed_flags_parse():
  args = main.build_parser().parse_args(
    ["--distributed", "--start-timeout", "5", "--stop-after-step", "3"]
  )
  assert (args.start_timeout, args.stop_after_step, args.cpu_collectives) == (
    5,
    3,
    "gloo",
  )
