"""Small torch helpers shared by the ops, the networks and the training loop (upstream module path and names)."""

import contextlib
import functools
import re
import warnings
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

import dnnlib

# ----------------------------------------------------------------------------
# Cache of constant tensors, keyed by everything that makes two constants interchangeable.

_constant_cache = dict()


def constant(
    value,  # Anything np.asarray() accepts.
    shape: Sequence[int] = None,  # Broadcast the value to this shape.
    dtype: torch.dtype = None,  # Default: torch.get_default_dtype().
    device: torch.device = None,  # Default: CPU.
    memory_format: torch.memory_format = None,  # Default: torch.contiguous_format.
) -> torch.Tensor:
    """Returns a cached constant tensor; equal requests return the very same tensor object.

    Do not modify the result in place: it is shared by every caller.
    """
    value = np.asarray(value)
    shape = None if shape is None else tuple(shape)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    device = torch.device('cpu') if device is None else torch.device(device)
    memory_format = torch.contiguous_format if memory_format is None else memory_format

    key = (value.shape, value.dtype, value.tobytes(), shape, dtype, device, memory_format)
    tensor = _constant_cache.get(key, None)
    if tensor is None:
        tensor = torch.as_tensor(value.copy(), dtype=dtype, device=device)
        if shape is not None:
            tensor = tensor.expand(shape)
        tensor = tensor.contiguous(memory_format=memory_format)
        _constant_cache[key] = tensor
    return tensor


# ----------------------------------------------------------------------------
# Kept for code written against old torch releases (upstream networks and training loops call these).

nan_to_num = torch.nan_to_num
symbolic_assert = torch._assert


# ----------------------------------------------------------------------------
# Context manager that silences TracerWarnings, for values we knowingly treat as constants while tracing.


