"""The CIFAR example's configuration; the defaults are the paper's ResNet-18 setting.

Sec. 4.2, Appendix C.2.5, Table 10, on the full datasets; ``paper.py`` lists
the choices the paper leaves open, ``cpu_smoke.py`` is the small CPU setting.
"""

import dataclasses

OPTIMIZERS = ("sgd", "adam", "lookahead", "adan", "profit")


@dataclasses.dataclass(frozen=True)
class Config:
  """Pre-training on CIFAR-10 and fine-tuning on CIFAR-100 (fields: comments)."""

  model: str = "resnet18"  # cnn, resnet18, resnet34, vit_tiny, vit_small
  cnn_width: int = 32  # first-stage channels of the small CNN
  data_dir: str | None = None  # TFDS data directory (None: TFDS's, downloads)
  train_examples: int | None = None  # the first this many of each train split
  test_examples: int | None = None  # the first this many of each test split
  val_examples: int = 5000  # CIFAR-100 train images held out (0: select on test)
  c10_val_examples: int = 0  # CIFAR-10 train images held out (the frontier's)
  batch_size: int = 128  # fine-tuning (and pre-training, unless set below)
  pretrain_batch_size: int | None = None  # set: one pre-training for every batch size
  eval_batch_size: int = 500
  pretrain_epochs: int = 200
  pretrain_lr: float = 1e-4  # pre-training's Adam (paper: 1e-4)
  optimizer: str = "profit"  # of a single run: one of OPTIMIZERS
  lr: float = 1e-4  # its learning rate (PROFIT: the main Adam's)
  epochs: int = 100  # passes over CIFAR-100 for every optimizer (PROFIT too)
  n_ref: int = 1  # PROFIT's reference steps per cycle
  ratio: float = 10.0  # PROFIT's lambda_main / lambda_ref: ref = lr / ratio
  head_only: bool = False  # fine-tune the CIFAR-100 head alone
  l2sp_alpha: float = 0.0  # L2-SP: alpha / 2 * ||backbone - pretrained||^2 (0: off)
  lp_epochs: int = 0  # LP-FT: of `epochs`, these fit the head alone (0: off)
  lp_lr: float = 1e-2  # LP-FT: the head's Adam
  evals_per_epoch: int = 1  # points of the curves, indexed by batches seen
  wise_points: int = 0  # WiSE-FT: evenly spaced a in [0, 1] after a run (0: none)
  warmup_epochs: int = 0  # plain Adam epochs before PROFIT starts
  sgd_momentum: float = 0.9  # 0: plain SGD
  lookahead_k: int = 1  # Lookahead's sync period (paper: 1)
  lookahead_alpha: float = 0.5  # Lookahead's slow step size (paper: 0.5)
  sweep: bool = False  # Table 2: every sweep optimizer over its learning rates
  sweep_optimizers: tuple[str, ...] = OPTIMIZERS
  # Per optimizer, learning rates and epochs (unlisted: `lr`, `epochs`).
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
  frontier: bool = False  # the compute-matched frontier instead of runs
  frontier_lrs: tuple[float, ...] = (1e-4, 3e-4)  # Adam's: full FT, PROFIT, LP-FT
  frontier_ratios: tuple[float, ...] = (10.0,)  # PROFIT's ratios
  frontier_head_lrs: tuple[float, ...] = (1e-3,)  # head-only fine-tuning's Adam
  l2sp_alphas: tuple[float, ...] = (0.01, 0.1, 1.0)
  l2sp_lr: float = 3e-4  # the L2-SP runs' Adam
  seeds: tuple[int, ...] = (0,)  # fine-tuning seeds (head init, data order)
  levels: tuple[float, ...] = (0.95, 0.9, 0.8, 0.7)  # of the base CIFAR-10 val acc.
  batch_sizes: tuple[int, ...] = ()  # the study's: full FT and PROFIT, first seed
  seed: int = 0  # initialization, data order and augmentation
  checkpoint_every: int = 1  # epochs between orbax checkpoints (and the last)
  data_threads: int = 0  # grain prefetch threads (0: in the training thread)
  progress: bool = True  # tqdm bars (the per-epoch lines are printed anyway)

  def lrs_for(self, optimizer: str) -> tuple[float, ...]:
    """The sweep's learning rates of ``optimizer`` (``(lr,)`` if unlisted)."""
    return dict(self.sweep_lrs).get(optimizer, (self.lr,))

  def epochs_for(self, optimizer: str) -> int:
    """The sweep's epochs of ``optimizer`` (``epochs`` if unlisted)."""
    return dict(self.sweep_epochs).get(optimizer, self.epochs)


