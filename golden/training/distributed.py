"""torch.distributed plumbing for golden training (docs/distributed.md).

One process per rank, started by ``torchrun`` (which sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT) or by :func:`launch_local`. The backend follows the device: nccl
when the rank trains on a GPU, gloo on CPU. Small reductions of the golden model's own state
(pruning thresholds, metrics, the stop flag, BatchNorm statistics on CPU) go through a second
gloo group on CPU tensors, so their order never interleaves with DDP's gradient buckets.

Everything here degrades to a no-op for a single process, so ``train`` has one code path.
"""
from __future__ import annotations

import hashlib
import os
import signal
import socket
import threading
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class Dist:
    """This process's place in the job. ``group``: the gloo side group (None for one process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    group: Any = None
    owns_group: bool = False  # init_process_group was called here, so destroy it at the end

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        """Only rank 0 writes files."""
        return self.rank == 0

    # ---- reductions (identity for one process) -------------------------------------------
    def sum_(self, t: Tensor) -> Tensor:
        """In-place sum over ranks of a CPU tensor (float64 or int64 for exact counts)."""
        if self.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)
        return t

    def sum_floats(self, values: list[float]) -> list[float]:
        if not self.enabled:
            return list(values)
        return self.sum_(torch.tensor(values, dtype=torch.float64)).tolist()

    def max_(self, t: Tensor) -> Tensor:
        """In-place maximum over ranks of a CPU tensor."""
        if self.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return t

    def from_rank0(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled; for small objects and checkpoints)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank."""
        if not self.enabled:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return bool(t.item())

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (rank order); None on the other ranks."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size if self.rank == 0 else None
        dist.gather_object(obj, out, dst=0, group=self.group)
        return out

    def check_same(self, what: str, digest: str) -> None:
        """Raise on every rank unless every rank computed the same ``digest`` of ``what``."""
        if not self.enabled:
            return
        digests: list[Any] = [None] * self.world_size
        dist.all_gather_object(digests, digest, group=self.group)
        if len(set(digests)) != 1:
            raise RuntimeError(f"{what} differs between ranks (digests {digests}); the ranks are out of step")

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier(group=self.group)


def env_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) outside it."""
    try:
        return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError as exc:
        raise ValueError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers ({exc})") from None


def rank_seed(seed: int, rank: int) -> int:
    """A 63-bit seed for rank ``rank``'s global torch generator (dropout), derived from (seed, rank)."""
    import numpy as np

    return int(np.random.SeedSequence([seed, rank]).generate_state(1, np.uint64)[0] >> 1)


def pick_device(requested: str, local_rank: int) -> torch.device:
    """``auto``: this rank's GPU (cuda:LOCAL_RANK) when CUDA is available, else the CPU."""
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device = {requested!r} is out of range; allowed: auto, cpu, cuda")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("device = 'cuda' but torch sees no CUDA device; allowed here: auto, cpu")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def setup(device: torch.device) -> Dist:
    """Join the job described by the environment (or stay a single process)."""
    rank, world, local = env_world()
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK = {rank}, WORLD_SIZE = {world} are out of range; allowed: 0 <= RANK < WORLD_SIZE")
    if world == 1:
        return Dist()
    owns = not dist.is_initialized()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if owns:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    else:
        backend = dist.get_backend()
    group = dist.new_group(backend="gloo")
    return Dist(rank=rank, world_size=world, local_rank=local, backend=backend, group=group, owns_group=owns)


