"""Run-time builds of the CUDA ops with ninja, cached on disk by a hash of their sources.

A build goes into a fresh temporary folder and is published by one atomic rename into a folder named after the hash
(sources, headers, build options, torch and CUDA versions, GPU arch). An edit therefore rebuilds, concurrent ranks
never share a half-written folder, and a killed build leaves no lock behind that could hang a later run.
"""

import glob
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import shutil
import tempfile
import time
import traceback
import warnings
from types import ModuleType

import torch

import dnnlib
from torch_utils import misc

# ----------------------------------------------------------------------------
# Module-level settings: 'none' (silent), 'brief' (one line per plugin) or 'full' (whole compiler output).

verbosity = 'brief'
_BUILD_INFO_FILE = 'build_info.json'  # Written last: its presence marks a complete build folder.
_STALE_TEMP_SECONDS = 24 * 3600  # Temp folders of builds killed this long ago are removed.
_cached_plugins: dict[str, ModuleType] = {}
_failed_plugins: dict[str, str] = {}

# ----------------------------------------------------------------------------
# Effective verbosity: SPINEGAN_OPS_VERBOSE=1 forces 'full'.


def _get_verbosity() -> str:
    if os.environ.get('SPINEGAN_OPS_VERBOSE', '') not in ('', '0'):
        return 'full'
    assert verbosity in ('none', 'brief', 'full')
    return verbosity


# ----------------------------------------------------------------------------
# Root of the build cache: $SPINEGAN_OPS_CACHE_DIR, else <dnnlib cache>/torch_extensions.


def get_cache_root() -> str:
    return os.environ.get('SPINEGAN_OPS_CACHE_DIR') or dnnlib.make_cache_dir_path('torch_extensions')


# ----------------------------------------------------------------------------
# What else besides the sources decides the binary: torch, CUDA, the GPU arch and the requested archs.


def _platform_signature() -> list[str]:
    arch = 'nocuda'
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        arch = f'sm_{major}{minor}'
    return [torch.__version__, str(torch.version.cuda), arch, os.environ.get('TORCH_CUDA_ARCH_LIST', '')]


# ----------------------------------------------------------------------------
# Hash of the file names and contents plus any extra strings; the build folder is named after it.


def compute_build_key(paths: list[str], extra: list[str] = ()) -> str:
    """Returns a hex digest that changes whenever a file's name or content, or an `extra` string, changes.

    Args:
        paths: Source and header files, in a fixed order.
        extra: Further strings that select the binary (build options, torch/CUDA version, GPU arch).
    """
    md5 = hashlib.md5()
    for path in paths:
        md5.update(os.path.basename(path).encode() + b'\0')
        with open(path, 'rb') as file:
            md5.update(file.read() + b'\0')
    for item in extra:
        md5.update(str(item).encode() + b'\0')
    return md5.hexdigest()


# ----------------------------------------------------------------------------
# Imports a compiled extension module from a complete build folder.


