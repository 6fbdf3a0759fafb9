"""The configurations: ``Config()`` (paper scale) with ``--set``-style overrides."""

from examples.cifar_lt.configs.default import Config
from examples.common import overrides

PRESETS = {
  # The small CNN on the shared CIFAR-100 subset, beta 10: about 7 minutes on 2
  # cores (--set betas=2,5,10 runs all three).
  "cpu": """
    model=cnn cnn_width=16 data_dir=../shared/data/tfds eval_batch_size=1000
    pretrain_optimizer=adam pretrain_lr=3e-3 pretrain_weight_decay=0.0
    pretrain_epochs=30 pretrain_batch_size=128 batch_size=32 budget_batches=96
    eval_points=2,4,6,8,12,16,24,32,48,64,96
    full_lrs=1e-3,3e-3,1e-2,3e-2 head_lrs=3e-3,1e-2,3e-2,1e-1
    l2sp_alphas=0.1,1.0,10.0 l2sp_lrs=3e-3,1e-2
    thresholds=0.9,0.8,0.7 relative_thresholds=true betas=10.0 seeds=0
    checkpoint_every=1
  """,
  # Seconds-long: the test suite's end-to-end run (any CIFAR-100 data, mock too).
  "smoke": """
    model=cnn cnn_width=4 test_examples=200 betas=10.0 n_max=10 eval_batch_size=100
    pretrain_optimizer=adam pretrain_lr=1e-3 pretrain_weight_decay=0.0
    pretrain_epochs=1 pretrain_batch_size=16 batch_size=4 budget_batches=8
    eval_points=4,8 full_lrs=1e-2 head_lrs=1e-2 l2sp_alphas=1.0 l2sp_lrs=1e-2
    wise_points=3 thresholds=0.9,0.5 relative_thresholds=true seeds=0
    checkpoint_every=1 progress=false
  """,
  # ResNet-34 on the full CIFAR-100-LT, GOODFIT's thresholds (a GPU; TFDS
  # downloads the data); stage 1 is plain SGD-momentum, not GOODFIT's GLMC.
  "paper": "",
}
CONFIGS = tuple(PRESETS)


def get_config(name: str) -> Config:
  """The configuration ``name``, one of :data:`CONFIGS`."""
  if name not in CONFIGS:
    raise ValueError(f"`config` must be one of {CONFIGS}, got {name!r}.")
  return overrides.apply_overrides(Config(), PRESETS[name].split())
