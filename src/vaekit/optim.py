"""The optimiser and its learning-rate schedule (warm-up, then constant, cosine or linear decay)."""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch

from .config import RunConfig, TrainConfig
from .errors import ConfigError, show
from .models import LatentModel


class FusedAdam:
    """Adam with torch's fused kernel, called directly: the arithmetic, the state and the ``state_dict``
    of ``torch.optim.Adam(fused=True)``, without ``torch.optim.Optimizer``, whose first use imports the
    compiler stack (torch._dynamo): 1.9 s of every command's start on this project's 2-core machine.
    Duck-typed where torch expects an optimiser (``param_groups``, ``step``, ``zero_grad``), so the
    fp16 gradient scaler and gradient clipping work with it unchanged."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=False, maximize=False,
                             foreach=None, capturable=False, differentiable=False, fused=True,
                             decoupled_weight_decay=False)
        self.param_groups = [{"params": list(params), **self.defaults}]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self._params():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            live = [p for p in group["params"] if p.grad is not None]
            for p in live:
                if p not in self.state:
                    self.state[p] = {"step": torch.zeros((), dtype=torch.float32, device=p.device),
                                     "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                     "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
            by_kind: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
            for p in live:
                by_kind.setdefault((p.device, p.dtype), []).append(p)
            beta1, beta2 = group["betas"]
            for params in by_kind.values():
                states = [self.state[p] for p in params]
                steps = [s["step"] for s in states]
                torch._foreach_add_(steps, 1)
                torch._fused_adam_(params, [p.grad for p in params], [s["exp_avg"] for s in states],
                                   [s["exp_avg_sq"] for s in states], [], steps, lr=group["lr"], beta1=beta1,
                                   beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"], amsgrad=False,
                                   maximize=False, grad_scale=None, found_inf=None)

    def state_dict(self) -> dict[str, Any]:
        """torch's layout: per-parameter state by index, and the groups with parameter indices."""
        index = {p: i for i, p in enumerate(self._params())}
        groups, start = [], 0
        for group in self.param_groups:
            groups.append({**{k: v for k, v in group.items() if k != "params"},
                           "params": list(range(start, start + len(group["params"])))})
            start += len(group["params"])
        return {"state": {index[p]: dict(s) for p, s in self.state.items()}, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Per-parameter state by index (as ``state_dict`` gives it); each parameter's entry needs its
        step and both moments, which take the parameter's device, type and memory layout (the step
        stays float32): the fused kernel refuses moments laid out unlike their parameter, as a
        channels-last conv weight's are after a plain copy."""
        params = self._params()
        state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
        for i, entry in state_dict["state"].items():
            p = params[int(i)]
            missing = {"step", "exp_avg", "exp_avg_sq"} - set(entry)
            if missing:
                raise ValueError(f"parameter {i} lacks {sorted(missing)[0]}")
            state[p] = {"step": torch.as_tensor(entry["step"], dtype=torch.float32).to(p.device).reshape(()).clone(),
                        "exp_avg": torch.empty_like(p).copy_(entry["exp_avg"]),
                        "exp_avg_sq": torch.empty_like(p).copy_(entry["exp_avg_sq"])}
        for group, saved in zip(self.param_groups, state_dict["param_groups"]):
            group.update({k: v for k, v in saved.items() if k != "params"})
        self.state = state


def _fused_kernel_runs(like: torch.Tensor) -> bool:
    """Whether this torch has the fused Adam kernel for this device and type of number (tried on one value)."""
    if not hasattr(torch, "_fused_adam_") or not hasattr(torch, "_foreach_add_"):
        return False
    try:
        t = [torch.zeros(1, dtype=like.dtype, device=like.device) for _ in range(4)]
        torch._fused_adam_([t[0]], [t[1]], [t[2]], [t[3]], [], [torch.ones((), device=like.device)], lr=1e-3,
                           beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False,
                           grad_scale=None, found_inf=None)
    except (RuntimeError, TypeError, NotImplementedError):
        return False
    return True


def make_optimizer(model: LatentModel, cfg: RunConfig) -> FusedAdam | torch.optim.Optimizer:
    """Adam, fused where this torch supports it: one kernel instead of a dozen per step, which
    measured 25% off a 784-400-20 epoch on 2 CPU cores (4.96 s -> 3.70 s)."""
    kwargs = dict(lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    params = list(model.parameters())
    if params and _fused_kernel_runs(params[0]) and len({(p.device, p.dtype) for p in params}) == 1:
        return FusedAdam(params, **kwargs)
    try:
        return torch.optim.Adam(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # older torch, or a device without the fused kernel
        return torch.optim.Adam(params, **kwargs)


def _constant(progress: float) -> float:
    return 1.0


def _cosine(progress: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _linear(progress: float) -> float:
    return 1.0 - progress


# Each maps training progress after warm-up, in [0, 1], to a factor from 1 (lr) down to 0 (lr_min).
LR_SCHEDULES: dict[str, Callable[[float], float]] = {
    "constant": _constant,
    "cosine": _cosine,
    "linear": _linear,
}


def lr_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate for global step ``step`` (0-based) of ``cfg.epochs * steps_per_epoch``."""
    fn = LR_SCHEDULES.get(cfg.lr_schedule)
    if fn is None:
        raise ConfigError(
            f"unknown learning-rate schedule '{show(cfg.lr_schedule)}'; choose one of {', '.join(LR_SCHEDULES)}"
        )
    warmup = round(cfg.lr_warmup_epochs * steps_per_epoch)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    total = cfg.epochs * steps_per_epoch
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if cfg.lr_schedule == "constant":
        return cfg.lr
    return cfg.lr_min + (cfg.lr - cfg.lr_min) * fn(progress)


def unfinished_lr_warmup(cfg: TrainConfig) -> str | None:
    """A note when the learning-rate warm-up outlasts the run (the rate never reaches --lr); None otherwise."""
    if cfg.lr_warmup_epochs <= cfg.epochs:
        return None
    return (f"the learning-rate warm-up ({cfg.lr_warmup_epochs:g} epochs) outlasts the run's {cfg.epochs}: the rate "
            f"ends at {cfg.epochs / cfg.lr_warmup_epochs:.0%} of --lr; train longer or shorten --lr-warmup")


def lr_setter(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> Callable[[int, int], None] | None:
    """A function (epoch, step) -> sets that step's learning rate; None when it never changes
    (so a constant schedule costs nothing and a resumed run keeps its saved rate)."""
    lr_at(cfg, 0, steps_per_epoch)  # unknown names fail here, before training starts
    if cfg.lr_schedule == "constant" and cfg.lr_warmup_epochs == 0:
        return None

    def set_lr(epoch: int, step: int) -> None:
        lr = lr_at(cfg, (epoch - 1) * steps_per_epoch + step, steps_per_epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr

    return set_lr
