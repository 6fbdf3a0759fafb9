"""Paper-scale configuration of the toy example (Sec. 4.1, Appendix C.1).

What the paper fixes: the data (50,000 points per domain, N(0, 1) target
noise), the MLP, RMSProp with PyTorch's defaults, 10,000 base steps at 1e-2
(x0.9 every 500 steps), 1,500 fine-tuning steps at 5e-4 (x0.95 every 100
steps), ``n_ref = 1``. What it leaves open, and our defaults: the batch size
(256), the reference learning rate (``lambda_ref = lambda_main / 100``, in the
middle of the paper's 10 ... 10,000 range, fixed before looking at results),
whether PROFIT's 1,500 "steps" are cycles or batches (both are run), the
activation (ReLU, see ``models.py``) and the test-set size.

Beside the paper's methods the sweep runs the forgetting remedies a
practitioner would try first (issue 11): L2-SP (a pull towards the pre-trained
backbone) and WiSE-FT (interpolating pre-trained and fine-tuned weights), all
with the same batch budget, optionally at several fine-tuning batch sizes.
:func:`validate` checks a configuration.
"""

import dataclasses
import math

STEP_CONVENTIONS = ("cycles", "batches", "both")


@dataclasses.dataclass(frozen=True)
class Config:
  """Hyperparameters of the toy experiment.

  Attributes:
    n_train: training points per domain.
    n_test: noise-free test points per domain.
    noise_std: standard deviation of the noise on the training targets.
    old_domain: ``(low, high)`` of both coordinates of the original data.
    new_domain: ``(low, high)`` of both coordinates of the new data.
    hidden: width of the two hidden layers.
    batch_size: examples per batch (base training and fine-tuning).
    rmsprop_decay: RMSProp's ``alpha`` (PyTorch) / ``decay`` (optax).
    rmsprop_eps: RMSProp's epsilon, added outside the square root.
    base_steps: steps of base training on the original data.
    base_lr: initial learning rate of base training.
    base_decay_every: base learning rate decays every this many steps...
    base_decay_rate: ...by this factor (staircase).
    ft_steps: fine-tuning "steps": batches for full and head-only
      fine-tuning; cycles or batches for PROFIT, see ``step_convention``.
    ft_lr: learning rate of the table's fine-tuning runs (PROFIT's main
      optimizer included).
    ft_decay_every: fine-tuning learning rate decays every this many steps...
    ft_decay_rate: ...by this factor (staircase).
    n_ref: PROFIT's reference steps per cycle.
    ratio: ``lambda_main / lambda_ref`` of the table's PROFIT runs.
    storage: PROFIT's ``storage``: ``"delta"`` (the library's default: the
      displacement accumulated from the reference updates) or ``"copy"``
      (``delta = params - theta_ref`` from a weight copy, quantized in
      float32 when the reference steps are tiny next to the weights).
    delta_dtype: with ``storage="delta"``, ``None`` (float32) or a dtype name
      such as ``"bfloat16"``, passed to ``optax_profit.profit``.
    step_convention: what PROFIT's ``ft_steps`` count. ``"cycles"``:
      ``ft_steps`` cycles (``ft_steps * (n_ref + 1)`` batches, ``ft_steps``
      main steps, the schedules decay every ``ft_decay_every`` main steps).
      ``"batches"`` (compute-matched): ``ft_steps`` batches, i.e.
      ``ft_steps // (n_ref + 1)`` cycles, the schedules decay every
      ``ft_decay_every / (n_ref + 1)`` main steps. ``"both"``: run both.
    sweep: whether to run the trade-off sweep.
    sweep_lrs: learning rates of full fine-tuning in the trade-off sweep.
    sweep_ratios: ``lambda_main / lambda_ref`` ratios of PROFIT in the sweep.
    sweep_profit_lrs: main learning rates of PROFIT in the sweep (always in
      the compute-matched ``"batches"`` convention when it is run).
    head_lrs: learning rates of head-only fine-tuning in the sweep.
    l2sp_lrs: learning rates of L2-SP in the sweep...
    l2sp_alphas: ...times these penalty weights ``alpha`` (the loss is the
      new-data MSE plus ``alpha / 2 * ||theta - theta_pre||^2`` over every
      layer but the head).
    wise_points: WiSE-FT mixing coefficients ``a``, evenly spaced in [0, 1],
      applied to the final weights of every full fine-tuning and PROFIT run
      of the sweep.
    batch_sizes: fine-tuning batch sizes of the sweep (the frontier study);
      empty: ``batch_size`` only. Base training always uses ``batch_size``.
    frontier_levels: old-task levels of the frontier table, as multiples of
      the pre-trained model's original-data MSE.
    n_val: noise-free held-out points per domain, drawn independently of the
      test sets; the frontier selects its points on them.
    eval_every: evaluate both test sets every this many batches (rounded up
      to whole PROFIT cycles)...
    eval_early: ...and every this many batches during the first
      ``eval_every`` batches, where the errors move fastest.
    seeds: one full experiment (data, init, batch order) per seed.
    plot_grid: points per axis of the prediction images.
  """

  # Data.
  n_train: int = 50_000
  n_test: int = 5_000
  noise_std: float = 1.0
  old_domain: tuple[float, float] = (-1.0, 1.0)
  new_domain: tuple[float, float] = (0.8, 1.5)
  # Model and optimizer.
  hidden: int = 500
  batch_size: int = 256
  rmsprop_decay: float = 0.99
  rmsprop_eps: float = 1e-8
  # Base training on the original data.
  base_steps: int = 10_000
  base_lr: float = 1e-2
  base_decay_every: int = 500
  base_decay_rate: float = 0.9
  # Fine-tuning on the new data.
  ft_steps: int = 1_500
  ft_lr: float = 5e-4
  ft_decay_every: int = 100
  ft_decay_rate: float = 0.95
  n_ref: int = 1
  ratio: float = 100.0
  storage: str = "delta"
  delta_dtype: str | None = None
  step_convention: str = "both"
  # Trade-off sweep.
  sweep: bool = True
  sweep_lrs: tuple[float, ...] = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3)
  sweep_ratios: tuple[float, ...] = (10.0, 100.0, 1_000.0, 10_000.0)
  sweep_profit_lrs: tuple[float, ...] = (2e-4, 5e-4, 2e-3)
  head_lrs: tuple[float, ...] = (5e-4,)
  l2sp_lrs: tuple[float, ...] = (5e-4,)
  l2sp_alphas: tuple[float, ...] = (1.0, 10.0, 100.0)
  wise_points: int = 11
  batch_sizes: tuple[int, ...] = ()
  frontier_levels: tuple[float, ...] = (1.25, 2.0, 5.0, 10.0, 25.0)
  n_val: int = 2_048
  eval_every: int = 100
  eval_early: int = 10
  # Seeds and plots.
  seeds: tuple[int, ...] = (0, 1, 2)
  plot_grid: int = 201