def teardown(d: Dist) -> None:
    if d.enabled and d.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def sum_allreduce_hook(group, bucket):  # no annotations: DDP checks them, and they are strings here
    """DDP communication hook: sum (not average) the gradient bucket (dist.GradBucket) over ranks.

    Each rank's loss is its share of the global-batch mean (sum of its samples' losses divided by
    the global batch), so the sum over ranks is exactly the single-process gradient, and every
    rank's activation gradients have the single-process scale that the pruning thresholds see.
    """
    fut = dist.all_reduce(bucket.buffer(), group=group, async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


def sum_grads_(model: nn.Module) -> None:
    """Sum every parameter gradient over ranks by hand (after a backward under ``no_sync``)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()


class _SumOverRanks(torch.autograd.Function):
    """Differentiable all-reduce (sum): the backward sums the gradients over ranks as well."""

    @staticmethod
    def forward(ctx: Any, t: Tensor, group: Any) -> Tensor:
        ctx.group = group
        out = t.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return _SumOverRanks.apply(grad.contiguous(), ctx.group), None


class CpuSyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch (gloo, CPU).

    torch's SyncBatchNorm runs only on GPUs. Here the per-channel sum, sum of squares and count
    are all-reduced through a differentiable sum, so autograd produces the global-batch backward
    as well. Statistics in float64 (the single-process BN reduces in one pass over the batch).
    """

    group: Any = None

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        xd = x.double()
        local = torch.cat([xd.sum((0, 2, 3)), (xd * xd).sum((0, 2, 3)),
                           torch.tensor([x.numel() / x.shape[1]], dtype=torch.float64)])
        tot = _SumOverRanks.apply(local, self.group)
        c = x.shape[1]
        n = tot[-1]
        mean = tot[:c] / n
        var = (tot[c:2 * c] / n - mean * mean).clamp_min(0.0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * (n / (n - 1)) if float(n) > 1 else var
                self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        shape = (1, c, 1, 1)
        y = (xd - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        y = y.to(x.dtype)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def sync_batchnorm(model: nn.Module, d: Dist, device: torch.device) -> nn.Module:
    """Every BatchNorm2d of ``model`` normalising with global-batch statistics (GPU: torch's own)."""
    if not d.enabled:
        return model
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.BatchNorm2d:
                new = CpuSyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                         child.track_running_stats)
                new.load_state_dict(child.state_dict())
                new.group = d.group
                setattr(parent, name, new)
    return model


def digest(tensors: list[Tensor]) -> str:
    """sha256 over the bytes of ``tensors`` (to check that ranks agree)."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(local_rank: int, nproc: int, port: int, env: dict[str, str], fn: Callable[..., Any], args: tuple) -> None:
    # The launcher's environment now (a fork server keeps the one it was started with).
    os.environ.clear()
    os.environ.update(env)
    os.environ.update(RANK=str(local_rank), WORLD_SIZE=str(nproc), LOCAL_RANK=str(local_rank),
                      LOCAL_WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    fn(*args)


# Imported once by the fork server, so that workers start in a second rather than paying torch's
# (and torch.optim's lazy torch._dynamo) import each time.
PRELOAD = ("torch", "torch._dynamo", "sparsetrain.golden.training.train", "sparsetrain.golden.training.plots")


def start_method() -> str:
    """forkserver where the platform has it (a clean single-threaded parent with the imports
    preloaded; safe to fork, unlike a process that has run torch), else spawn."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return "spawn"
    multiprocessing.get_context("forkserver").set_forkserver_preload(list(PRELOAD))
    return "forkserver"


def launch_local(nproc: int, fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` in ``nproc`` spawned processes on this machine, as ranks 0 .. nproc-1.

    ``fn`` must be importable (a module-level function). A worker's exception is re-raised here
    (torch.multiprocessing's ProcessRaisedException, carrying the worker's traceback).
    """
    import torch.multiprocessing as mp

    if not isinstance(nproc, int) or not 1 <= nproc <= 1024:
        raise ValueError(f"nproc_per_node = {nproc!r} is out of range; allowed: 1 .. 1024")
    if any(v in os.environ for v in ("RANK", "WORLD_SIZE")) and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise ValueError("--nproc-per-node spawns its own workers; do not combine it with torchrun")
    ctx = mp.start_processes(_worker, args=(nproc, free_port(), dict(os.environ), fn, args), nprocs=nproc, join=False,
                             start_method=start_method())

    def forward(signum: int, frame: Any) -> None:  # the workers checkpoint and stop together
        for proc in ctx.processes:
            if proc.is_alive():
                os.kill(proc.pid, signum)

    old = {}
    if threading.current_thread() is threading.main_thread():
        old = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not ctx.join():
            pass
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
