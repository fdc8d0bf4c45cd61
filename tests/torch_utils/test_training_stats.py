"""torch_utils.training_stats: moments, collectors, and the cross-rank all-reduce over a real gloo group."""

import math
import textwrap

import numpy as np
import pytest
import torch

from torch_utils import training_stats

# ----------------------------------------------------------------------------
# Single process. Names are unique per test because the counters are process-global.


def test_collector_mean_std_num_match_numpy():
    values = np.array([0.5, -1.0, 2.0, 4.0, 3.5])
    collector = training_stats.Collector(regex=r'T1/.*')
    training_stats.report('T1/a', torch.tensor(values[:3]))
    training_stats.report('T1/a', values[3:].tolist())
    training_stats.report('T1/b', 7.0)
    collector.update()
    assert collector.num('T1/a') == 5
    assert collector.mean('T1/a') == pytest.approx(values.mean())
    assert collector.std('T1/a') == pytest.approx(values.std())
    assert collector['T1/b'] == 7.0 and collector.std('T1/b') == 0.0
    assert collector.as_dict() == {
        'T1/a': dict(num=5, mean=pytest.approx(values.mean()), std=pytest.approx(values.std())),
        'T1/b': dict(num=1, mean=7.0, std=0.0),
    }


def test_collector_reads_only_values_since_previous_update():
    collector = training_stats.Collector(regex=r'T2/.*', keep_previous=True)
    fresh = training_stats.Collector(regex=r'T2/.*', keep_previous=False)
    training_stats.report('T2/x', [1.0, 3.0])
    collector.update()
    fresh.update()
    assert collector.mean('T2/x') == 2.0 and fresh.mean('T2/x') == 2.0
    training_stats.report('T2/x', [10.0])
    collector.update()
    fresh.update()
    assert collector.num('T2/x') == 1 and collector.mean('T2/x') == 10.0
    collector.update()
    fresh.update()
    assert collector.mean('T2/x') == 10.0  # keep_previous: last non-empty window.
    assert fresh.num('T2/x') == 0 and math.isnan(fresh.mean('T2/x')) and math.isnan(fresh.std('T2/x'))


def test_collector_regex_filters_names_and_report_returns_value():
    value = torch.ones(3, requires_grad=True)
    assert training_stats.report('T3/keep', value) is value
    training_stats.report('T3/drop/me', 1.0)
    assert training_stats.report0('T3/zero', 5) == 5
    collector = training_stats.Collector(regex=r'T3/[a-z]+')
    assert collector.names() == ['T3/keep', 'T3/zero']
    with pytest.raises(AssertionError):
        collector.mean('T3/drop/me')


def test_empty_report_registers_name_without_samples():
    training_stats.report('T4/empty', [])
    collector = training_stats.Collector(regex=r'T4/.*', keep_previous=False)
    assert collector.names() == ['T4/empty']
    collector.update()
    assert collector.num('T4/empty') == 0


# ----------------------------------------------------------------------------
# Two real processes in a gloo group: statistics are means over the values of both ranks.

_WORKER = textwrap.dedent("""
    import json, os
    import torch
    from torch_utils import training_stats

    def run(rank, tmp_dir):
        init_method = 'file://' + os.path.join(tmp_dir, 'init')
        torch.distributed.init_process_group('gloo', init_method=init_method, rank=rank, world_size=2)
        training_stats.init_multiprocessing(rank=rank, sync_device=torch.device('cpu'))
        collector = training_stats.Collector(regex='.*', keep_previous=False)
        readouts = []
        for step in range(2):
            # rank 0 reports [1, 2] + step, rank 1 reports [10, 20, 30] + step.
            values = torch.tensor([1.0, 2.0] if rank == 0 else [10.0, 20.0, 30.0]) + step
            if rank == 0:  # The ranks first report the names in different orders.
                training_stats.report('Loss/x', values)
            training_stats.report0('Progress/only_rank0', 100.0 + rank)
            if rank == 1:
                training_stats.report('Loss/x', values)
            collector.update()
            readouts.append(collector.as_dict())
        with open(os.path.join(tmp_dir, f'rank{rank}.json'), 'w') as f:
            json.dump(readouts, f)
        torch.distributed.destroy_process_group()
""")


@pytest.mark.slow
def test_stats_are_reduced_across_two_gloo_processes(tmp_path, spawn_workers):
    import json

    spawn_workers(_WORKER)

    readouts = [json.loads((tmp_path / f'rank{rank}.json').read_text()) for rank in range(2)]
    assert readouts[0] == readouts[1]  # Every rank sees the same global statistics.
    for step, stats in enumerate(readouts[0]):
        values = np.array([1.0, 2.0, 10.0, 20.0, 30.0]) + step
        assert stats['Loss/x']['num'] == 5
        assert stats['Loss/x']['mean'] == pytest.approx(values.mean())
        assert stats['Loss/x']['std'] == pytest.approx(values.std(), rel=1e-6)
        assert stats['Progress/only_rank0'] == dict(num=1, mean=100.0, std=0.0)
