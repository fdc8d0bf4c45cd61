"""torch_utils.misc: constant cache, shape checks, sampler, parameter copying, DDP helpers, summary."""

import textwrap

import numpy as np
import pytest
import torch

from torch_utils import misc

# ----------------------------------------------------------------------------
# constant()


def test_constant_is_cached_by_value_shape_dtype_and_format():
    a = misc.constant([1.0, 2.0, 3.0])
    assert a is misc.constant(np.array([1.0, 2.0, 3.0]))
    assert a.dtype == torch.get_default_dtype() and a.device.type == 'cpu'
    assert a is not misc.constant([1.0, 2.0, 4.0])
    assert a is not misc.constant([1.0, 2.0, 3.0], dtype=torch.float64)
    b = misc.constant(7, shape=[2, 3], dtype=torch.int64)
    assert b is misc.constant(7, shape=(2, 3), dtype=torch.int64)
    assert b.shape == (2, 3) and b.dtype == torch.int64 and b.is_contiguous() and bool((b == 7).all())
    c = misc.constant(0.5, shape=[1, 3, 2, 2], memory_format=torch.channels_last)
    assert c is not misc.constant(0.5, shape=[1, 3, 2, 2])
    assert c.is_contiguous(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------
# assert_shape()


def test_assert_shape_accepts_matches_and_none():
    x = torch.zeros(2, 3, 4)
    misc.assert_shape(x, [2, 3, 4])
    misc.assert_shape(x, [None, 3, None])
    misc.assert_shape(x, [torch.tensor(2), None, 4])


@pytest.mark.parametrize('ref', [[2, 3], [2, 3, 4, 5], [2, 5, 4], [None, None, 3]])
def test_assert_shape_raises_on_mismatch(ref):
    with pytest.raises(AssertionError):
        misc.assert_shape(torch.zeros(2, 3, 4), ref)


# ----------------------------------------------------------------------------
# profiled_function()


def test_profiled_function_keeps_name_and_result_and_records_span():
    @misc.profiled_function
    def my_special_op(x):
        return x * 2

    assert my_special_op.__name__ == 'my_special_op'
    with torch.autograd.profiler.profile() as prof:
        assert my_special_op(torch.ones(3)).sum() == 6
    assert any(evt.name == 'my_special_op' for evt in prof.function_events)


# ----------------------------------------------------------------------------
# InfiniteSampler


def _take(sampler, n):
    it = iter(sampler)
    return [next(it) for _ in range(n)]


def test_infinite_sampler_is_deterministic_and_seeded():
    data = range(10)
    first = _take(misc.InfiniteSampler(data, seed=3), 40)
    assert first == _take(misc.InfiniteSampler(data, seed=3), 40)
    assert first != _take(misc.InfiniteSampler(data, seed=4), 40)
    assert first[:10] != list(range(10))


def test_infinite_sampler_covers_dataset():
    data = range(7)
    counts = np.bincount(_take(misc.InfiniteSampler(data, shuffle=True, seed=1), 700), minlength=7)
    assert counts.min() >= 70 and counts.max() <= 130  # Every item, at roughly its fair share of 100.
    assert _take(misc.InfiniteSampler(data, shuffle=False), 14) == list(range(7)) * 2


def test_infinite_sampler_splits_one_sequence_across_ranks():
    data = range(9)
    full = _take(misc.InfiniteSampler(data, seed=5), 60)
    parts = [_take(misc.InfiniteSampler(data, rank=r, num_replicas=3, seed=5), 20) for r in range(3)]
    assert [parts[i % 3][i // 3] for i in range(60)] == full
    assert set(full) == set(range(9))


# ----------------------------------------------------------------------------
# params_and_buffers(), copy_params_and_buffers()


class _Net(torch.nn.Module):
    def __init__(self, width=4, extra=False):
        super().__init__()
        self.fc = torch.nn.Linear(3, width)
        self.register_buffer('stat', torch.zeros(width))
        if extra:
            self.head = torch.nn.Linear(width, 1)


def test_params_and_buffers_lists_both():
    net = _Net()
    names = [name for name, _ in misc.named_params_and_buffers(net)]
    assert names == ['fc.weight', 'fc.bias', 'stat']
    assert [id(t) for t in misc.params_and_buffers(net)] == [id(t) for _, t in misc.named_params_and_buffers(net)]


def test_copy_params_and_buffers_copies_everything_matching():
    src, dst = _Net(), _Net()
    src.stat.fill_(3)
    assert misc.copy_params_and_buffers(src, dst, require_all=True) == []
    for (name, a), (_, b) in zip(misc.named_params_and_buffers(src), misc.named_params_and_buffers(dst)):
        assert torch.equal(a, b), name
    assert dst.fc.weight.requires_grad and dst.fc.weight is not src.fc.weight


def test_copy_params_and_buffers_reports_missing_and_mismatched_without_broadcasting():
    src = _Net(width=1)
    dst = _Net(width=4, extra=True)
    torch.nn.init.constant_(src.fc.bias, 5.0)  # [1]: would broadcast into dst's [4] if we let it.
    dst_before = {name: t.clone() for name, t in misc.named_params_and_buffers(dst)}
    skipped = misc.copy_params_and_buffers(src, dst)
    assert skipped == ['fc.weight', 'fc.bias', 'head.weight', 'head.bias', 'stat']
    for name, tensor in misc.named_params_and_buffers(dst):
        assert torch.equal(tensor, dst_before[name]), name
    with pytest.raises(ValueError, match='head.weight'):
        misc.copy_params_and_buffers(src, dst, require_all=True)


def test_copy_params_and_buffers_partial_match():
    src, dst = _Net(), _Net(extra=True)
    assert misc.copy_params_and_buffers(src, dst) == ['head.weight', 'head.bias']
    assert torch.equal(src.fc.weight, dst.fc.weight)


# ----------------------------------------------------------------------------
# ddp_sync(), check_ddp_consistency()


def test_ddp_sync_is_a_no_op_for_plain_modules():
    net = _Net()
    for sync in (False, True):
        with misc.ddp_sync(net, sync):
            net.fc(torch.ones(2, 3)).sum().backward()
    assert net.fc.weight.grad is not None


_DDP_WORKER = textwrap.dedent("""
    import os
    import torch
    from torch_utils import misc

    def run(rank, tmp_dir):
        init_method = 'file://' + os.path.join(tmp_dir, 'init')
        torch.distributed.init_process_group('gloo', init_method=init_method, rank=rank, world_size=2)
        net = torch.nn.Linear(2, 2)
        with torch.no_grad():
            net.weight.fill_(1.0)
            net.bias.fill_(float(rank))  # Differs across ranks.
        misc.check_ddp_consistency(net, ignore_regex=r'.*\\.bias')
        try:
            misc.check_ddp_consistency(net)
            result = 'no error'
        except AssertionError as err:
            result = str(err)
        with open(os.path.join(tmp_dir, f'rank{rank}.txt'), 'w') as f:
            f.write(result)
        torch.distributed.destroy_process_group()
""")


@pytest.mark.slow
def test_check_ddp_consistency_with_two_gloo_processes(tmp_path, spawn_workers):
    spawn_workers(_DDP_WORKER)
    results = [(tmp_path / f'rank{rank}.txt').read_text() for rank in range(2)]
    assert results[0] == 'no error'  # Rank 0 compares with itself.
    assert results[1] == 'DDP inconsistency in Linear.bias'


# ----------------------------------------------------------------------------
# print_module_summary(), suppress_tracer_warnings()


def test_print_module_summary_counts_parameters(capsys):
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    out = misc.print_module_summary(net, [torch.zeros(5, 3)])
    assert out.shape == (5, 2)
    text = capsys.readouterr().out
    assert 'Sequential' in text and '[5, 4]' in text and '[5, 2]' in text
    total = next(line for line in text.splitlines() if line.startswith('Total'))
    assert total.split()[1] == str(3 * 4 + 4 + 4 * 2 + 2)


def test_suppress_tracer_warnings():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        with misc.suppress_tracer_warnings():
            warnings.warn('x', torch.jit.TracerWarning, stacklevel=1)
        warnings.warn('y', UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ['y']
