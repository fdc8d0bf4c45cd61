"""dnnlib.util: EasyDict, objects by name, atomic writes, open_url offline behaviour."""

import doctest
import os
import subprocess
import sys

import pytest

import dnnlib
from dnnlib import util


def test_doctests():
    assert doctest.testmod(util).failed == 0


def test_easydict_attributes():
    d = dnnlib.EasyDict(a=1)
    d.b = 2
    assert d == {'a': 1, 'b': 2} and d.a == 1
    del d.a
    with pytest.raises(AttributeError):
        _ = d.a


def test_construct_class_by_name():
    d = util.construct_class_by_name(class_name='dnnlib.EasyDict', x=3)
    assert isinstance(d, dnnlib.EasyDict) and d.x == 3
    assert util.call_func_by_name(-4, func_name='builtins.abs') == 4
    with pytest.raises(ImportError):
        util.get_obj_by_name('no_such_module_xyz.f')


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    path = tmp_path / 'out.bin'
    path.write_bytes(b'old')
    with pytest.raises(RuntimeError), util.atomic_write(path) as f:
        f.write(b'partial')
        raise RuntimeError('boom')
    assert path.read_bytes() == b'old'
    assert os.listdir(tmp_path) == ['out.bin']


def test_open_url_local_and_file_url(tmp_path):
    path = tmp_path / 'x.txt'
    path.write_bytes(b'abc')
    with util.open_url(str(path)) as f:
        assert f.read() == b'abc'
    with util.open_url(path.as_uri()) as f:
        assert f.read() == b'abc'


def test_open_url_uses_cache_and_names_path_offline(tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path))
    url = 'http://127.0.0.1:9/missing/model.pkl'  # Port 9 (discard) refuses at once.
    with pytest.raises(OSError) as info:
        util.open_url(url, timeout=1)
    message = str(info.value)
    assert url in message and str(tmp_path) in message
    cache_path = message.split('put the file at ')[-1]
    os.makedirs(os.path.dirname(cache_path), exist_ok=True)
    with open(cache_path, 'wb') as f:
        f.write(b'cached')
    with util.open_url(url) as f:
        assert f.read() == b'cached'


def test_next_run_dir(tmp_path):
    (tmp_path / '00003-old').mkdir()
    assert util.next_run_dir(str(tmp_path), 'new') == str(tmp_path / '00004-new')


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    stale = tmp_path / f'.network-snapshot-000004.pkl.pid{dead.pid}.x1y2.tmp'
    live = tmp_path / f'.network-snapshot-000008.pkl.pid{os.getpid()}.x1y2.tmp'
    other = tmp_path / '.notes.tmp'
    for path in (stale, live, other):
        path.write_bytes(b'half a snapshot')
    assert dnnlib.util.remove_stale_temp_files(str(tmp_path)) == [stale.name]
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, other.name])


def test_atomic_write_temp_name_carries_the_writer_pid(tmp_path):
    with dnnlib.util.atomic_write(str(tmp_path / 'a.bin')) as f:
        (name,) = [n for n in os.listdir(tmp_path) if n.endswith('.tmp')]
        f.write(b'x')
    assert name.startswith(f'.a.bin.pid{os.getpid()}.')
