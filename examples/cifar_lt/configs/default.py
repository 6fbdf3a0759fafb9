"""The configuration of the CIFAR-100-LT held-out-class example, and its checks.

``default.Config()`` is the paper-scale setting (``paper.py``); ``cpu.py`` is
the small CNN on the shared subsets and ``smoke.py`` the seconds-long one of
the test suite.
"""

import dataclasses
import itertools

MAIN_OPTIMIZERS = ("sgd", "adam")


@dataclasses.dataclass(frozen=True)
class Config:
  """Hyperparameters of stage 1 (base classes) and stage 2 (held-out classes).

  Attributes:
    model: backbone, ``cnn``, ``resnet18`` or ``resnet34``.
    cnn_width: first-stage channels of the small CNN.
    data_dir: TFDS data directory (None: TFDS's default, which downloads).
    test_examples: use only the first this many test images (None: all).
    betas: imbalance ratios; each gets its own stage 1 and stage 2.
    held_out_classes: the last this many of the 100 classes are held out of
      stage 1 and are stage 2's only training data (GOODFIT: 10, classes
      90-99).
    n_max: training images of class 0 (None: the smallest class of the
      training split, 500 on full CIFAR-100, 100 on the shared subset).
    lt_seed: seed of the choice of each class's long-tailed images.
    augment: random crop + flip on training batches (both stages).
    eval_batch_size: examples per evaluation batch.
    pretrain_optimizer: stage 1 optimizer, ``sgd`` (momentum 0.9, cosine
      decay, weight decay) or ``adam``.
    pretrain_lr: its (peak) learning rate.
    pretrain_weight_decay: stage 1 weight decay (SGD only).
    pretrain_epochs: stage 1 epochs over the base classes' long-tailed images.
    pretrain_batch_size: stage 1 batch size.
    pretrain_seed: seed of stage 1's initialization and data order.
    main_optimizer: stage 2's optimizer, plain and inside PROFIT: ``sgd``
      (with ``momentum``) or ``adam``.
    momentum: SGD momentum of stage 2.
    batch_size: stage 2 batch size.
    budget_batches: stage 2 batches seen (forward/backward passes) per run,
      the same for every method; PROFIT spends ``n_ref + 1`` of them per main
      step.
    eval_points: the batches seen after which a run is evaluated (each a
      multiple of ``n_ref + 1``, increasing, the last ``budget_batches``);
      the curve of a run is these points plus batch 0. Dense early, where
      base accuracy falls fastest.
    full_lrs: learning rates of full-model fine-tuning (plain and PROFIT).
    head_lrs: learning rates of head-only fine-tuning (plain and PROFIT).
    n_ref: PROFIT's reference steps per cycle.
    ratio: PROFIT's ``lambda_main / lambda_ref``: ``ref = lr / ratio`` (an SGD
      reference optimizer).
    l2sp_alphas: L2-SP strengths ``alpha`` of ``alpha / 2 * ||backbone -
      backbone_pre||^2``; empty skips L2-SP.
    l2sp_lrs: learning rates of the L2-SP runs (every alpha at each).
    wise_points: WiSE-FT mixing coefficients per fine-tuned run,
      ``linspace(0, 1, wise_points)``; 0 skips WiSE-FT.
    thresholds: base-class accuracy levels (fractions) at which the table
      reads the held-out-class accuracy.
    relative_thresholds: the thresholds are fractions of the pre-trained
      base-class accuracy (CPU configs) instead of absolute accuracies
      (GOODFIT's 0.40 / 0.35 / 0.30).
    seeds: stage 2 seeds (data order, augmentation); stage 1 is shared.
    checkpoint_every: stage 1 orbax checkpoint every this many epochs.
    progress: tqdm progress bars.
  """

  model: str = "resnet34"
  cnn_width: int = 32
  data_dir: str | None = None
  test_examples: int | None = None
  betas: tuple[float, ...] = (2.0, 5.0, 10.0)
  held_out_classes: int = 10
  n_max: int | None = None
  lt_seed: int = 0
  augment: bool = True
  eval_batch_size: int = 500
  pretrain_optimizer: str = "sgd"
  pretrain_lr: float = 0.1
  pretrain_weight_decay: float = 5e-4
  pretrain_epochs: int = 200
  pretrain_batch_size: int = 128
  pretrain_seed: int = 0
  main_optimizer: str = "sgd"
  momentum: float = 0.9
  batch_size: int = 64
  budget_batches: int = 2000
  eval_points: tuple[int, ...] = (20, 50, *range(100, 2001, 100))
  full_lrs: tuple[float, ...] = (1e-3, 3e-3, 1e-2)
  head_lrs: tuple[float, ...] = (1e-3, 1e-2, 1e-1)
  n_ref: int = 1
  ratio: float = 10.0
  l2sp_alphas: tuple[float, ...] = (1e-2, 1e-1, 1.0)
  l2sp_lrs: tuple[float, ...] = (3e-3, 1e-2)
  wise_points: int = 11
  thresholds: tuple[float, ...] = (0.40, 0.35, 0.30)
  relative_thresholds: bool = False
  seeds: tuple[int, ...] = (0, 1, 2)
  checkpoint_every: int = 5
  progress: bool = True

  @property
  def cycle_length(self) -> int:
    """Batches of one PROFIT cycle (``n_ref + 1``), also each train step's."""
    return self.n_ref + 1


