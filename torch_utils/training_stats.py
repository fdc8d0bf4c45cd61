"""Scalar statistics reported from anywhere in training, summed over ranks and read out by collectors.

`report(name, value)` adds the count, sum and sum of squares of `value` to a per-name counter; a
`Collector` later all-reduces the counters across ranks (torch.distributed, gloo or nccl) and exposes the
mean and standard deviation of everything reported since its previous `update()`.
"""

import re

import numpy as np
import torch

import dnnlib

# ----------------------------------------------------------------------------
# Moments kept per statistic: (count, sum, sum of squares). Reduced in float32, accumulated in float64.

_num_moments = 3
_reduce_dtype = torch.float32
_counter_dtype = torch.float64

_rank = 0  # Rank of this process.
_sync_device = None  # Device used for the all-reduce; None = single process.
_sync_called = False  # A sync already happened, so init_multiprocessing() is too late.
_counters = dict()  # name => device => moments accumulated since the last sync.
_cumulative = dict()  # name => moments summed over all ranks and all syncs so far (CPU).

# ----------------------------------------------------------------------------
# Multi-process setup; call once per process before the first Collector.update().


def init_multiprocessing(rank: int, sync_device: torch.device) -> None:
    """Sets this process's rank and the device the all-reduce runs on.

    Args:
        rank: Rank in the default process group (report0() only keeps values from rank 0).
        sync_device: `torch.device('cuda', local_rank)` with nccl, `torch.device('cpu')` with gloo, or
            None to skip cross-process reduction.
    """
    global _rank, _sync_device
    assert not _sync_called, 'init_multiprocessing() must be called before the first sync'
    _rank = rank
    _sync_device = None if sync_device is None else torch.device(sync_device)


# ----------------------------------------------------------------------------
# Adds a value (scalar or tensor of samples) to the named statistic on this rank.


@torch.no_grad()
def report(name: str, value):
    """Accumulates every element of `value` under `name`; returns `value` unchanged.

    Every rank must report each name at least once (possibly with an empty value) before a sync,
    because the all-reduce runs over the same list of names on every rank.
    """
    if name not in _counters:
        _counters[name] = dict()
    elems = torch.as_tensor(value)
    if elems.numel() == 0:
        return value
    elems = elems.detach().flatten().to(_reduce_dtype)
    moments = torch.stack([torch.ones_like(elems).sum(), elems.sum(), elems.square().sum()])
    assert moments.ndim == 1 and moments.shape[0] == _num_moments
    moments = moments.to(_counter_dtype)

    counters = _counters[name]
    if moments.device not in counters:
        counters[moments.device] = torch.zeros_like(moments)
    counters[moments.device].add_(moments)
    return value


# ----------------------------------------------------------------------------
# Reports from rank 0 only; other ranks register the name with no samples.


def report0(name: str, value):
    """Like report(), but only rank 0's value counts. Returns `value`."""
    report(name, value if _rank == 0 else [])
    return value


# ----------------------------------------------------------------------------
# Reads out the statistics reported since the previous update(), summed over all ranks.


class Collector:
    """Gives num/mean/std of every statistic whose name fully matches `regex`.

    `update()` is a collective call under multi-processing: every rank must call it at the same time.
    With `keep_previous`, a statistic that got no new values keeps its previous readout.
    """

    def __init__(self, regex: str = '.*', keep_previous: bool = True):
        self._regex = re.compile(regex)
        self._keep_previous = keep_previous
        self._cumulative = dict()
        self._moments = dict()
        self.update()
        self._moments.clear()

    def names(self) -> list[str]:
        """Names reported so far that match the regex."""
        return [name for name in _counters if self._regex.fullmatch(name)]

    def update(self) -> None:
        """Pulls in everything reported since the previous call (collective across ranks)."""
        if not self._keep_previous:
            self._moments.clear()
        for name, cumulative in _sync(self.names()):
            if name not in self._cumulative:
                self._cumulative[name] = torch.zeros_like(cumulative)
            delta = cumulative - self._cumulative[name]
            self._cumulative[name].copy_(cumulative)
            if float(delta[0]) != 0:
                self._moments[name] = delta

    def _get_delta(self, name: str) -> torch.Tensor:
        assert self._regex.fullmatch(name), f'{name} does not match the collector regex'
        if name not in self._moments:
            self._moments[name] = torch.zeros([_num_moments], dtype=_counter_dtype)
        return self._moments[name]

    def num(self, name: str) -> int:
        """Number of scalars reported for `name` in the last update window."""
        return int(self._get_delta(name)[0])

    def mean(self, name: str) -> float:
        """Mean of those scalars; NaN if there were none."""
        count, total, _ = self._get_delta(name).tolist()
        return float('nan') if count == 0 else total / count

    def std(self, name: str) -> float:
        """Population standard deviation of those scalars; NaN if none, 0 for a single one."""
        count, total, total_sq = self._get_delta(name).tolist()
        if count == 0 or not np.isfinite(total):
            return float('nan')
        if count == 1:
            return 0.0
        mean = total / count
        return float(np.sqrt(max(total_sq / count - mean**2, 0)))

    def as_dict(self) -> dnnlib.EasyDict:
        """`{name: EasyDict(num, mean, std)}` for every matching name (for JSON logging)."""
        stats = dnnlib.EasyDict()
        for name in self.names():
            stats[name] = dnnlib.EasyDict(num=self.num(name), mean=self.mean(name), std=self.std(name))
        return stats

    def __getitem__(self, name: str) -> float:
        return self.mean(name)


# ----------------------------------------------------------------------------
# Moves pending counters into the cumulative totals, all-reducing them across ranks.


def _sync(names: list[str]) -> list[tuple[str, torch.Tensor]]:
    global _sync_called
    if len(names) == 0:
        return []
    _sync_called = True
    device = torch.device('cpu') if _sync_device is None else _sync_device

    deltas = []
    reduce_order = sorted(names)  # The same on every rank, whatever order each rank first reported in.
    for name in reduce_order:
        delta = torch.zeros([_num_moments], dtype=_counter_dtype, device=device)
        for counter in _counters[name].values():
            delta.add_(counter.to(device))
            counter.zero_()
        deltas.append(delta)
    deltas = torch.stack(deltas)

    if _sync_device is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(deltas)

    deltas = deltas.cpu()
    for idx, name in enumerate(reduce_order):
        if name not in _cumulative:
            _cumulative[name] = torch.zeros([_num_moments], dtype=_counter_dtype)
        _cumulative[name].add_(deltas[idx])
    return [(name, _cumulative[name]) for name in names]


# ----------------------------------------------------------------------------
# Collector used by the training loop; created at import so it sees every name.

default_collector = Collector()

# ----------------------------------------------------------------------------
