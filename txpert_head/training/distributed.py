"""Data-parallel training across processes started by ``torchrun`` (PyTorch's own DDP, no cluster code).

``torchrun --standalone --nproc_per_node N -m txpert_head.cli.main train ...`` starts N copies of the command
with the environment variables ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``. :func:`setup` reads them and,
when ``WORLD_SIZE > 1``, joins the process group: NCCL when the run's device is CUDA (each rank on GPU
``LOCAL_RANK``), gloo on CPU. Without those variables (a plain ``txpert train``) everything here is a
no-op and :class:`DistContext` describes a single process.

How training is split (see :meth:`txpert_head.training.trainer.Trainer.train_step`): every rank computes the same epoch
order and the same random draws for the whole batch, then keeps its contiguous block of the batch
(:meth:`DistContext.shard`; whole perturbation groups when batches are built by perturbation). Each rank's
loss is its share of the whole batch's loss, ``Σ_{i∈shard} w_i·l_i / Σ_{i∈batch} w_i``, times the world
size, because DDP *averages* gradients over ranks; the averaged gradient is then exactly the
single-process gradient (up to floating-point summation order). Only rank 0 writes files; the early-stopping
decision is taken on rank 0 and broadcast, so every rank runs the same number of steps and epochs.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

COLLECTIVE_TIMEOUT_S = 3 * 3600
_OWNED = False  # True when setup() created the process group (so teardown() may destroy it)


class DistributedSetupError(RuntimeError):
    """The torchrun environment variables are malformed or the process group cannot start."""


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a data-parallel run: ``rank`` of ``world_size``, GPU ``local_rank``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when several processes train together (a process group is running)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and evaluates."""
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous block of ``n`` items: ``np.array_split`` boundaries (sizes differ by <= 1;
        a rank may get an empty block when ``n < world_size``)."""
        q, r = divmod(n, self.world_size)  # the first r ranks get one item more, as np.array_split
        lo = self.rank * q + min(self.rank, r)
        hi = lo + q + (1 if self.rank < r else 0)
        return slice(int(lo), int(hi))

    def device(self, device: torch.device) -> torch.device:
        """A CUDA device without an index becomes ``cuda:LOCAL_RANK`` in a distributed run."""
        if self.enabled and device.type == "cuda" and device.index is None:
            return torch.device("cuda", self.local_rank)
        return device

    def wrap(self, model: nn.Module, device: torch.device, find_unused: bool = False) -> nn.Module:
        """``DistributedDataParallel(model)`` in a distributed run, else ``model`` itself.

        ``find_unused``: some parameters may get no gradient on a rank in some steps (e.g. the target-gene head
        when no perturbed gene of the rank's shard is measured); DDP then has to look for them every step.
        Buffers are constants here (edge lists), so they are synchronised once at construction, not per step.
        """
        if not self.enabled:
            return model
        import inspect

        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        params = inspect.signature(DistributedDataParallel).parameters
        sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused, **sync)

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (any picklable value; other ranks may pass anything)."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def sum(self, value: float) -> float:
        """Sum of a float over ranks (float64 all-reduce; the same value on every rank)."""
        if not self.enabled:
            return float(value)
        backend = torch.distributed.get_backend()
        dev = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        t = torch.tensor([float(value)], dtype=torch.float64, device=dev)
        torch.distributed.all_reduce(t)
        return float(t.item())

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise DistributedSetupError(f"environment variable {name}={raw!r} is not an integer") from None


def env_context() -> DistContext:
    """The context described by torchrun's ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` (single process if unset)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise DistributedSetupError(f"RANK={rank} is not in [0, WORLD_SIZE={world})")
    return DistContext(rank=rank, world_size=world, local_rank=local)


def is_main_process() -> bool:
    """True on rank 0 (and in a single-process run); needs no process group."""
    return env_context().is_main


def setup(device: str = "auto") -> DistContext:
    """Join the process group when started by torchrun (``WORLD_SIZE > 1``); idempotent; returns the context.

    Backend: NCCL when ``device`` is CUDA (``auto`` with a GPU present, or ``cuda...``), gloo otherwise; on
    CUDA the process's current device becomes ``cuda:LOCAL_RANK``.
    """
    global _OWNED
    ctx = env_context()
    if not ctx.enabled:
        return ctx
    dist = torch.distributed
    if not dist.is_available():
        raise DistributedSetupError("this PyTorch build has no torch.distributed; cannot run under torchrun")
    if dist.is_initialized():
        if dist.get_world_size() != ctx.world_size or dist.get_rank() != ctx.rank:
            raise DistributedSetupError("a process group is already running with another rank/world size")
        return ctx
    cuda = torch.cuda.is_available() and (device == "auto" or device.startswith("cuda"))
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(ctx.local_rank)
    # generous timeout: the other ranks wait in a broadcast while rank 0 evaluates, runs the baselines and
    # writes the run folder, which on a large dataset can outlast torch's default of 30 minutes
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    _OWNED = True
    log.info("rank %d/%d joined the %s process group", ctx.rank, ctx.world_size, backend)
    return ctx


def teardown() -> None:
    """Leave the process group if :func:`setup` created it (no-op otherwise)."""
    global _OWNED
    if _OWNED and torch.distributed.is_available() and torch.distributed.is_initialized():
        # every rank's sends and receives are done before any rank tears its gloo threads down: a rank that
        # destroys the group while a peer's last collective is still in flight can abort at exit
        # ("terminate called without an active exception"), seen once in CI after a complete run
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    _OWNED = False


def finish(ctx: DistContext, value: Any) -> Any:
    """End of a distributed command: rank 0's ``value`` on every rank, then leave the process group."""
    value = ctx.broadcast(value)
    teardown()
    return value
