"""load_snapshot(): the one snapshot reader; clear errors for truncated, foreign and incomplete pickles."""

import collections
import pickle

import pytest
import torch

import dnnlib
from training import checkpoint
from training.networks import Generator


def _G():
    return Generator(z_dim=4, c_dim=0, w_dim=4, img_resolution=8, img_channels=1,
                     synthesis_kwargs=dict(channel_base=32, channel_max=8))  # fmt: skip


def test_official_keys_are_filled(tmp_path):
    path = tmp_path / 'official.pkl'
    path.write_bytes(pickle.dumps(dict(G_ema=_G())))
    data = checkpoint.load_snapshot(str(path))
    assert isinstance(data['G_ema'], torch.nn.Module)
    assert data['resume_state'] is None and data['dataset_info'] is None and set(checkpoint.SNAPSHOT_KEYS) <= set(data)


@pytest.mark.parametrize(
    'content, message',
    [
        (b'', 'cannot load snapshot (EOFError'),
        (b'not a pickle', 'cannot load snapshot (UnpicklingError'),
        (pickle.dumps([1, 2]), 'not a network snapshot (holds a list)'),
        (pickle.dumps({'G_ema': 1}), "not a network snapshot (no network 'G_ema')"),
        (pickle.dumps(collections.OrderedDict, protocol=0).replace(b'collections', b'no_such_mod'), 'No module'),
    ],
)
def test_bad_pickles_raise_one_user_error(tmp_path, content, message):
    path = tmp_path / 'bad.pkl'
    path.write_bytes(content)
    with pytest.raises(dnnlib.UserError) as info:
        checkpoint.load_snapshot(str(path), param='--network')
    assert message in str(info.value) and info.value.param == '--network'


def test_truncated_snapshot(tmp_path):
    data = pickle.dumps(dict(G_ema=_G()))
    path = tmp_path / 'cut.pkl'
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(dnnlib.UserError, match='cannot load snapshot'):
        checkpoint.load_snapshot(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(dnnlib.UserError, match='cannot load snapshot'):
        checkpoint.load_snapshot(str(tmp_path / 'missing.pkl'))
