"""Miscellaneous utilities: dict with attribute access, objects by name, run dirs, cached URL access."""

import contextlib
import hashlib
import importlib
import io
import os
import re
import tempfile
import types
import urllib.parse
import urllib.request
from typing import Any

# ----------------------------------------------------------------------------
# Dict whose keys are also attributes; the config type of the whole code base.


class EasyDict(dict):
    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        del self[name]


# ----------------------------------------------------------------------------
# A problem with the user's input (flag, file, data), raised by any layer below the CLIs. The CLIs turn it
# into a one-line usage error (exit 2) naming `param`, e.g. '--data' or '--resume'.


class UserError(ValueError):
    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


# ----------------------------------------------------------------------------
# Human-readable durations, as in the progress lines of the training loop.


def format_time(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f'{s}s'
    if s < 60 * 60:
        return f'{s // 60}m {s % 60:02d}s'
    if s < 24 * 60 * 60:
        return f'{s // 3600}h {(s // 60) % 60:02d}m {s % 60:02d}s'
    return f'{s // 86400}d {(s // 3600) % 24:02d}h {(s // 60) % 60:02d}m'


# ----------------------------------------------------------------------------
# Atomic file writes: readers never see a half-written snapshot or dataset.


@contextlib.contextmanager
def atomic_write(path: str, mode: str = 'wb'):
    """Open a temp file next to `path`; on success rename it over `path`, on error delete it.

    Example:
        >>> import os, tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), 'a.txt')
        >>> with atomic_write(p, 'w') as f:
        ...     _ = f.write('hi')
        >>> open(p).read()
        'hi'
    """
    path = os.fspath(path)
    dirname = os.path.dirname(os.path.abspath(path))
    os.makedirs(dirname, exist_ok=True)
    prefix = f'.{os.path.basename(path)}.pid{os.getpid()}.'  # The writer's pid: see remove_stale_temp_files.
    fd, tmp = tempfile.mkstemp(dir=dirname, prefix=prefix, suffix='.tmp')
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions.
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def remove_stale_temp_files(folder: str) -> list[str]:
    """Delete atomic_write's temp files in `folder` whose writer process is gone (a killed run); returns them."""
    removed = []
    for name in _listdir(folder):
        match = re.fullmatch(r'\..+\.pid(\d+)\.\w+\.tmp', name)
        if match and not _process_exists(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, name))
                removed.append(name)
    return removed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ----------------------------------------------------------------------------
# Objects by dotted name, so that configs can stay plain dicts.


def get_module_from_obj_name(obj_name: str) -> tuple[types.ModuleType, str]:
    """Split 'pkg.module.attr.sub' into the longest importable module and the remaining attribute path."""
    parts = obj_name.split('.')
    for i in range(len(parts), 0, -1):
        module_name = '.'.join(parts[:i])
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name is not None and not module_name.startswith(err.name):
                raise  # The module exists but one of its own imports is missing.
            continue
        local = '.'.join(parts[i:])
        get_obj_from_module(module, local)  # Fail here if the attribute is missing.
        return module, local
    raise ImportError(f'Cannot import {obj_name!r}')


def get_obj_from_module(module: types.ModuleType, obj_name: str) -> Any:
    obj = module
    for part in filter(None, obj_name.split('.')):
        obj = getattr(obj, part)
    return obj


def get_obj_by_name(name: str) -> Any:
    module, local = get_module_from_obj_name(name)
    return get_obj_from_module(module, local)


def call_func_by_name(*args, func_name: str = None, **kwargs) -> Any:
    assert func_name is not None
    func = get_obj_by_name(func_name)
    if not callable(func):
        raise TypeError(f'{func_name} is not callable')
    return func(*args, **kwargs)


def construct_class_by_name(*args, class_name: str = None, **kwargs) -> Any:
    return call_func_by_name(*args, func_name=class_name, **kwargs)


def get_top_level_function_name(obj: Any) -> str:
    module = obj.__module__
    if module == '__main__':
        module = os.path.splitext(os.path.basename(importlib.import_module(module).__file__))[0]
    return module + '.' + obj.__name__


# ----------------------------------------------------------------------------
# Run directories: outdir/00000-desc, numbered after the highest existing id.


def next_run_dir(outdir: str, desc: str) -> str:
    ids = [int(m.group(1)) for m in (re.match(r'^(\d+)-', name) for name in _listdir(outdir)) if m]
    return os.path.join(outdir, f'{max(ids, default=-1) + 1:05d}-{desc}')


def _listdir(path: str) -> list[str]:
    return os.listdir(path) if os.path.isdir(path) else []


# ----------------------------------------------------------------------------
# Cache directory for downloads: $DNNLIB_CACHE_DIR, else ~/.cache/dnnlib.


def make_cache_dir_path(*paths: str) -> str:
    root = os.environ.get('DNNLIB_CACHE_DIR') or os.path.join(os.path.expanduser('~'), '.cache', 'dnnlib')
    return os.path.join(root, *paths)


def is_url(obj: Any, allow_file_urls: bool = False) -> bool:
    if not isinstance(obj, str) or '://' not in obj:
        return False
    scheme = urllib.parse.urlparse(obj).scheme
    return scheme in ('http', 'https') or (allow_file_urls and scheme == 'file')


# ----------------------------------------------------------------------------
# Open a local path, file:// URL or http(s) URL (cached). Offline, fail at once and say what to do.


def open_url(url: str, cache_dir: str = None, cache: bool = True, verbose: bool = True, timeout: float = 10):
    """Return a binary file object for `url`.

    Raises:
        IOError: the URL cannot be fetched; the message names the URL and the local path that would satisfy it.
    """
    if not is_url(url, allow_file_urls=True):
        return open(url, 'rb')
    if url.startswith('file://'):
        return open(urllib.request.url2pathname(urllib.parse.urlparse(url).path), 'rb')
    cache_dir = cache_dir or make_cache_dir_path('downloads')
    cache_path = os.path.join(cache_dir, hashlib.md5(url.encode('utf-8')).hexdigest() + '_' + _url_basename(url))
    if cache and os.path.isfile(cache_path):
        return open(cache_path, 'rb')
    if verbose:
        print(f'Downloading {url} ...', flush=True)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except OSError as err:
        raise OSError(f'Could not fetch {url} ({err}); if you are offline, put the file at {cache_path}') from None
    if not cache:
        return io.BytesIO(data)
    with atomic_write(cache_path) as f:
        f.write(data)
    return open(cache_path, 'rb')


def _url_basename(url: str) -> str:
    name = os.path.basename(urllib.parse.urlparse(url).path) or 'download'
    return re.sub(r'[^0-9A-Za-z._-]', '_', name)
