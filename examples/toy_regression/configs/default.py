"""Paper-scale configuration of the toy example (Sec. 4.1, Appendix C.1); the
choices the paper leaves open are in README.md. :func:`validate` checks one."""

import dataclasses
import math

STEP_CONVENTIONS = ("cycles", "batches", "both")


@dataclasses.dataclass(frozen=True)
class Config:
  """Hyperparameters of the toy experiment (``--set FIELD=VALUE``)."""

  # Data: points per domain (train, noise-free test and held-out sets), the
  # noise on training targets, (low, high) of both coordinates per domain.
  n_train: int = 50_000
  n_test: int = 5_000
  noise_std: float = 1.0
  old_domain: tuple[float, float] = (-1.0, 1.0)
  new_domain: tuple[float, float] = (0.8, 1.5)
  # Model and PyTorch-style RMSProp (eps outside the square root).
  hidden: int = 500
  batch_size: int = 256
  rmsprop_decay: float = 0.99
  rmsprop_eps: float = 1e-8
  # Base training: lr x `base_decay_rate` every `base_decay_every` steps.
  base_steps: int = 10_000
  base_lr: float = 1e-2
  base_decay_every: int = 500
  base_decay_rate: float = 0.9
  # Fine-tuning: `ft_steps` batches (full, head, L2-SP) or PROFIT cycles or
  # batches (`step_convention`: "cycles", "batches" (compute-matched) or
  # "both"); `ratio` is lambda_main / lambda_ref; `storage` and `delta_dtype`
  # go to `optax_profit.profit`.
  ft_steps: int = 1_500
  ft_lr: float = 5e-4
  ft_decay_every: int = 100
  ft_decay_rate: float = 0.95
  n_ref: int = 1
  ratio: float = 100.0
  storage: str = "delta"
  delta_dtype: str | None = None
  step_convention: str = "both"
  # The sweep: lrs of each family, PROFIT's ratios (compute-matched), L2-SP's
  # alphas, WiSE-FT's mixing coefficients (evenly spaced in [0, 1]), the
  # fine-tuning batch sizes (empty: `batch_size`), the frontier's old-task
  # levels (multiples of the base model's error).
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
  # Evaluate every `eval_every` batches, every `eval_early` during the first
  # `eval_every` (rounded up to whole PROFIT cycles).
  eval_every: int = 100
  eval_early: int = 10
  # One full experiment (data, init, batch order) per seed; image resolution.
  seeds: tuple[int, ...] = (0, 1, 2)
  plot_grid: int = 201


def get_config() -> Config:
  return Config()


_LOW = {"base_steps": 0, "wise_points": 2}  # Every other int field: >= 1.
_DTYPES = ("float32", "float64", "bfloat16", "float16")


def _is_int(value: object, low: int) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= low


def validate(config: Config) -> None:
  """Raises ``ValueError`` naming the field (``--set FIELD=...``) of a bad value."""
  c = config

  def check(ok: bool, field: str, message: str) -> None:
    if not ok:
      value = getattr(c, field)
      raise ValueError(f"`{field}` (--set {field}=...) {message}, got {value!r}.")

  for field in (f.name for f in dataclasses.fields(c) if f.type is int):
    low = _LOW.get(field, 1)
    check(_is_int(getattr(c, field), low), field, f"must be an int >= {low}")
  n, sizes = c.n_train, c.batch_sizes
  check(c.batch_size <= n, "batch_size", f"must be at most n_train = {n}")
  ok = all(_is_int(b, 1) and b <= n for b in sizes)
  check(ok, "batch_sizes", f"must hold ints in [1, n_train = {n}]")
  check(len(set(sizes)) == len(sizes), "batch_sizes", "must be distinct")
  for field in ("base_lr", "ft_lr", "ratio"):
    value = getattr(c, field)
    check(math.isfinite(value) and value > 0, field, "must be a finite number > 0")
  check(c.noise_std >= 0, "noise_std", "must be >= 0")
  check(c.storage in ("delta", "copy"), "storage", "must be delta or copy")
  message = f"must be one of {', '.join(_DTYPES)}"
  check(c.delta_dtype in (None, *_DTYPES), "delta_dtype", message)
  ok = c.delta_dtype is None or c.storage == "delta"
  check(ok, "delta_dtype", "applies to storage=delta only")
  for field in ("base_decay_rate", "ft_decay_rate"):
    check(0 < getattr(c, field) <= 1, field, "must be in (0, 1]")
  check(0 <= c.rmsprop_decay < 1, "rmsprop_decay", "must be in [0, 1)")
  check(c.rmsprop_eps > 0, "rmsprop_eps", "must be > 0")
  message = f"must be one of {STEP_CONVENTIONS}"
  check(c.step_convention in STEP_CONVENTIONS, "step_convention", message)
  message = f"must be >= n_ref + 1 = {c.n_ref + 1} for the compute-matched "
  ok = c.ft_steps >= c.n_ref + 1 or c.step_convention == "cycles"
  check(ok, "ft_steps", message + "(batches) convention")
  check(len(c.seeds) >= 1, "seeds", "must name at least one seed")
  check(len(set(c.seeds)) == len(c.seeds), "seeds", "must be distinct")
  check(all(_is_int(v, 0) for v in c.seeds), "seeds", "must be ints >= 0")
  for field in (f.name for f in dataclasses.fields(c) if f.type == tuple[float, ...]):
    ok = all(math.isfinite(v) and v > 0 for v in getattr(c, field))
    check(ok, field, "must hold finite numbers > 0")
  message = "must hold multiples >= 1 of the base model's error"
  check(all(v >= 1 for v in c.frontier_levels), "frontier_levels", message)
  for field in ("old_domain", "new_domain"):
    low, high = getattr(c, field)
    check(low < high, field, "must be (low, high) with low < high")