def _load_built_module(build_dir: str) -> ModuleType:
    with open(os.path.join(build_dir, _BUILD_INFO_FILE)) as file:
        info = json.load(file)
    path = os.path.join(build_dir, info['library'])
    loader = importlib.machinery.ExtensionFileLoader(info['module_name'], path)
    spec = importlib.util.spec_from_file_location(info['module_name'], path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _is_complete(build_dir: str) -> bool:
    try:
        with open(os.path.join(build_dir, _BUILD_INFO_FILE)) as file:
            return os.path.isfile(os.path.join(build_dir, json.load(file)['library']))
    except (OSError, ValueError, KeyError):
        return False


# ----------------------------------------------------------------------------
# Compiles into a fresh temp folder with torch.utils.cpp_extension.load, then marks the folder complete.


def _build_in_temp_dir(module_name: str, files: list[str], sources: list[str], temp_dir: str, **build_kwargs):
    for path in files:
        shutil.copyfile(path, os.path.join(temp_dir, os.path.basename(path)))
    temp_sources = [os.path.join(temp_dir, os.path.basename(path)) for path in sources]
    import torch.utils.cpp_extension  # Imported here: importing custom_ops must not need setuptools or ninja.

    module = torch.utils.cpp_extension.load(
        name=module_name,
        sources=temp_sources,
        build_directory=temp_dir,
        verbose=(_get_verbosity() == 'full'),
        **build_kwargs,
    )
    info = dict(module_name=module.__name__, library=os.path.basename(module.__file__))
    with open(os.path.join(temp_dir, _BUILD_INFO_FILE), 'w') as file:
        json.dump(info, file)
    return module


# ----------------------------------------------------------------------------
# Publishes a finished temp folder under its keyed name; a complete folder published first by another rank wins.


def _publish(temp_dir: str, build_dir: str) -> None:
    for _ in range(2):
        try:
            os.rename(temp_dir, build_dir)
            return
        except OSError:
            if _is_complete(build_dir):  # Another rank published first: keep theirs.
                break
            _move_aside(build_dir)  # Damaged, e.g. files deleted by hand: replace it.
    shutil.rmtree(temp_dir, ignore_errors=True)  # This process keeps using the module it loaded from temp_dir.


def _move_aside(build_dir: str) -> None:
    trash = tempfile.mkdtemp(prefix=os.path.basename(build_dir) + '.trash-', dir=os.path.dirname(build_dir))
    try:
        os.rename(build_dir, os.path.join(trash, 'old'))
    except OSError:
        pass  # Another rank moved it first.
    shutil.rmtree(trash, ignore_errors=True)


# ----------------------------------------------------------------------------
# Removes temp folders that builds killed long ago left behind; they never block anyone, they only take space.


def _remove_stale_temp_dirs(cache_root: str) -> None:
    now = time.time()
    for path in glob.glob(os.path.join(cache_root, '*.tmp-*')) + glob.glob(os.path.join(cache_root, '*.trash-*')):
        try:
            if now - os.path.getmtime(path) > _STALE_TEMP_SECONDS:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


# ----------------------------------------------------------------------------
# Builds (or loads from the cache) a CUDA extension; the run-time half of every CUDA op.


def get_plugin(
    module_name: str,  # Python name of the extension module, e.g. 'bias_act_plugin'.
    sources: list[str],  # .cpp/.cu file names, relative to source_dir.
    headers: list[str] = None,  # Header file names, relative to source_dir; part of the hash.
    source_dir: str = None,  # Folder of the files; None = the names are paths.
    **build_kwargs,  # Passed on to torch.utils.cpp_extension.load (extra_cflags, extra_cuda_cflags, ...).
) -> ModuleType:
    """Returns the compiled extension module, building it with ninja on first use.

    Raises:
        Exception: whatever the build raised (compiler errors, missing ninja/nvcc); no folder is left behind.
    """
    if module_name in _cached_plugins:
        return _cached_plugins[module_name]
    headers = headers or []
    if source_dir is not None:
        sources = [os.path.join(source_dir, name) for name in sources]
        headers = [os.path.join(source_dir, name) for name in headers]
    files = sorted(set(sources + headers), key=os.path.basename)
    key = compute_build_key(files, _platform_signature() + [repr(sorted(build_kwargs.items()))])
    cache_root = get_cache_root()
    build_dir = os.path.join(cache_root, f'{module_name}-{key}')
    brief = _get_verbosity() in ('brief', 'full')

    if _is_complete(build_dir):
        if brief:
            print(f'Loading cached PyTorch plugin "{module_name}" from {build_dir}')
        module = _load_built_module(build_dir)
    else:
        if brief:
            print(f'Building PyTorch plugin "{module_name}" (ninja; once per source change)... ', end='', flush=True)
        os.makedirs(cache_root, exist_ok=True)
        _remove_stale_temp_dirs(cache_root)
        temp_dir = tempfile.mkdtemp(prefix=f'{module_name}-{key}.tmp-', dir=cache_root)
        try:
            module = _build_in_temp_dir(module_name, files, sources, temp_dir, **build_kwargs)
            _publish(temp_dir, build_dir)
        except BaseException:
            shutil.rmtree(temp_dir, ignore_errors=True)
            if brief:
                print('Failed!')
            raise
        if brief:
            print('Done.')
    _cached_plugins[module_name] = module
    return module


# ----------------------------------------------------------------------------
# The warning that replaces a failed build: names the op, quotes the error's last lines, says how to see all of it.


def format_build_failure(op_name: str, error: BaseException, max_lines: int = 25) -> str:
    lines = ''.join(traceback.format_exception_only(type(error), error)).strip().splitlines()
    # Show from the first compiler error on (gcc 'f.cpp:1:2: error:', nvcc 'f.cu(1): error:'), else the tail.
    first_error = next((i for i, line in enumerate(lines) if i > 0 and 'error' in line.lower()), None)
    start = first_error if first_error is not None else max(len(lines) - max_lines, 0)
    shown = lines[start : start + max_lines] + (['...'] if len(lines) > start + max_lines else [])
    if start > 0:
        shown = [lines[0][:200], '...'] + shown
    if _get_verbosity() == 'full':
        hint = 'The full compiler output is printed above.'
    else:
        hint = 'Set SPINEGAN_OPS_VERBOSE=1 (or custom_ops.verbosity = "full") to see the full compiler output.'
    return (
        f'{op_name}: the CUDA plugin failed to build; falling back to the slower reference implementation. '
        f'{hint}\nBuild error:\n' + '\n'.join(shown)
    )


# ----------------------------------------------------------------------------
# get_plugin for an op: on failure warns once per plugin and returns None, so the op runs its reference path.


def get_plugin_or_none(op_name: str, module_name: str, **plugin_kwargs) -> ModuleType | None:
    """Like `get_plugin`, but a failed build gives one warning (per plugin and process) and `None`.

    Args:
        op_name: Name of the op for the warning, e.g. 'bias_act'.
        module_name: See `get_plugin`.
        **plugin_kwargs: The other arguments of `get_plugin`.
    """
    if module_name in _failed_plugins:
        return None
    try:
        return get_plugin(module_name, **plugin_kwargs)
    except Exception as error:  # Any build failure (compiler, ninja, CUDA_HOME, import) means: use the reference.
        _failed_plugins[module_name] = format_build_failure(op_name, error)
        warnings.warn(_failed_plugins[module_name], RuntimeWarning, stacklevel=3)
        return None


# ----------------------------------------------------------------------------


# ----------------------------------------------------------------------------
# Which implementation serves an op call: $SPINEGAN_OPS_IMPL=ref forces the reference everywhere, and
# CPU tensors and dtypes without a kernel (bfloat16) use it too, without attempting a build.

KERNEL_DTYPES = (torch.float16, torch.float32, torch.float64)


def use_cuda_kernel(x: torch.Tensor, impl: str, init_plugin) -> bool:
    """True if the call on `x` runs the fused kernel; `init_plugin()` builds it once and says whether it loaded."""
    if impl not in ('cuda', 'auto', 'ref'):
        raise ValueError(f"impl must be 'cuda', 'auto' or 'ref', got {impl!r}")
    if impl == 'ref' or os.environ.get('SPINEGAN_OPS_IMPL', '') == 'ref' or misc.functorch_transform_active():
        return False  # The kernels' autograd.Functions have no torch.func rules: DP-SGD runs the reference.
    return x.device.type == 'cuda' and x.dtype in KERNEL_DTYPES and init_plugin()
