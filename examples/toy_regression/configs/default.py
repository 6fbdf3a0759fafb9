"""Paper-scale configuration of the toy example (Sec. 4.1, Appendix C.1).

What the paper fixes: the data (50,000 points per domain, N(0, 1) target
noise), the MLP, RMSProp with PyTorch's defaults, 10,000 base steps at 1e-2
(x0.9 every 500 steps), 1,500 fine-tuning steps at 5e-4 (x0.95 every 100
steps), ``n_ref = 1``. What it leaves open, and our defaults: the batch size
(256), the reference learning rate (``lambda_ref = lambda_main / 100``, in the
middle of the paper's 10 ... 10,000 range, fixed before looking at results),
whether PROFIT's 1,500 "steps" are cycles or batches (both are run), the
activation (ReLU, see ``models.py``) and the test-set size.
"""

import dataclasses

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
    sweep_profit_lrs: main learning rates of PROFIT in the sweep.
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
  eval_every: int = 100
  eval_early: int = 10
  # Seeds and plots.
  seeds: tuple[int, ...] = (0, 1, 2)
  plot_grid: int = 201


def get_config() -> Config:
  """Returns the paper-scale configuration."""
  return Config()
