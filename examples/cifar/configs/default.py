"""The configuration of the CIFAR example and its defaults.

The defaults are the paper's ResNet-18 setting (Sec. 4.2, Appendix C.2.5,
Table 10) on the full datasets; ``paper.py`` documents the choices the paper
leaves open. ``cpu_smoke.py`` is the small CPU configuration.
"""

import dataclasses

OPTIMIZERS = ("sgd", "adam", "lookahead", "adan", "profit")


@dataclasses.dataclass(frozen=True)
class Config:
  """Hyperparameters of pre-training on CIFAR-10 and fine-tuning on CIFAR-100.

  Attributes:
    model: backbone, one of ``cnn``, ``resnet18``, ``vit_tiny``, ``vit_small``.
    cnn_width: first-stage channels of the small CNN.
    data_dir: TFDS data directory (None: TFDS's default, which downloads).
    train_examples: use only the first this many examples of each training
      split (None: all).
    test_examples: use only the first this many examples of each test split
      (None: all).
    val_examples: CIFAR-100 training examples held out (same ones in every
      run) to choose each optimizer's learning rate in the sweep; 0 selects
      on the CIFAR-100 test set instead (flagged in the table).
    c10_val_examples: CIFAR-10 training examples held out from pre-training
      (old-task validation: the frontier's CIFAR-10 levels are checked on
      them); 0 for none.
    batch_size: examples per batch (fine-tuning; pre-training too unless
      ``pretrain_batch_size`` is set).
    pretrain_batch_size: examples per pre-training batch (None:
      ``batch_size``); set it to share one pre-training across batch sizes.
    eval_batch_size: examples per evaluation batch.
    pretrain_epochs: epochs of CIFAR-10 pre-training.
    pretrain_lr: Adam learning rate of pre-training (paper: 1e-4).
    optimizer: fine-tuning optimizer of a single run: ``sgd``, ``adam``,
      ``lookahead``, ``adan`` or ``profit``.
    lr: its learning rate (PROFIT: the main Adam's).
    epochs: fine-tuning epochs (passes over the CIFAR-100 training data,
      counted in batches seen: a PROFIT epoch is as many batches as an Adam
      epoch, i.e. ``1 / (n_ref + 1)`` as many main-optimizer steps).
    n_ref: PROFIT's reference steps per cycle.
    ratio: PROFIT's ``lambda_main / lambda_ref``: ``ref = lr / ratio``.
    head_only: fine-tune the CIFAR-100 head only (backbone frozen).
    l2sp_alpha: L2-SP strength: ``alpha / 2 * ||backbone - pretrained||^2`` is
      added to the loss (0: off).
    lp_epochs: LP-FT: epochs of fitting the new head alone (Adam at
      ``lp_lr``) before every parameter is fine-tuned at ``lr`` (0: off).
      They count in ``epochs`` (the same batch budget).
    lp_lr: the head's Adam learning rate in the LP phase of LP-FT.
    evals_per_epoch: evaluations per fine-tuning epoch (points of the
      trade-off curves, indexed by batches seen).
    wise_points: WiSE-FT: evaluate this many evenly spaced ``a`` in [0, 1] of
      ``(1 - a) * pretrained + a * fine-tuned`` backbone after the run (0:
      none).
    warmup_epochs: plain main-optimizer (Adam) epochs before PROFIT starts
      (PROFIT's ``warmup_steps``); ignored by the other optimizers.
    sgd_momentum: momentum of SGD (0 for plain SGD).
    lookahead_k: Lookahead's synchronization period (paper: 1).
    lookahead_alpha: Lookahead's slow step size (paper: 0.5).
    sweep: run every optimizer of ``sweep_optimizers`` over its learning rates
      and write the Table 2-style table instead of one run.
    sweep_optimizers: optimizers of the sweep.
    sweep_lrs: learning-rate grid per optimizer, ``((name, (lr, ...)), ...)``;
      the one with the best held-out CIFAR-100 accuracy goes in the table.
    sweep_epochs: fine-tuning epochs per optimizer, ``((name, epochs), ...)``
      (paper Table 10); optimizers not listed use ``epochs``.
    frontier: run the compute-matched frontier (``frontier_*`` fields) and
      write its table instead of one run or the sweep.
    frontier_lrs: Adam learning rates of full fine-tuning, PROFIT and LP-FT.
    frontier_ratios: PROFIT's ``lambda_main / lambda_ref`` ratios.
    frontier_head_lrs: Adam learning rates of head-only fine-tuning.
    l2sp_alphas: L2-SP strengths of the frontier.
    l2sp_lr: Adam learning rate of the L2-SP runs.
    seeds: fine-tuning seeds of the frontier (head init, data order); the
      pre-training is the one of ``seed``.
    levels: CIFAR-10 levels of the frontier table, as fractions of the
      pre-trained model's validation accuracy.
    batch_sizes: further batch sizes of the mechanism study: full
      fine-tuning, PROFIT and their WiSE-FT curves at each (first seed), with
      the same epochs.
    seed: seed of initialization, data order and augmentation.
    checkpoint_every: save an orbax checkpoint every this many epochs (and
      after the last one); an interrupted run resumes from the latest.
    data_threads: grain prefetch threads (0: batches are built in the training
      thread).
    progress: show tqdm progress bars (per-epoch summary lines are printed
      either way).
  """

  model: str = "resnet18"
  cnn_width: int = 32
  data_dir: str | None = None
  train_examples: int | None = None
  test_examples: int | None = None
  val_examples: int = 5000
  c10_val_examples: int = 0
  batch_size: int = 128
  pretrain_batch_size: int | None = None
  eval_batch_size: int = 500
  pretrain_epochs: int = 200
  pretrain_lr: float = 1e-4
  optimizer: str = "profit"
  lr: float = 1e-4
  epochs: int = 100
  n_ref: int = 1
  ratio: float = 10.0
  head_only: bool = False
  l2sp_alpha: float = 0.0
  lp_epochs: int = 0
  lp_lr: float = 1e-2
  evals_per_epoch: int = 1
  wise_points: int = 0
  warmup_epochs: int = 0
  sgd_momentum: float = 0.9
  lookahead_k: int = 1
  lookahead_alpha: float = 0.5
  sweep: bool = False
  sweep_optimizers: tuple[str, ...] = OPTIMIZERS
  sweep_lrs: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("sgd", (1e-3, 1e-2)),
    ("adam", (1e-4,)),
    ("lookahead", (1e-4,)),
    ("adan", (1e-4, 1e-3)),
    ("profit", (1e-4,)),
  )
  sweep_epochs: tuple[tuple[str, int], ...] = (
    ("sgd", 200),
    ("adam", 200),
    ("lookahead", 100),
    ("adan", 200),
    ("profit", 100),
  )
  frontier: bool = False
  frontier_lrs: tuple[float, ...] = (1e-4, 3e-4)
  frontier_ratios: tuple[float, ...] = (10.0,)
  frontier_head_lrs: tuple[float, ...] = (1e-3,)
  l2sp_alphas: tuple[float, ...] = (0.01, 0.1, 1.0)
  l2sp_lr: float = 3e-4
  seeds: tuple[int, ...] = (0,)
  levels: tuple[float, ...] = (0.95, 0.9, 0.8, 0.7)
  batch_sizes: tuple[int, ...] = ()
  seed: int = 0
  checkpoint_every: int = 1
  data_threads: int = 0
  progress: bool = True

  def lrs_for(self, optimizer: str) -> tuple[float, ...]:
    """The sweep's learning rates of ``optimizer`` (``(lr,)`` if unlisted)."""
    return dict(self.sweep_lrs).get(optimizer, (self.lr,))

  def epochs_for(self, optimizer: str) -> int:
    """The sweep's epochs of ``optimizer`` (``epochs`` if unlisted)."""
    return dict(self.sweep_epochs).get(optimizer, self.epochs)


