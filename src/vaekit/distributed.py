"""Data-parallel training across processes started by ``torchrun`` (one process per device).

Every rank holds the whole data set in memory and walks the same permutation; each global batch
is split into contiguous shares, one per rank, and DistributedDataParallel all-reduces the
gradients. The random numbers a step uses (dynamic binarisation, the reparameterisation noise)
are drawn for the whole global batch on every rank and each rank keeps its rows, so a run takes
the same steps whatever the number of processes, and its checkpoint does not depend on it.
Only rank 0 writes files. In a single process every function here does nothing.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import Tensor

from .errors import ConfigError, PeerStopped, show

TIMEOUT = datetime.timedelta(minutes=30)  # a collective waits this long for a rank (rank 0 evaluates alone)


@dataclass(frozen=True)
class Group:
    """This process's place in the job: ``rank`` of ``world`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    launched: bool = False  # started by torchrun (even as its only process): signals may come twice

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def writer(self) -> bool:
        """Only rank 0 writes the run folder and prints."""
        return self.rank == 0

    def share(self, n: int) -> tuple[int, int]:
        """(offset, size) of this rank's contiguous share of n rows; earlier ranks take one extra row
        when n does not divide evenly (as ``Tensor.tensor_split``)."""
        base, extra = divmod(n, self.world)
        size = base + (self.rank < extra)
        return self.rank * base + min(self.rank, extra), size


SINGLE = Group()


def from_environment() -> Group:
    """The group torchrun describes in RANK, WORLD_SIZE and LOCAL_RANK (one process without them)."""
    env = os.environ
    if "WORLD_SIZE" not in env:
        return SINGLE
    try:
        world, rank = int(env["WORLD_SIZE"]), int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={show(env.get('WORLD_SIZE'))}, RANK={show(env.get('RANK'))}: not the "
                          "numbers torchrun sets; unset them or start vaekit with torchrun") from None
    if not (world >= 1 and 0 <= rank < world and local >= 0):
        raise ConfigError(f"RANK={rank} of WORLD_SIZE={world} is not a place in the job; start vaekit with torchrun")
    return Group(rank, world, local, launched=True)


def device_for(group: Group, device: torch.device) -> torch.device:
    """One GPU per process on a node (cuda:LOCAL_RANK); CPU processes share the CPU."""
    if group.active and device.type == "cuda":
        if group.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK={group.local_rank} but this node has {torch.cuda.device_count()} GPU(s); "
                              "start at most one process per GPU (torchrun --nproc-per-node)")
        return torch.device("cuda", group.local_rank)
    return device


@contextlib.contextmanager
def joined(group: Group, device: torch.device) -> Iterator[None]:
    """The process group for the duration of training (nccl on GPUs, gloo on CPUs); created here
    unless the caller already made one, and then also destroyed here."""
    import torch.distributed as dist

    if not group.active or dist.is_initialized():
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def all_sum(group: Group, t: Tensor) -> Tensor:
    """Sum ``t`` over the ranks, in place (the tensor itself in one process)."""
    if group.active:
        import torch.distributed as dist

        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def agree(group: Group, failed: bool) -> bool:
    """True when any rank says ``failed`` (so that all stop together instead of waiting for one)."""
    if not group.active:
        return failed
    flag = torch.tensor([1.0 if failed else 0.0])
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    return bool(all_sum(group, flag).item())


def is_collective_failure(e: BaseException) -> bool:
    """A collective that failed because a peer went away (gloo or NCCL say so in their messages; newer
    torch raises its DistError types)."""
    kinds = tuple(k for k in (getattr(torch.distributed, "DistError", None),) if isinstance(k, type))
    return isinstance(e, kinds) or any(word in str(e) for word in ("gloo", "NCCL", "by peer"))


def _cause(e: BaseException) -> str:
    """The gist of a collective's failure: its first sentence, without the source-file prefix."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", (str(e).strip().splitlines() or [""])[0])
    return show(text.split(". ")[0] or type(e).__name__, 120)


@contextlib.contextmanager
def peers_watched(group: Group, kept: Callable[[], str]) -> Iterator[None]:
    """A collective that fails because another process ended (killed, out of memory, a lost node)
    becomes a one-line PeerStopped naming what the run kept (``kept()``, asked after the failure),
    not an internal error."""
    try:
        yield
    except RuntimeError as e:
        if not group.active or not is_collective_failure(e):
            raise
        raise PeerStopped(f"another process of this job stopped ({_cause(e)})", kept()) from None


def barrier(group: Group) -> None:
    if group.active:
        import torch.distributed as dist

        dist.barrier()


@dataclass(frozen=True)
class Shard:
    offset: int
    size: int
    total: int


class _Current:
    """The step's shard, as a plain attribute: torch.compile reads through it (and guards on it),
    where a ContextVar's ``get`` split the compiled step into seven graphs."""

    shard: Shard | None = None


_CURRENT = _Current()


@contextlib.contextmanager
def batch_shard(offset: int, size: int, total: int) -> Iterator[None]:
    """Within this block, noise drawn for a batch of ``size`` rows is cut from a draw for all
    ``total`` rows of the global batch (rows ``offset`` on), so every rank draws what one process would."""
    before = _CURRENT.shard
    _CURRENT.shard = Shard(offset, size, total) if size != total else None
    try:
        yield
    finally:
        _CURRENT.shard = before


def noise_rows(shape: torch.Size, generator: torch.Generator | None, device: torch.device,
               dtype: torch.dtype) -> Tensor | None:
    """Standard normal noise of ``shape`` (batch on axis -2) cut from the global batch's draw, or
    None outside a sharded step (or for tensors whose axis -2 is not this rank's batch)."""
    shard = _CURRENT.shard
    if shard is None or len(shape) < 2 or shape[-2] != shard.size:
        return None
    full = torch.randn((*shape[:-2], shard.total, shape[-1]), generator=generator, device=device, dtype=dtype)
    return full[..., shard.offset: shard.offset + shard.size, :]