@contextlib.contextmanager
def suppress_tracer_warnings():
    """Within the block, torch.jit tracer warnings are ignored."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', category=torch.jit.TracerWarning)
        yield


# ----------------------------------------------------------------------------
# Inside torch.func transforms? (Custom autograd.Functions must then step aside.)


def functorch_transform_active() -> bool:
    """True inside torch.func transforms (vmap, grad, ...). Our hand-written autograd.Functions have no functorch
    rules, so the ops then take their plain-torch reference paths (exact; used by DP-SGD's per-sample gradients)."""
    return torch._C._are_functorch_transforms_active()


# ----------------------------------------------------------------------------
# Shape contract check: None in the reference shape matches any size.


def assert_shape(tensor: torch.Tensor, ref_shape: Sequence) -> None:
    """Checks `tensor.shape` against `ref_shape`.

    Args:
        tensor: The tensor to check.
        ref_shape: One entry per dimension: an int, a 0-dim tensor (while tracing) or None for "any".

    Raises:
        AssertionError: On a wrong number of dimensions or a wrong size.
    """
    if tensor.ndim != len(ref_shape):
        raise AssertionError(f'Wrong number of dimensions: got {tensor.ndim}, expected {len(ref_shape)}')
    for idx, (size, ref_size) in enumerate(zip(tensor.shape, ref_shape)):
        if ref_size is None:
            continue
        with suppress_tracer_warnings():
            if int(size) != int(ref_size):
                raise AssertionError(f'Wrong size for dimension {idx}: got {int(size)}, expected {int(ref_size)}')


# ----------------------------------------------------------------------------
# Decorator that names a function's span in the autograd profiler.


def profiled_function(fn: Callable) -> Callable:
    """Wraps `fn` in `torch.autograd.profiler.record_function(fn.__name__)`."""

    @functools.wraps(fn)
    def decorator(*args, **kwargs):
        with torch.autograd.profiler.record_function(fn.__name__):
            return fn(*args, **kwargs)

    return decorator


# ----------------------------------------------------------------------------
# Endless sampler over a dataset: shuffles with a sliding window and splits items across ranks.


class InfiniteSampler(torch.utils.data.Sampler):
    """Yields dataset indices forever; rank `r` of `n` gets every n-th index of one shared sequence.

    With `shuffle`, the order is a seeded permutation that keeps evolving: after each item, the current
    slot swaps with a random slot up to `window_size * len(dataset)` behind it.
    """

    def __init__(
        self,
        dataset,  # Anything with len().
        rank: int = 0,  # This process's rank.
        num_replicas: int = 1,  # World size.
        shuffle: bool = True,  # Shuffle, or walk the dataset in order.
        seed: int = 0,  # Seed of the shuffle.
        window_size: float = 0.5,  # Fraction of the dataset to reshuffle within.
    ):
        assert len(dataset) > 0
        assert num_replicas > 0
        assert 0 <= rank < num_replicas
        assert 0 <= window_size <= 1
        super().__init__()
        self.dataset = dataset
        self.rank = rank
        self.num_replicas = num_replicas
        self.shuffle = shuffle
        self.seed = seed
        self.window_size = window_size

    def __iter__(self) -> Iterator[int]:
        order = np.arange(len(self.dataset))
        rnd = None
        window = 0
        if self.shuffle:
            rnd = np.random.RandomState(self.seed)
            rnd.shuffle(order)
            window = int(np.rint(order.size * self.window_size))

        step = 0
        while True:
            slot = step % order.size
            if step % self.num_replicas == self.rank:
                yield int(order[slot])
            if window >= 2:
                other = (slot - rnd.randint(window)) % order.size
                order[slot], order[other] = order[other], order[slot]
            step += 1


# ----------------------------------------------------------------------------
# Parameters and buffers of a module, as one list.


def params_and_buffers(module: torch.nn.Module) -> list[torch.Tensor]:
    """Returns all parameters followed by all buffers of `module`."""
    assert isinstance(module, torch.nn.Module)
    return list(module.parameters()) + list(module.buffers())


def named_params_and_buffers(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Returns `(name, tensor)` for all parameters followed by all buffers of `module`."""
    assert isinstance(module, torch.nn.Module)
    return list(module.named_parameters()) + list(module.named_buffers())


# ----------------------------------------------------------------------------
# Copies tensors by name (resume, G -> G_ema); reports, never broadcasts, what it could not copy.


@torch.no_grad()
def copy_params_and_buffers(
    src_module: torch.nn.Module,  # Source of the values.
    dst_module: torch.nn.Module,  # Updated in place.
    require_all: bool = False,  # Raise if any dst tensor is missing in src or has another shape.
) -> list[str]:  # dst names left untouched: missing in src or shape mismatch.
    """Copies parameters and buffers from `src_module` into the same-named tensors of `dst_module`.

    A tensor whose shape differs between the two is skipped (left as initialised), never broadcast.

    Returns:
        The names of the dst tensors that were not copied, in dst order.

    Raises:
        ValueError: With `require_all`, if any dst tensor could not be copied.
    """
    assert isinstance(src_module, torch.nn.Module)
    assert isinstance(dst_module, torch.nn.Module)
    src_tensors = dict(named_params_and_buffers(src_module))
    not_copied = []
    for name, tensor in named_params_and_buffers(dst_module):
        src = src_tensors.get(name, None)
        if src is None or src.shape != tensor.shape:
            not_copied.append(name)
            continue
        tensor.copy_(src.detach()).requires_grad_(tensor.requires_grad)
    if require_all and not_copied:
        raise ValueError(f'copy_params_and_buffers: missing or mismatched in source: {", ".join(not_copied)}')
    return not_copied


# ----------------------------------------------------------------------------
# Skips the DDP gradient all-reduce for accumulation rounds; a no-op for plain modules.


@contextlib.contextmanager
def ddp_sync(module: torch.nn.Module, sync: bool):
    """Within the block, backward passes through a DDP `module` all-reduce gradients only if `sync`."""
    assert isinstance(module, torch.nn.Module)
    if sync or not isinstance(module, torch.nn.parallel.DistributedDataParallel):
        yield
    else:
        with module.no_sync():
            yield


# ----------------------------------------------------------------------------
# Debug check that every rank holds the same parameters and buffers as rank 0.


def check_ddp_consistency(module: torch.nn.Module, ignore_regex: str = None) -> None:
    """Raises AssertionError naming the first tensor that differs from rank 0's copy.

    Args:
        module: Module replicated on every rank of the initialised process group.
        ignore_regex: Tensors whose full name (`ClassName.tensor.name`) fully matches are skipped.
    """
    assert isinstance(module, torch.nn.Module)
    for name, tensor in named_params_and_buffers(module):
        fullname = type(module).__name__ + '.' + name
        if ignore_regex is not None and re.fullmatch(ignore_regex, fullname):
            continue
        tensor = tensor.detach()
        if tensor.is_floating_point():
            tensor = torch.nan_to_num(tensor)  # NaN != NaN would otherwise fail the check.
        other = tensor.clone()
        torch.distributed.broadcast(tensor=other, src=0)
        if not (tensor == other).all():
            raise AssertionError(f'DDP inconsistency in {fullname}')


# ----------------------------------------------------------------------------
# Table of submodules with their parameter/buffer counts and output shapes, from one forward pass.


def print_module_summary(
    module: torch.nn.Module,  # Module to run.
    inputs: Sequence,  # Positional arguments of module(*inputs).
    max_nesting: int = 3,  # Deepest submodule level that gets its own row.
    skip_redundant: bool = True,  # Hide rows that add no parameters, buffers or new outputs.
):  # Whatever module(*inputs) returns.
    """Runs `module(*inputs)`, prints one row per submodule and returns the outputs."""
    assert isinstance(module, torch.nn.Module)
    assert not isinstance(module, torch.jit.ScriptModule)
    assert isinstance(inputs, (tuple, list))

    entries = []
    nesting = [0]

    def pre_hook(_mod, _inputs):
        nesting[0] += 1

    def post_hook(mod, _inputs, outputs):
        nesting[0] -= 1
        if nesting[0] <= max_nesting:
            outputs = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
            outputs = [t for t in outputs if isinstance(t, torch.Tensor)]
            entries.append(dnnlib.EasyDict(mod=mod, outputs=outputs))

    hooks = [mod.register_forward_pre_hook(pre_hook) for mod in module.modules()]
    hooks += [mod.register_forward_hook(post_hook) for mod in module.modules()]
    try:
        outputs = module(*inputs)
    finally:
        for hook in hooks:
            hook.remove()

    rows = _summary_rows(module, entries, skip_redundant)
    _print_table(rows)
    return outputs


# ----------------------------------------------------------------------------
# Rows of the summary table; each tensor is credited to the innermost entry that owns it.


def _summary_rows(module: torch.nn.Module, entries: list, skip_redundant: bool) -> list[list[str]]:
    tensors_seen = set()
    for entry in entries:
        entry.unique_params = [t for t in entry.mod.parameters() if id(t) not in tensors_seen]
        entry.unique_buffers = [t for t in entry.mod.buffers() if id(t) not in tensors_seen]
        entry.unique_outputs = [t for t in entry.outputs if id(t) not in tensors_seen]
        tensors_seen |= {id(t) for t in entry.unique_params + entry.unique_buffers + entry.unique_outputs}
    if skip_redundant:
        entries = [e for e in entries if len(e.unique_params) or len(e.unique_buffers) or len(e.unique_outputs)]

    names = {mod: name for name, mod in module.named_modules()}
    rows = [[type(module).__name__, 'Parameters', 'Buffers', 'Output shape', 'Datatype'], ['---'] * 5]
    total_params = total_buffers = 0
    for entry in entries:
        name = '<top-level>' if entry.mod is module else names[entry.mod]
        num_params = sum(t.numel() for t in entry.unique_params)
        num_buffers = sum(t.numel() for t in entry.unique_buffers)
        shapes = [str(list(t.shape)) for t in entry.outputs] or ['-']
        dtypes = [str(t.dtype).split('.')[-1] for t in entry.outputs] or ['-']
        rows.append(
            [
                name + (':0' if len(entry.outputs) >= 2 else ''),
                str(num_params or '-'),
                str(num_buffers or '-'),
                shapes[0],
                dtypes[0],
            ]
        )
        for idx in range(1, len(entry.outputs)):
            rows.append([name + f':{idx}', '-', '-', shapes[idx], dtypes[idx]])
        total_params += num_params
        total_buffers += num_buffers
    rows += [['---'] * 5, ['Total', str(total_params), str(total_buffers), '-', '-']]
    return rows


# ----------------------------------------------------------------------------
# Prints rows as left-aligned columns.


def _print_table(rows: list[list[str]]) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(*rows)]
    print()
    for row in rows:
        print('  '.join(cell + ' ' * (width - len(cell)) for cell, width in zip(row, widths)))
    print()


# ----------------------------------------------------------------------------