#: The fields the stage 2 step does not read: runs reuse a compiled step keyed
#: on the config minus these (``examples/common/compile_cache.py``; learning
#: rates, PROFIT's ratio and L2-SP's alpha are optimizer state, see
#: ``methods.create_optimizer``).
NOT_IN_STEP = (
  "data_dir",
  "test_examples",
  "betas",
  "held_out_classes",
  "n_max",
  "lt_seed",
  "augment",
  "eval_batch_size",
  "pretrain_optimizer",
  "pretrain_lr",
  "pretrain_weight_decay",
  "pretrain_epochs",
  "pretrain_batch_size",
  "pretrain_seed",
  "batch_size",
  "budget_batches",
  "eval_points",
  "full_lrs",
  "head_lrs",
  "ratio",
  "l2sp_alphas",
  "l2sp_lrs",
  "wise_points",
  "thresholds",
  "relative_thresholds",
  "seeds",
  "checkpoint_every",
  "progress",
)


#: The backbones of ``examples/cifar/models.py`` this example runs.
MODELS = ("cnn", "resnet18", "resnet34")


def validate(config: Config) -> None:
  """Raises ``ValueError`` naming the field of an invalid value.

  Args:
    config: the configuration to check.
  """

  def check(name: str, ok: bool, what: str) -> None:
    if not ok:
      raise ValueError(f"`{name}` must be {what}, got {getattr(config, name)!r}.")

  check("model", config.model in MODELS, f"one of {MODELS}")
  for name in ("pretrain_optimizer", "main_optimizer"):
    check(name, getattr(config, name) in MAIN_OPTIMIZERS, f"one of {MAIN_OPTIMIZERS}")
  for name in (
    "cnn_width",
    "eval_batch_size",
    "pretrain_lr",
    "pretrain_batch_size",
    "batch_size",
    "budget_batches",
    "n_ref",
    "ratio",
    "checkpoint_every",
  ):
    check(name, getattr(config, name) > 0, "> 0")
  for name in ("pretrain_epochs", "pretrain_weight_decay", "wise_points"):
    check(name, getattr(config, name) >= 0, ">= 0")
  for name in ("test_examples", "n_max"):
    value = getattr(config, name)
    check(name, value is None or value > 0, "None or > 0")
  check("momentum", 0 <= config.momentum < 1, "in [0, 1)")
  check("held_out_classes", 1 <= config.held_out_classes < 100, "in [1, 99]")
  check("betas", bool(config.betas) and min(config.betas) >= 1, "non-empty, each >= 1")
  check("full_lrs", all(lr > 0 for lr in config.full_lrs), "positive")
  check("head_lrs", all(lr > 0 for lr in config.head_lrs), "positive")
  check("l2sp_lrs", all(lr > 0 for lr in config.l2sp_lrs), "positive")
  check("l2sp_alphas", all(a > 0 for a in config.l2sp_alphas), "positive")
  check("full_lrs", bool(config.full_lrs or config.head_lrs), "non-empty (or head_lrs)")
  check("wise_points", config.wise_points == 0 or config.wise_points >= 2, "0 or >= 2")
  check("thresholds", bool(config.thresholds), "non-empty")
  check("thresholds", all(0 < t <= 1 for t in config.thresholds), "in (0, 1]")
  check("seeds", bool(config.seeds), "non-empty")
  points = config.eval_points
  check(
    "eval_points",
    bool(points)
    and all(p % config.cycle_length == 0 for p in points)
    and all(a < b for a, b in itertools.pairwise(points))
    and points[0] > 0
    and points[-1] == config.budget_batches,
    f"increasing positive multiples of n_ref + 1 = {config.cycle_length} ending "
    f"at budget_batches = {config.budget_batches}",
  )
  check(
    "budget_batches",
    config.budget_batches % config.cycle_length == 0,
    f"a multiple of n_ref + 1 = {config.cycle_length}",
  )


def get_config() -> Config:
  """The default configuration (paper scale)."""
  return Config()
