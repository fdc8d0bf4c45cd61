"""Self-contained pickles: instances of a persistent class carry the source code of their defining module.

A snapshot therefore loads in a process that can import only `torch_utils` and `dnnlib`. The pickle layout
is upstream's (stylegan2-ada-pytorch, version 6): each persistent object reduces to
`torch_utils.persistence._reconstruct_persistent_obj(meta)` with
`meta = dict(type='class', version=6, module_src=..., class_name=..., state=...)`, so snapshots move both
ways between this code and the official one.
"""

import copy
import hashlib
import inspect
import io
import pickle
import sys
import types

import dnnlib

# ----------------------------------------------------------------------------
# Pickle format version and the module-level registries.

_version = 6  # Must stay 6: upstream asserts on it when loading.
_decorators = set()  # Every class produced by persistent_class().
_import_hooks = []  # Callables meta -> meta, run on load.
_module_to_src_dict = dict()  # module => its source code.
_src_to_module_dict = dict()  # source code => module (loaded or original).

# ----------------------------------------------------------------------------
# Class decorator that makes instances pickle together with their module source.


def persistent_class(orig_class: type) -> type:
    """Returns a subclass of `orig_class` whose instances pickle with the source of its module.

    Instances also record their constructor arguments as `init_args` and `init_kwargs`. The module
    must be importable source code (inspect.getsource works) and the arguments must be picklable.

    Example:
        >>> import torch
        >>> from torch_utils import persistence
        >>> @persistence.persistent_class
        ... class MyNetwork(torch.nn.Module):
        ...     def __init__(self, num_inputs, num_outputs): ...
    """
    assert isinstance(orig_class, type)
    if is_persistent(orig_class):
        return orig_class
    assert orig_class.__module__ in sys.modules, f'{orig_class.__module__} is not an imported module'
    orig_module = sys.modules[orig_class.__module__]
    orig_module_src = _module_to_src(orig_module)

    class Decorator(orig_class):
        _orig_module_src = orig_module_src
        _orig_class_name = orig_class.__name__

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._init_args = copy.deepcopy(args)
            self._init_kwargs = copy.deepcopy(kwargs)
            assert orig_class.__name__ in orig_module.__dict__, 'persistent classes must be defined at module level'
            _check_pickleable(self.__reduce__())

        @property
        def init_args(self) -> tuple:
            return copy.deepcopy(self._init_args)

        @property
        def init_kwargs(self) -> dnnlib.EasyDict:
            return dnnlib.EasyDict(copy.deepcopy(self._init_kwargs))

        def __reduce__(self):
            fields = list(super().__reduce__())
            fields += [None] * max(3 - len(fields), 0)
            if fields[0] is not _reconstruct_persistent_obj:
                meta = dict(
                    type='class',
                    version=_version,
                    module_src=self._orig_module_src,
                    class_name=self._orig_class_name,
                    state=fields[2],
                )
                fields[0] = _reconstruct_persistent_obj
                fields[1] = (meta,)
                fields[2] = None
            return tuple(fields)

    Decorator.__name__ = orig_class.__name__
    Decorator.__qualname__ = orig_class.__qualname__
    Decorator.__module__ = orig_class.__module__
    _decorators.add(Decorator)
    return Decorator


# ----------------------------------------------------------------------------
# Is this a persistent class, or an instance of one?


def is_persistent(obj) -> bool:
    """True for classes made by persistent_class() and for their instances."""
    try:
        if obj in _decorators:
            return True
    except TypeError:  # Unhashable objects.
        pass
    return type(obj) in _decorators


# ----------------------------------------------------------------------------
# Hooks that may rewrite the pickled metadata (e.g. patch old source code) before reconstruction.


def import_hook(hook) -> None:
    """Registers `hook(meta) -> meta`, called on every persistent object being unpickled.

    `meta` is an EasyDict with `type`, `version`, `module_src`, `class_name` and `state`; the hook
    returns it (modified or not), and must never return None.
    """
    assert callable(hook)
    _import_hooks.append(hook)


# ----------------------------------------------------------------------------
# Unpickling entry point named in every persistent pickle; the name must never change.


def _reconstruct_persistent_obj(meta: dict):
    meta = dnnlib.EasyDict(meta)
    meta.state = dnnlib.EasyDict(meta.state)
    for hook in _import_hooks:
        meta = hook(meta)
        assert meta is not None, 'import hooks must return the meta dict'

    assert meta.version == _version, f'unsupported persistence version {meta.version}'
    assert meta.type == 'class', f'unsupported persistent object type {meta.type}'
    module = _src_to_module(meta.module_src)
    orig_class = module.__dict__[meta.class_name]
    decorator_class = persistent_class(orig_class)
    obj = decorator_class.__new__(decorator_class)

    setstate = getattr(obj, '__setstate__', None)
    if callable(setstate):
        setstate(meta.state)
    else:
        obj.__dict__.update(meta.state)
    return obj


# ----------------------------------------------------------------------------
# Source code of a module, cached so that loaded modules (which have no file) keep their source.


def _module_to_src(module: types.ModuleType) -> str:
    src = _module_to_src_dict.get(module, None)
    if src is None:
        src = inspect.getsource(module)
        _module_to_src_dict[module] = src
        _src_to_module_dict[src] = module
    return src


# ----------------------------------------------------------------------------
# Module for a source string: the original one if this process defined it, else a fresh one built
# from the source under the name `_imported_module_<sha256 of source>`.


def _src_to_module(src: str) -> types.ModuleType:
    module = _src_to_module_dict.get(src, None)
    if module is None:
        module_name = '_imported_module_' + hashlib.sha256(src.encode('utf-8')).hexdigest()
        module = types.ModuleType(module_name)
        sys.modules[module_name] = module
        _module_to_src_dict[module] = src
        _src_to_module_dict[src] = module
        try:
            exec(src, module.__dict__)  # The whole point: rebuild the pickled module.
        except BaseException:  # Leave no half-built module behind for the next attempt.
            del sys.modules[module_name], _module_to_src_dict[module], _src_to_module_dict[src]
            raise
    return module


# ----------------------------------------------------------------------------
# Fails early (at construction) if an instance could not be pickled later. Tensors, arrays and
# nested persistent objects are assumed fine and skipped, so the check stays cheap.


_ASSUMED_PICKLEABLE = ('numpy.ndarray', 'torch.Tensor', 'torch.nn.parameter.Parameter', 'torch.nn.parameter.Buffer')


def _check_pickleable(obj) -> None:
    def strip(obj):
        if isinstance(obj, (list, tuple, set)):
            return [strip(x) for x in obj]
        if isinstance(obj, dict):
            return [[strip(k), strip(v)] for k, v in obj.items()]
        if isinstance(obj, (str, int, float, bool, bytes, bytearray)):
            return None
        if f'{type(obj).__module__}.{type(obj).__name__}' in _ASSUMED_PICKLEABLE:
            return None
        if is_persistent(obj):
            return None
        return obj

    with io.BytesIO() as f:
        pickle.dump(strip(obj), f)


# ----------------------------------------------------------------------------
