"""custom_ops: build key, cache folder publication (temp folder + rename), and the one-time fallback warning; no GPU
needed (the compiler is faked, except in one real g++ failure)."""

import os
import shutil
import subprocess
import sys
import time
import types
import warnings

import pytest
import torch
import torch.utils.cpp_extension

from torch_utils import custom_ops
from torch_utils.ops import bias_act as bias_act_module

# ----------------------------------------------------------------------------
# Fresh plugin caches and an empty build cache folder for every test.


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    root = tmp_path / 'cache'
    monkeypatch.setenv('SPINEGAN_OPS_CACHE_DIR', str(root))
    monkeypatch.delenv('SPINEGAN_OPS_VERBOSE', raising=False)
    monkeypatch.setattr(custom_ops, '_cached_plugins', {})
    monkeypatch.setattr(custom_ops, '_failed_plugins', {})
    monkeypatch.setattr(custom_ops, 'verbosity', 'none')
    return root


@pytest.fixture
def sources(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    (src / 'op.cpp').write_text('int op() { return 1; }\n')
    (src / 'op.h').write_text('#pragma once\n')
    return src


def _fake_load(calls):
    def load(name, sources, build_directory, verbose, **kwargs):
        calls.append(build_directory)
        library = os.path.join(build_directory, name + '.so')
        with open(library, 'wb') as file:
            file.write(b'not really a library')
        return types.SimpleNamespace(__name__=name, __file__=library)

    return load


def _raising_load(message):
    def load(*args, **kwargs):
        raise RuntimeError(message)

    return load


# ----------------------------------------------------------------------------
# Build key: any change to a file's content, or to the extra strings, gives a new key; nothing else does.


def test_build_key_tracks_contents(sources):
    files = [str(sources / 'op.cpp'), str(sources / 'op.h')]
    key = custom_ops.compute_build_key(files, ['torch', 'sm_90'])
    assert key == custom_ops.compute_build_key(files, ['torch', 'sm_90'])
    assert key != custom_ops.compute_build_key(files, ['torch', 'sm_80'])
    (sources / 'op.h').write_text('#pragma once\n// edited\n')
    assert key != custom_ops.compute_build_key(files, ['torch', 'sm_90'])


# ----------------------------------------------------------------------------
# Success: the build lands in its keyed folder via a temp folder, and a later process just loads it.


def test_build_is_published_atomically_and_reused(cache_root, sources, monkeypatch):
    calls = []
    monkeypatch.setattr(torch.utils.cpp_extension, 'load', _fake_load(calls))
    kwargs = dict(sources=['op.cpp'], headers=['op.h'], source_dir=str(sources))
    module = custom_ops.get_plugin('op_plugin', **kwargs)
    assert module.__name__ == 'op_plugin' and len(calls) == 1
    assert '.tmp-' in os.path.basename(calls[0])  # Built in a temp folder...
    (build_dir,) = os.listdir(cache_root)  # ...then renamed: exactly one folder, the keyed one.
    assert build_dir.startswith('op_plugin-') and '.tmp-' not in build_dir
    assert sorted(os.listdir(cache_root / build_dir)) == ['build_info.json', 'op.cpp', 'op.h', 'op_plugin.so']
    assert custom_ops.get_plugin('op_plugin', **kwargs) is module  # Same process: cached.

    monkeypatch.setattr(custom_ops, '_cached_plugins', {})  # A new process: loads without compiling.
    monkeypatch.setattr(torch.utils.cpp_extension, 'load', _raising_load('must not rebuild'))
    monkeypatch.setattr(custom_ops, '_load_built_module', lambda path: ('loaded', os.path.basename(path)))
    assert custom_ops.get_plugin('op_plugin', **kwargs) == ('loaded', build_dir)


def test_source_edit_rebuilds_into_new_folder(cache_root, sources, monkeypatch):
    calls = []
    monkeypatch.setattr(torch.utils.cpp_extension, 'load', _fake_load(calls))
    custom_ops.get_plugin('op_plugin', sources=['op.cpp'], source_dir=str(sources))
    (sources / 'op.cpp').write_text('int op() { return 2; }\n')
    monkeypatch.setattr(custom_ops, '_cached_plugins', {})
    custom_ops.get_plugin('op_plugin', sources=['op.cpp'], source_dir=str(sources))
    assert len(calls) == 2 and len(os.listdir(cache_root)) == 2


def test_damaged_folder_is_replaced(cache_root, sources, monkeypatch):
    calls = []
    monkeypatch.setattr(torch.utils.cpp_extension, 'load', _fake_load(calls))
    custom_ops.get_plugin('op_plugin', sources=['op.cpp'], source_dir=str(sources))
    (build_dir,) = os.listdir(cache_root)
    os.remove(cache_root / build_dir / 'op_plugin.so')
    monkeypatch.setattr(custom_ops, '_cached_plugins', {})
    custom_ops.get_plugin('op_plugin', sources=['op.cpp'], source_dir=str(sources))
    assert len(calls) == 2 and os.listdir(cache_root) == [build_dir]
    assert os.path.isfile(cache_root / build_dir / 'op_plugin.so')


def test_rank_that_loses_the_race_keeps_the_winner(cache_root, sources, monkeypatch):
    calls = []
    fake = _fake_load(calls)

    def load_while_another_rank_publishes(**kwargs):
        module = fake(**kwargs)
        winner = kwargs['build_directory'].split('.tmp-')[0]
        shutil.copytree(kwargs['build_directory'], winner)  # Another rank renames its folder in first.
        with open(os.path.join(winner, 'build_info.json'), 'w') as file:
            file.write('{"module_name": "op_plugin", "library": "op_plugin.so"}')
        return module

    monkeypatch.setattr(torch.utils.cpp_extension, 'load', load_while_another_rank_publishes)
    assert custom_ops.get_plugin('op_plugin', sources=['op.cpp'], source_dir=str(sources)).__name__ == 'op_plugin'
    assert len(os.listdir(cache_root)) == 1  # Our temp folder is gone, the winner's folder stays.


def test_stale_temp_folders_are_removed(cache_root, sources, monkeypatch):
    monkeypatch.setattr(torch.utils.cpp_extension, 'load', _fake_load([]))
    old, recent = cache_root / 'x-1.tmp-old', cache_root / 'x-2.tmp-recent'
    for path in (old, recent):
        path.mkdir(parents=True)
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    custom_ops.get_plugin('op_plugin', sources=['op.cpp'], source_dir=str(sources))
    assert not old.exists() and recent.exists()


# ----------------------------------------------------------------------------
# Failure: no folder is left behind, and the op gets one warning naming it and quoting the compiler.


def test_failed_build_leaves_no_folder(cache_root, sources, monkeypatch):
    monkeypatch.setattr(torch.utils.cpp_extension, 'load', _raising_load('op.cpp:1:5: error: boom'))
    with pytest.raises(RuntimeError, match='boom'):
        custom_ops.get_plugin('op_plugin', sources=['op.cpp'], source_dir=str(sources))
    assert os.listdir(cache_root) == []


def test_fallback_warns_once_with_compiler_error(cache_root, sources, monkeypatch):
    noise = '\n'.join(f'[{i}/9] c++ -MMD -c op.cpp' for i in range(40))
    message = f"Error building extension 'op_plugin': {noise}\nop.cpp:3:7: error: expected ';' before '}}' token\n"
    monkeypatch.setattr(torch.utils.cpp_extension, 'load', _raising_load(message))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        for _ in range(3):
            assert (
                custom_ops.get_plugin_or_none('my_op', 'op_plugin', sources=['op.cpp'], source_dir=str(sources)) is None
            )
    assert len(caught) == 1
    text = str(caught[0].message)
    assert 'my_op' in text and "error: expected ';'" in text and 'SPINEGAN_OPS_VERBOSE=1' in text
    assert os.listdir(cache_root) == []


def test_op_falls_back_with_one_warning(cache_root, monkeypatch):
    monkeypatch.setattr(torch.utils.cpp_extension, 'load', _raising_load('nvcc fatal: Unsupported gpu architecture'))
    monkeypatch.setattr(bias_act_module, '_plugin', None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert not bias_act_module._init()
        assert not bias_act_module._init()
    assert len(caught) == 1
    assert 'bias_act' in str(caught[0].message) and 'Unsupported gpu architecture' in str(caught[0].message)


@pytest.mark.skipif(shutil.which('ninja') is None or shutil.which('c++') is None, reason='needs ninja and c++')
def test_real_compiler_error_reaches_the_warning(cache_root, tmp_path):
    src = tmp_path / 'broken'
    src.mkdir()
    (src / 'broken.cpp').write_text('this is not C++ at all\n')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert (
            custom_ops.get_plugin_or_none('broken_op', 'broken_plugin', sources=['broken.cpp'], source_dir=str(src))
            is None
        )
    assert len(caught) == 1
    text = str(caught[0].message)
    assert 'broken_op' in text and 'broken.cpp' in text and 'error' in text
    assert os.listdir(cache_root) == []


@pytest.mark.slow
@pytest.mark.skipif(shutil.which('ninja') is None or shutil.which('c++') is None, reason='needs ninja and c++')
def test_real_build_is_loaded_from_cache_by_a_new_process(cache_root, tmp_path):
    src = tmp_path / 'real'
    src.mkdir()
    (src / 'real.cpp').write_text(
        '#include <pybind11/pybind11.h>\n'
        'static int answer() { return 42; }\n'
        'PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("answer", &answer); }\n'
    )
    assert custom_ops.get_plugin('real_plugin', sources=['real.cpp'], source_dir=str(src)).answer() == 42
    script = (
        'from torch_utils import custom_ops; custom_ops.verbosity = "brief"; '
        f'print(custom_ops.get_plugin("real_plugin", sources=["real.cpp"], source_dir={str(src)!r}).answer())'
    )
    repo = os.path.dirname(os.path.dirname(os.path.abspath(custom_ops.__file__)))
    env = dict(os.environ, PYTHONPATH=repo, SPINEGAN_OPS_CACHE_DIR=str(cache_root))
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, env=env, check=True)
    assert 'Loading cached PyTorch plugin "real_plugin"' in result.stdout and result.stdout.strip().endswith('42')


# ----------------------------------------------------------------------------
# Verbosity: the environment variable wins over the module setting.


def test_verbose_env_forces_full(monkeypatch):
    monkeypatch.setattr(custom_ops, 'verbosity', 'none')
    monkeypatch.setenv('SPINEGAN_OPS_VERBOSE', '1')
    assert custom_ops._get_verbosity() == 'full'
    monkeypatch.setenv('SPINEGAN_OPS_VERBOSE', '0')
    assert custom_ops._get_verbosity() == 'none'


# ----------------------------------------------------------------------------