# The fields the fine-tuning step does not read: runs that differ only in them
# reuse one compiled step (``examples/common/compile_cache.py``).
NOT_IN_STEP = tuple(
  "data_dir train_examples test_examples val_examples c10_val_examples batch_size "
  "pretrain_batch_size eval_batch_size pretrain_epochs pretrain_lr optimizer lr "
  "epochs evals_per_epoch wise_points sweep sweep_optimizers sweep_lrs sweep_epochs "
  "frontier frontier_lrs frontier_ratios frontier_head_lrs l2sp_alphas l2sp_lr "
  "seeds levels batch_sizes seed checkpoint_every data_threads progress".split()
)
_POSITIVE = (
  "cnn_width batch_size eval_batch_size lr n_ref ratio lookahead_k pretrain_lr "
  "train_examples test_examples checkpoint_every pretrain_batch_size lp_lr "
  "evals_per_epoch l2sp_lr".split()
)
_NON_NEGATIVE = (
  "pretrain_epochs epochs val_examples warmup_epochs sgd_momentum lookahead_alpha "
  "data_threads c10_val_examples l2sp_alpha lp_epochs wise_points".split()
)
_POSITIVE_TUPLES = (
  "frontier_lrs frontier_ratios frontier_head_lrs l2sp_alphas levels batch_sizes"
).split()
_EXCLUSIVE = (
  ("lp_epochs", "head_only", "`lp_epochs` (LP-FT) and `head_only` exclude each other."),
  ("sweep", "frontier", "`sweep` and `frontier` exclude each other: choose one mode."),
)


def validate(config: Config) -> None:
  """Raises ``ValueError`` naming the field for an invalid value."""
  from examples.cifar import models  # pylint: disable=g-import-not-at-top

  c = config
  if c.model not in models.MODELS:
    raise ValueError(f"`model` must be one of {models.MODELS}, got {c.model!r}.")
  for names, bound, bad in (
    (_POSITIVE, "> 0", lambda v: v <= 0),
    (_NON_NEGATIVE, ">= 0", lambda v: v < 0),
  ):
    for name in names:
      value = getattr(c, name)
      if value is not None and bad(value):
        raise ValueError(f"`{name}` must be {bound}, got {value}.")
  for name in _POSITIVE_TUPLES:
    if any(v <= 0 for v in getattr(c, name)):
      raise ValueError(f"`{name}` must be positive, got {getattr(c, name)}.")
  if any(v > 1 for v in c.levels):
    raise ValueError(f"`levels` must be fractions <= 1, got {c.levels}.")
  if c.wise_points == 1:
    raise ValueError("`wise_points` must be 0 or >= 2 (a = 0 and a = 1), got 1.")
  if c.lp_epochs and c.lp_epochs >= c.epochs:
    raise ValueError(
      f"`lp_epochs` ({c.lp_epochs}) must be below `epochs` ({c.epochs})."
    )
  for a, b, message in _EXCLUSIVE:
    if getattr(c, a) and getattr(c, b):
      raise ValueError(message)
  if c.frontier and not c.seeds:
    raise ValueError("`seeds` must name at least one seed for the frontier.")
  for name in ("sgd_momentum", "lookahead_alpha"):
    if getattr(c, name) > 1:
      raise ValueError(f"`{name}` must be <= 1, got {getattr(c, name)}.")
  if c.optimizer not in OPTIMIZERS:
    raise ValueError(f"`optimizer` must be one of {OPTIMIZERS}, got {c.optimizer!r}.")
  unknown = set(c.sweep_optimizers) - set(OPTIMIZERS)
  unknown |= {name for name, _ in (*c.sweep_lrs, *c.sweep_epochs)} - set(OPTIMIZERS)
  if unknown:
    raise ValueError(
      f"`sweep_optimizers`/`sweep_lrs`/`sweep_epochs` name unknown optimizers "
      f"{sorted(unknown)}; choose from {OPTIMIZERS}."
    )
  for name, lrs in c.sweep_lrs:
    if not lrs or any(lr <= 0 for lr in lrs):
      raise ValueError(f"`sweep_lrs` of {name!r} must be positive, got {lrs}.")
  for name, epochs in c.sweep_epochs:
    if epochs < 0:
      raise ValueError(f"`sweep_epochs` of {name!r} must be >= 0, got {epochs}.")


def get_config() -> Config:
  """The default configuration (the paper's ResNet-18 setting)."""
  return Config()