#: The fields the fine-tuning step does not read: runs that differ only in
#: them (a resumed run, the tests) reuse one compiled step, keyed on the rest
#: (``examples/common/compile_cache.py``; the optimizer and learning rate are
#: the step cache's other arguments).
NOT_IN_STEP = (
  "data_dir",
  "train_examples",
  "test_examples",
  "val_examples",
  "c10_val_examples",
  "batch_size",
  "pretrain_batch_size",
  "eval_batch_size",
  "pretrain_epochs",
  "pretrain_lr",
  "optimizer",
  "lr",
  "epochs",
  "evals_per_epoch",
  "wise_points",
  "sweep",
  "sweep_optimizers",
  "sweep_lrs",
  "sweep_epochs",
  "frontier",
  "frontier_lrs",
  "frontier_ratios",
  "frontier_head_lrs",
  "l2sp_alphas",
  "l2sp_lr",
  "seeds",
  "levels",
  "batch_sizes",
  "seed",
  "checkpoint_every",
  "data_threads",
  "progress",
)


def validate(config: Config) -> None:
  """Raises ``ValueError`` naming the field for an invalid value.

  Args:
    config: the configuration to check.
  """
  from examples.cifar import models  # pylint: disable=g-import-not-at-top

  def positive(name: str, allow_zero: bool = False) -> None:
    value = getattr(config, name)
    if value is None:
      return
    if value < 0 or (value == 0 and not allow_zero):
      bound = ">= 0" if allow_zero else "> 0"
      raise ValueError(f"`{name}` must be {bound}, got {value}.")

  if config.model not in models.MODELS:
    raise ValueError(f"`model` must be one of {models.MODELS}, got {config.model!r}.")
  for name in (
    "cnn_width",
    "batch_size",
    "eval_batch_size",
    "lr",
    "n_ref",
    "ratio",
    "lookahead_k",
    "pretrain_lr",
    "train_examples",
    "test_examples",
    "checkpoint_every",
    "pretrain_batch_size",
    "lp_lr",
    "evals_per_epoch",
    "l2sp_lr",
  ):
    positive(name)
  for name in (
    "pretrain_epochs",
    "epochs",
    "val_examples",
    "warmup_epochs",
    "sgd_momentum",
    "lookahead_alpha",
    "data_threads",
    "c10_val_examples",
    "l2sp_alpha",
    "lp_epochs",
    "wise_points",
  ):
    positive(name, allow_zero=True)
  for name in (
    "frontier_lrs",
    "frontier_ratios",
    "frontier_head_lrs",
    "l2sp_alphas",
    "levels",
    "batch_sizes",
  ):
    if any(v <= 0 for v in getattr(config, name)):
      raise ValueError(f"`{name}` must be positive, got {getattr(config, name)}.")
  if any(v > 1 for v in config.levels):
    raise ValueError(f"`levels` must be fractions <= 1, got {config.levels}.")
  if config.wise_points == 1:
    raise ValueError("`wise_points` must be 0 or >= 2 (a = 0 and a = 1), got 1.")
  if config.lp_epochs and config.lp_epochs >= config.epochs:
    raise ValueError(
      f"`lp_epochs` ({config.lp_epochs}) must be below `epochs` ({config.epochs})."
    )
  if config.lp_epochs and config.head_only:
    raise ValueError("`lp_epochs` (LP-FT) and `head_only` exclude each other.")
  if config.sweep and config.frontier:
    raise ValueError("`sweep` and `frontier` exclude each other: choose one mode.")
  if config.frontier and not config.seeds:
    raise ValueError("`seeds` must name at least one seed for the frontier.")
  for name in ("sgd_momentum", "lookahead_alpha"):
    if getattr(config, name) > 1:
      raise ValueError(f"`{name}` must be <= 1, got {getattr(config, name)}.")
  if config.optimizer not in OPTIMIZERS:
    raise ValueError(
      f"`optimizer` must be one of {OPTIMIZERS}, got {config.optimizer!r}."
    )
  unknown = set(config.sweep_optimizers) - set(OPTIMIZERS)
  unknown |= {name for name, _ in config.sweep_lrs} - set(OPTIMIZERS)
  unknown |= {name for name, _ in config.sweep_epochs} - set(OPTIMIZERS)
  if unknown:
    raise ValueError(
      f"`sweep_optimizers`/`sweep_lrs`/`sweep_epochs` name unknown optimizers "
      f"{sorted(unknown)}; choose from {OPTIMIZERS}."
    )
  for name, lrs in config.sweep_lrs:
    if not lrs or any(lr <= 0 for lr in lrs):
      raise ValueError(f"`sweep_lrs` of {name!r} must be positive, got {lrs}.")
  for name, epochs in config.sweep_epochs:
    if epochs < 0:
      raise ValueError(f"`sweep_epochs` of {name!r} must be >= 0, got {epochs}.")


def get_config() -> Config:
  """The default configuration (the paper's ResNet-18 setting)."""
  return Config()
