"""torch_utils.persistence: pickles that carry their source load where the defining module does not exist."""

import copy
import io
import os
import pickle
import pickletools
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import torch

from torch_utils import persistence

REPO = Path(__file__).resolve().parents[2]

_MODULE_SRC = textwrap.dedent("""
    import torch
    from torch_utils import persistence

    @persistence.persistent_class
    class Block(torch.nn.Module):
        def __init__(self, width, scale=1.0):
            super().__init__()
            self.fc = torch.nn.Linear(width, width)
            self.scale = scale

        def forward(self, x):
            return torch.tanh(self.fc(x)) * self.scale

    @persistence.persistent_class
    class Net(torch.nn.Module):
        def __init__(self, width, depth, scale=1.0):
            super().__init__()
            self.blocks = torch.nn.ModuleList([Block(width, scale=scale) for _ in range(depth)])
            self.register_buffer('offset', torch.arange(width, dtype=torch.float32))

        def forward(self, x):
            for block in self.blocks:
                x = block(x)
            return x + self.offset
""")

# ----------------------------------------------------------------------------
# A fresh module file per test, importable from tmp_path only while the test runs.


@pytest.fixture
def net_module(tmp_path):
    name = f'persistent_net_{uuid.uuid4().hex[:8]}'
    mod_dir = tmp_path / 'mods'
    mod_dir.mkdir()
    (mod_dir / f'{name}.py').write_text(_MODULE_SRC)
    sys.path.insert(0, str(mod_dir))
    try:
        yield __import__(name)
    finally:
        sys.path.remove(str(mod_dir))
        sys.modules.pop(name, None)


# ----------------------------------------------------------------------------
# Decorator basics.


def test_init_args_and_is_persistent(net_module):
    net = net_module.Net(4, depth=2, scale=0.5)
    assert persistence.is_persistent(net) and persistence.is_persistent(net_module.Net)
    assert not persistence.is_persistent(torch.nn.Linear(1, 1)) and not persistence.is_persistent([1])
    assert net.init_args == (4,) and net.init_kwargs == dict(depth=2, scale=0.5)
    assert net.init_kwargs.depth == 2
    assert type(net).__name__ == 'Net' and isinstance(net, torch.nn.Module)
    assert persistence.persistent_class(net_module.Net) is net_module.Net


def test_unpicklable_constructor_argument_fails_early(net_module):
    with pytest.raises(Exception):  # noqa: B017 -- pickle raises different types per object.
        net_module.Block(2, scale=lambda: 1.0)


def test_pickle_layout_matches_upstream(net_module):
    data = pickle.dumps(net_module.Net(3, depth=1))
    ops = list(pickletools.genops(data))
    globals_used = [arg for op, arg, _ in ops if op.name == 'STACK_GLOBAL' or op.name == 'GLOBAL']
    strings = [arg for op, arg, _ in ops if op.name in ('SHORT_BINUNICODE', 'BINUNICODE')]
    assert 'torch_utils.persistence' in strings and '_reconstruct_persistent_obj' in strings
    assert not any(net_module.__name__ in str(s) for s in strings + globals_used)

    seen = []
    persistence.import_hook(lambda meta: seen.append(dict(meta)) or meta)
    try:
        pickle.loads(data)
    finally:
        persistence._import_hooks.pop()
    assert [meta['class_name'] for meta in seen] == ['Block', 'Net']  # Inner objects load first.
    assert all(list(meta) == ['type', 'version', 'module_src', 'class_name', 'state'] for meta in seen)
    assert all(meta['type'] == 'class' and meta['version'] == 6 for meta in seen)
    assert seen[0]['module_src'] == _MODULE_SRC


# ----------------------------------------------------------------------------
# Acceptance: a fresh interpreter without the defining module reproduces the outputs.

_LOADER = textwrap.dedent("""
    import pickle, sys
    import torch
    from torch_utils import persistence
    work = sys.argv[1]
    try:
        import {module_name}
        raise SystemExit('defining module unexpectedly importable')
    except ImportError:
        pass
    with open(work + '/net.pkl', 'rb') as f:
        net = pickle.load(f)
    x, expected = torch.load(work + '/io.pt')
    assert torch.equal(net(x), expected), 'outputs differ'
    assert type(net).__module__.startswith('_imported_module_'), type(net).__module__
    assert persistence.is_persistent(net) and persistence.is_persistent(net.blocks[1])
    assert net.init_kwargs == dict(depth=2, scale=0.5)
    again = pickle.loads(pickle.dumps(net))  # Loaded objects pickle again from the cached source.
    assert torch.equal(again(x), expected) and type(again) is type(net)
    with open(work + '/net2.pkl', 'wb') as f:
        pickle.dump(net, f)
    print('loaded ok')
""")


