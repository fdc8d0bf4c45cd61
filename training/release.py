"""Release files: a generator to share, as one safetensors file that loads without pickle.

A release holds G_ema's parameters and buffers, and in its metadata a JSON config: the Generator's constructor
kwargs, the label schema and class names, the DP record (if any) and a format version. Loading rebuilds
`training.networks.Generator` from this code and loads the tensors strictly; nothing in the file runs as code.
No discriminator, optimizer state or dataset path goes in.
"""

import json
import os

import numpy as np
import safetensors
import safetensors.torch
import torch

import dnnlib
from training import networks
from training.dataset import read_dataset_metadata

FORMAT = 'spinegan-release'
FORMAT_VERSION = 1
GENERATOR_CLASS = 'training.networks.Generator'

# ----------------------------------------------------------------------------
# Is `path` a release (a .safetensors name, or a local file that starts like one) rather than a pickle?


def is_release(path: str) -> bool:
    """True for a '.safetensors' name or a local file that starts like one: a u64 header length (safetensors caps it
    at 100 MB), then '{'. A pickle (protocol 2+) has part of a frame length there, never '{'.
    """
    if str(path).lower().endswith('.safetensors'):
        return True
    try:
        with open(path, 'rb') as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b'{' and int.from_bytes(head[:8], 'little') < 100_000_000


# ----------------------------------------------------------------------------
# What a release says about the data, taken from a snapshot dict (training.checkpoint.load_snapshot).


def snapshot_info(data: dict) -> dict:
    """class_names and label_schema (stored with the snapshot, else from the training set's dataset.json) and dp.

    dp is the snapshot's DP-SGD release record (its `privacy` key: epsilon, delta, sigma, ...); None without DP.
    """
    labels = data.get('dataset_info') or {}
    if labels.get('class_names') is None:
        labels = _training_set_metadata(data)
    dp = data.get('privacy')
    class_names = labels.get('class_names')
    return dict(
        class_names=list(class_names) if class_names is not None else None,
        label_schema=labels.get('label_schema'),
        dp=dp,
    )


def _training_set_metadata(data):
    path = (data.get('training_set_kwargs') or {}).get('path')
    try:
        return read_dataset_metadata(path) if path else {}
    except (OSError, ValueError):
        return {}


# ----------------------------------------------------------------------------
# Save: G's tensors plus the config, written atomically. The config is checked by rebuilding G from it first.


def save_release(G: torch.nn.Module, info: dict, path: str, param: str | None = '--network') -> dict:
    """Write `G` and `info` (class_names, label_schema, dp: see snapshot_info) to `path`; return the config.

    Raises:
        dnnlib.UserError: G is not a Generator this code can rebuild, or `info` cannot be written as JSON.
    """
    state = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in G.state_dict().items()}
    config = dict(
        format=FORMAT, format_version=FORMAT_VERSION,
        generator=dict(class_name=GENERATOR_CLASS, kwargs=_generator_kwargs(G, param)),
        c_dim=G.c_dim, z_dim=G.z_dim, img_resolution=G.img_resolution, img_channels=G.img_channels,
        **{key: plain(info.get(key), key, param) for key in ('class_names', 'label_schema', 'dp')},
    )  # fmt: skip
    build_generator(config['generator']['kwargs'], state, what='G_ema', param=param)
    metadata = dict(format=FORMAT, format_version=str(FORMAT_VERSION), config=json.dumps(config))
    with dnnlib.util.atomic_write(path, 'wb') as f:
        f.write(safetensors.torch.save(state, metadata=metadata))
    return config


def _generator_kwargs(G, param):
    if type(G).__name__ != 'Generator' or not hasattr(G, 'init_kwargs'):
        raise dnnlib.UserError(f'G_ema is a {type(G).__name__}, not a persistent Generator', param=param)
    if G.init_args:
        raise dnnlib.UserError('G_ema was built with positional arguments; a release needs keywords', param=param)
    return plain(G.init_kwargs, 'G_ema.init_kwargs', param)


def plain(value, what: str, param: str | None = None):
    """`value` as JSON types (EasyDicts -> dicts, tuples -> lists, numpy/torch scalars -> numbers).

    Raises:
        dnnlib.UserError: something JSON cannot hold, e.g. a tensor with more than one element.
    """
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {key: plain(item, f'{what}.{key}', param) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item, f'{what}[{i}]', param) for i, item in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.generic, np.ndarray, torch.Tensor)) and value.ndim == 0:
        return value.item()
    raise dnnlib.UserError(f'{what} is a {type(value).__name__}, which a release cannot store', param=param)


# ----------------------------------------------------------------------------
# Load: json + safetensors only, then Generator(**kwargs) from this code with the tensors loaded strictly.


def load_release(path: str, device: torch.device | str = 'cpu', param: str | None = '--network'):
    """(G, config): the generator in eval mode on `device`, and the release's config as an EasyDict.

    Raises:
        dnnlib.UserError: missing or corrupt file, not a SpineGAN release, newer format, or tensors that do not
            fit the Generator the config describes.
    """
    try:
        with safetensors.safe_open(os.fspath(path), framework='pt', device='cpu') as f:
            metadata = f.metadata() or {}
            state = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as err:  # safetensors raises its own error type, OSError, or others for a mangled header.
        raise dnnlib.UserError(f'{path}: cannot read release ({one_line(err)})', param=param) from None
    config = _parse_config(metadata, path, param)
    G = build_generator(config.generator.kwargs, state, what=str(path), param=param)
    return G.eval().requires_grad_(False).to(device), config


def _parse_config(metadata, path, param):
    if metadata.get('format') != FORMAT:
        raise dnnlib.UserError(f'{path}: not a SpineGAN release (no "format": "{FORMAT}")', param=param)
    try:
        config = dnnlib.EasyDict(json.loads(metadata['config']))
        version = int(config.format_version)
        kwargs = dict(config.generator['kwargs'])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise dnnlib.UserError(f'{path}: release config is damaged ({one_line(err)})', param=param) from None
    if version > FORMAT_VERSION:
        message = f'{path}: release format {version} is newer than this code reads ({FORMAT_VERSION}); update SpineGAN'
        raise dnnlib.UserError(message, param=param)
    config.generator = dnnlib.EasyDict(class_name=GENERATOR_CLASS, kwargs=kwargs)
    return config


def build_generator(kwargs: dict, state: dict, what: str, param: str | None = None) -> torch.nn.Module:
    """training.networks.Generator(**kwargs) with `state` loaded strictly (every tensor, matching shapes).

    The global torch RNG is left as it was (construction draws the noise constants that `state` replaces).
    """
    try:
        with torch.random.fork_rng(devices=[]):
            G = networks.Generator(**kwargs)
        G.load_state_dict(state, strict=True)
    except Exception as err:  # Wrong kwargs raise TypeError/ValueError/AssertionError; mismatches RuntimeError.
        message = f'{what}: tensors do not fit the Generator its config describes ({one_line(err)})'
        raise dnnlib.UserError(message, param=param) from None
    return G


# ----------------------------------------------------------------------------
# An exception as one line of text, for one-line error messages.


def one_line(err: Exception, limit: int = 300) -> str:
    """'Type: message' on one line (load_state_dict's messages span many), cut to `limit` characters."""
    text = ' '.join(f'{type(err).__name__}: {err}'.split())
    return text if len(text) <= limit else text[: limit - 3] + '...'


# ----------------------------------------------------------------------------