def get_config() -> Config:
  """Returns the paper-scale configuration."""
  return Config()


def finetune_batch_sizes(config: Config) -> tuple[int, ...]:
  """The fine-tuning batch sizes of the sweep (``batch_size`` if none)."""
  return config.batch_sizes or (config.batch_size,)


def _is_int(value: object, low: int) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= low


def validate(config: Config) -> None:
  """Raises ``ValueError`` naming the field (``--set FIELD=...``) of a bad value.

  Args:
    config: the configuration to check.

  Raises:
    ValueError: for the first bad field found.
  """

  def check(ok: bool, field: str, message: str) -> None:
    if not ok:
      raise ValueError(
        f"`{field}` (--set {field}=...) {message}, got {getattr(config, field)!r}."
      )

  for field in (
    "n_train",
    "n_test",
    "n_val",
    "hidden",
    "batch_size",
    "ft_steps",
    "n_ref",
    "eval_every",
    "eval_early",
    "plot_grid",
    "base_decay_every",
    "ft_decay_every",
  ):
    check(_is_int(getattr(config, field), 1), field, "must be an int >= 1")
  check(_is_int(config.base_steps, 0), "base_steps", "must be an int >= 0")
  check(_is_int(config.wise_points, 2), "wise_points", "must be an int >= 2")
  check(
    config.batch_size <= config.n_train,
    "batch_size",
    f"must be at most n_train = {config.n_train}",
  )
  check(
    all(_is_int(b, 1) and b <= config.n_train for b in config.batch_sizes),
    "batch_sizes",
    f"must hold ints in [1, n_train = {config.n_train}]",
  )
  check(
    len(set(config.batch_sizes)) == len(config.batch_sizes),
    "batch_sizes",
    "must be distinct",
  )
  for field in ("base_lr", "ft_lr", "ratio"):
    value = getattr(config, field)
    check(math.isfinite(value) and value > 0, field, "must be a finite number > 0")
  check(config.noise_std >= 0, "noise_std", "must be >= 0")
  check(config.storage in ("delta", "copy"), "storage", "must be delta or copy")
  check(
    config.delta_dtype in (None, "float32", "float64", "bfloat16", "float16"),
    "delta_dtype",
    "must be one of float32, float64, bfloat16, float16",
  )
  check(
    config.delta_dtype is None or config.storage == "delta",
    "delta_dtype",
    "applies to storage=delta only",
  )
  for field in ("base_decay_rate", "ft_decay_rate"):
    check(0 < getattr(config, field) <= 1, field, "must be in (0, 1]")
  check(0 <= config.rmsprop_decay < 1, "rmsprop_decay", "must be in [0, 1)")
  check(config.rmsprop_eps > 0, "rmsprop_eps", "must be > 0")
  check(
    config.step_convention in STEP_CONVENTIONS,
    "step_convention",
    f"must be one of {STEP_CONVENTIONS}",
  )
  check(
    config.ft_steps >= config.n_ref + 1 or config.step_convention == "cycles",
    "ft_steps",
    f"must be >= n_ref + 1 = {config.n_ref + 1} for the compute-matched "
    "(batches) convention",
  )
  _validate_lists(config, check)


def _validate_lists(config: Config, check) -> None:
  """The checks of :func:`validate` on the seeds, grids and domains."""
  check(len(config.seeds) >= 1, "seeds", "must name at least one seed")
  check(len(set(config.seeds)) == len(config.seeds), "seeds", "must be distinct")
  check(all(_is_int(v, 0) for v in config.seeds), "seeds", "must be ints >= 0")
  for field in (
    "sweep_lrs",
    "sweep_ratios",
    "sweep_profit_lrs",
    "head_lrs",
    "l2sp_lrs",
    "l2sp_alphas",
    "frontier_levels",
  ):
    values = getattr(config, field)
    check(
      all(math.isfinite(v) and v > 0 for v in values),
      field,
      "must hold finite numbers > 0",
    )
  check(
    all(v >= 1 for v in config.frontier_levels),
    "frontier_levels",
    "must hold multiples >= 1 of the base model's error",
  )
  for field in ("old_domain", "new_domain"):
    low, high = getattr(config, field)
    check(low < high, field, "must be (low, high) with low < high")
