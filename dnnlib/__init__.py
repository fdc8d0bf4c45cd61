"""Plain utilities shared by every layer: EasyDict, construction by name, URL cache."""

from .util import EasyDict, UserError, make_cache_dir_path  # noqa: F401