def test_loads_in_fresh_process_without_defining_module(net_module, tmp_path):
    torch.manual_seed(0)
    net = net_module.Net(4, depth=2, scale=0.5)
    x = torch.randn(3, 4)
    with open(tmp_path / 'net.pkl', 'wb') as f:
        pickle.dump(net, f)
    torch.save((x, net(x).detach()), tmp_path / 'io.pt')

    env = dict(os.environ, PYTHONPATH=str(REPO))
    script = _LOADER.format(module_name=net_module.__name__)
    result = subprocess.run(
        [sys.executable, '-c', script, str(tmp_path)],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'loaded ok'

    # ...and what the fresh process wrote back loads here, into the original class.
    with open(tmp_path / 'net2.pkl', 'rb') as f:
        back = pickle.load(f)
    assert type(back) is net_module.Net
    assert torch.equal(back(x), net(x))


# ----------------------------------------------------------------------------
# Hooks, nesting, deepcopy, foreign pickles.


def test_import_hook_can_patch_source(net_module):
    data = pickle.dumps(net_module.Net(2, depth=1))

    def patch(meta):
        meta.module_src = meta.module_src.replace('return x + self.offset', 'return x + self.offset + 100')
        return meta

    persistence.import_hook(patch)
    try:
        patched = pickle.loads(data)
    finally:
        persistence._import_hooks.remove(patch)
    original = pickle.loads(data)
    x = torch.randn(5, 2)
    assert type(patched).__module__.startswith('_imported_module_')
    assert torch.allclose(patched(x), original(x) + 100)


def test_nested_objects_and_deepcopy(net_module):
    net = net_module.Net(3, depth=3, scale=2.0)
    clone = copy.deepcopy(net)
    assert type(clone) is type(net) and type(clone.blocks[0]) is net_module.Block
    assert clone.blocks[0].fc.weight is not net.blocks[0].fc.weight
    x = torch.randn(2, 3)
    assert torch.equal(clone(x), net(x))
    with torch.no_grad():
        clone.blocks[0].fc.weight.add_(1)
    assert not torch.equal(clone(x), net(x))

    loaded = pickle.loads(pickle.dumps(dict(G=net, extra=[net.blocks[1]])))
    assert torch.equal(loaded['G'](x), net(x))
    assert loaded['extra'][0] is loaded['G'].blocks[1]  # Shared references survive.


class _ForeignWriter:
    """Pickles like a snapshot written by another implementation of the same layout would."""

    def __init__(self, meta):
        self.meta = meta

    def __reduce__(self):
        return persistence._reconstruct_persistent_obj, (self.meta,)


def test_loads_foreign_pickle_with_upstream_layout():
    src = textwrap.dedent("""
        from torch_utils import persistence

        @persistence.persistent_class
        class Scaler:
            def __init__(self, k):
                self.k = k

            def __call__(self, v):
                return v * self.k
    """)
    meta = dict(type='class', version=6, module_src=src, class_name='Scaler', state=dict(k=3))
    obj = pickle.loads(pickle.dumps(_ForeignWriter(meta)))
    assert obj(2) == 6 and persistence.is_persistent(obj)
    assert type(obj).__module__ == type(pickle.loads(pickle.dumps(_ForeignWriter(meta)))).__module__

    with pytest.raises(AssertionError, match='version'):
        pickle.loads(pickle.dumps(_ForeignWriter(dict(meta, version=5))))
    buf = io.BytesIO()
    pickle.dump(obj, buf)
    assert pickle.loads(buf.getvalue())(5) == 15


def test_broken_source_raises_and_leaves_no_module_behind():
    src = 'raise RuntimeError("broken on purpose")\n'
    meta = dict(type='class', version=6, module_src=src, class_name='Nothing', state=dict())
    before = set(sys.modules)
    for _ in range(2):  # The second attempt runs the source again instead of finding a half-built module.
        with pytest.raises(RuntimeError, match='broken on purpose'):
            pickle.loads(pickle.dumps(_ForeignWriter(meta)))
    assert set(sys.modules) == before
