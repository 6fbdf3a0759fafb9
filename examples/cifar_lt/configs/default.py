"""The CIFAR-100-LT example's configuration (the paper scale) and its checks."""

import dataclasses
import itertools

MAIN_OPTIMIZERS = ("sgd", "adam")
#: The backbones of ``examples/cifar/models.py`` this example runs.
MODELS = ("cnn", "resnet18", "resnet34")


@dataclasses.dataclass(frozen=True)
class Config:
  """Stage 1 (base classes) and stage 2 (held-out classes); see README.md."""

  model: str = "resnet34"  # one of MODELS
  cnn_width: int = 32  # first-stage channels of the small CNN
  data_dir: str | None = None  # TFDS data directory (None: TFDS's, which downloads)
  test_examples: int | None = None  # the first this many test images (None: all)
  betas: tuple[float, ...] = (2.0, 5.0, 10.0)  # imbalance ratios, each its own run
  held_out_classes: int = 10  # the last classes: out of stage 1, stage 2's data
  n_max: int | None = None  # images of class 0 (None: the smallest class's)
  lt_seed: int = 0  # seed of the choice of each class's long-tailed images
  augment: bool = True  # random crop + flip of training batches (both stages)
  eval_batch_size: int = 500
  pretrain_optimizer: str = "sgd"  # or adam; sgd: momentum 0.9, cosine decay
  pretrain_lr: float = 0.1  # its (peak) learning rate
  pretrain_weight_decay: float = 5e-4  # SGD only
  pretrain_epochs: int = 200
  pretrain_batch_size: int = 128
  pretrain_seed: int = 0  # initialization and data order
  main_optimizer: str = "sgd"  # stage 2's, plain and inside PROFIT: sgd or adam
  momentum: float = 0.9  # SGD momentum of stage 2
  batch_size: int = 64  # stage 2
  budget_batches: int = 2000  # stage 2 batches seen per run, for every method
  # Evaluations after these batches seen (multiples of n_ref + 1) and at 0.
  eval_points: tuple[int, ...] = (20, 50, *range(100, 2001, 100))
  full_lrs: tuple[float, ...] = (1e-3, 3e-3, 1e-2)  # full model, plain and PROFIT
  head_lrs: tuple[float, ...] = (1e-3, 1e-2, 1e-1)  # head only, plain and PROFIT
  n_ref: int = 1  # PROFIT's reference steps per cycle
  ratio: float = 10.0  # PROFIT's lr / ref lr (an SGD reference optimizer)
  l2sp_alphas: tuple[float, ...] = (1e-2, 1e-1, 1.0)  # of alpha / 2 * ||dbackbone||^2
  l2sp_lrs: tuple[float, ...] = (3e-3, 1e-2)  # every alpha at each
  wise_points: int = 11  # WiSE-FT's linspace(0, 1, wise_points); 0: none
  thresholds: tuple[float, ...] = (0.40, 0.35, 0.30)  # base accuracies the table reads
  relative_thresholds: bool = False  # thresholds are of the pre-trained base accuracy
  seeds: tuple[int, ...] = (0, 1, 2)  # stage 2's; stage 1 is shared
  checkpoint_every: int = 5  # stage 1 epochs per orbax checkpoint
  progress: bool = True  # tqdm progress bars

  @property
  def cycle_length(self) -> int:
    """Batches of one PROFIT cycle (``n_ref + 1``), also each train step's."""
    return self.n_ref + 1


#: Fields the stage 2 step does not read: runs reuse a compiled step keyed on the
#: config minus these (``examples/common/compile_cache.py``; learning rates,
#: PROFIT's ratio and L2-SP's alpha are optimizer state).
NOT_IN_STEP = tuple(
  "data_dir test_examples betas held_out_classes n_max lt_seed augment "
  "eval_batch_size pretrain_optimizer pretrain_lr pretrain_weight_decay "
  "pretrain_epochs pretrain_batch_size pretrain_seed batch_size budget_batches "
  "eval_points full_lrs head_lrs ratio l2sp_alphas l2sp_lrs wise_points "
  "thresholds relative_thresholds seeds checkpoint_every progress".split()
)


def validate(config: Config) -> None:
  """Raises ``ValueError`` naming the field of an invalid value."""

  def check(name: str, ok: bool, what: str) -> None:
    if not ok:
      raise ValueError(f"`{name}` must be {what}, got {getattr(config, name)!r}.")

  check("model", config.model in MODELS, f"one of {MODELS}")
  for name in ("pretrain_optimizer", "main_optimizer"):
    check(name, getattr(config, name) in MAIN_OPTIMIZERS, f"one of {MAIN_OPTIMIZERS}")
  for name in (
    "cnn_width eval_batch_size pretrain_lr pretrain_batch_size batch_size "
    "budget_batches n_ref ratio checkpoint_every"
  ).split():
    check(name, getattr(config, name) > 0, "> 0")
  for name in ("pretrain_epochs", "pretrain_weight_decay", "wise_points"):
    check(name, getattr(config, name) >= 0, ">= 0")
  for name in ("test_examples", "n_max"):
    check(name, (v := getattr(config, name)) is None or v > 0, "None or > 0")
  check("momentum", 0 <= config.momentum < 1, "in [0, 1)")
  check("held_out_classes", 1 <= config.held_out_classes < 100, "in [1, 99]")
  check("betas", bool(config.betas) and min(config.betas) >= 1, "non-empty, each >= 1")
  for name in ("full_lrs", "head_lrs", "l2sp_lrs", "l2sp_alphas"):
    check(name, all(v > 0 for v in getattr(config, name)), "positive")
  check("full_lrs", bool(config.full_lrs or config.head_lrs), "non-empty (or head_lrs)")
  check("wise_points", config.wise_points == 0 or config.wise_points >= 2, "0 or >= 2")
  check("thresholds", bool(config.thresholds), "non-empty")
  check("thresholds", all(0 < t <= 1 for t in config.thresholds), "in (0, 1]")
  check("seeds", bool(config.seeds), "non-empty")
  points, n = config.eval_points, config.cycle_length
  check(
    "eval_points",
    bool(points)
    and all(p % n == 0 for p in points)
    and all(a < b for a, b in itertools.pairwise(points))
    and points[0] > 0
    and points[-1] == config.budget_batches,
    f"increasing positive multiples of n_ref + 1 = {n} ending "
    f"at budget_batches = {config.budget_batches}",
  )
  check(
    "budget_batches", config.budget_batches % n == 0, f"a multiple of n_ref + 1 = {n}"
  )
