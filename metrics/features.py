"""Feature networks for the metrics, each recorded (name + sha256) with every number it produces, so numbers
from different spaces are never compared:

    inception  the standard FID Inception-v3 (TorchScript, NVIDIA's inception-2015-12-05.pt), when the user has
               its weights (a local path or URL; never downloaded unasked), so numbers compare with the literature;
    PKL        penultimate features of a radiograph classifier from classify.py: the offline default;
    pixels:S   grey pixels downsampled to SxS (default 16): quick checks that need nothing.
"""

import hashlib
import io
import os
import pickle

import numpy as np
import torch
import torch.nn.functional as F

import dnnlib

INCEPTION_URL = 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt'
INCEPTION_FILE = 'inception-2015-12-05.pt'

# ----------------------------------------------------------------------------
# Raised when a feature network's weights are not on disk: training warns once and goes on, CLIs exit 2.


class FeatureNetMissing(dnnlib.UserError):
    pass


def inception_path() -> str:
    """Where the Inception weights are looked for: $SPINEGAN_INCEPTION, else the dnnlib cache folder."""
    return os.environ.get('SPINEGAN_INCEPTION') or dnnlib.util.make_cache_dir_path(INCEPTION_FILE)


# ----------------------------------------------------------------------------
# The feature networks: uint8 images [N, C, H, W] on any device -> float32 features [N, D].


class PixelFeatures:
    def __init__(self, size: int = 16):
        self.size, self.name = size, f'pixels{size}'
        self.sha256 = hashlib.sha256(f'spinegan-pixels-v1-{size}'.encode()).hexdigest()

    def to(self, device):
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(torch.float32).mean(dim=1, keepdim=True) / 255
        x = F.interpolate(x, size=(self.size, self.size), mode='area') if x.shape[2] != self.size else x
        return x.flatten(1)


class ClassifierFeatures:
    # The classifier pickle is self-contained (torch_utils.persistence), so reading it needs nothing of clinical/.
    def __init__(self, path: str, param: str = '--feature-net'):
        try:
            with open(path, 'rb') as f:
                blob = f.read()
            net = pickle.loads(blob).get('classifier')
        except Exception as err:  # Truncated or foreign pickles raise almost any exception type.
            raise dnnlib.UserError(
                f'{path}: cannot load classifier ({type(err).__name__}: {err})', param=param
            ) from None
        if not callable(getattr(net, 'features', None)):
            raise dnnlib.UserError(f'{path}: not a classify.py classifier (no penultimate features)', param=param)
        self.net = net.eval().requires_grad_(False)
        self.sha256, self.name = hashlib.sha256(blob).hexdigest(), f'classifier:{os.path.basename(path)}'

    def to(self, device):
        self.net = self.net.to(device)
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.features(images).to(torch.float32)


class InceptionFeatures:
    def __init__(self, path: str, param: str = '--feature-net'):
        try:
            with dnnlib.util.open_url(path, verbose=False) as f:
                blob = f.read()
        except OSError as err:
            raise FeatureNetMissing(_missing_message(path, err), param=param) from None
        self.sha256, self.name = hashlib.sha256(blob).hexdigest(), 'inception-v3-fid'
        try:
            self.net = torch.jit.load(io.BytesIO(blob), map_location='cpu').eval()
        except Exception as err:  # Not TorchScript, or damaged.
            raise dnnlib.UserError(f'{path}: not the TorchScript Inception network ({err})', param=param) from None

    def to(self, device):
        self.net = self.net.to(device)
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        return self.net(images, return_features=True).to(torch.float32)


def _missing_message(path: str, err: Exception) -> str:
    where = f'download {INCEPTION_URL} and put it at {inception_path()}'
    return f'Inception weights not found at {path} ({err}); {where}, or use --feature-net PKL|pixels'


# ----------------------------------------------------------------------------
# A --feature-net spec -> a feature network: 'inception' (or a .pt path/URL), 'pixels[:S]', or a classifier PKL.


def load_feature_net(spec: str, device='cpu', param: str = '--feature-net'):
    """Raises FeatureNetMissing (weights not on disk) or dnnlib.UserError (a file that is no feature network)."""
    if spec == 'inception':
        path = inception_path()
        if not os.path.isfile(path):
            raise FeatureNetMissing(_missing_message(path, 'no such file'), param=param)
        return InceptionFeatures(path, param).to(device)
    if spec == 'pixels' or spec.startswith('pixels:'):
        size = spec.partition(':')[2] or '16'
        if not size.isdigit() or not 1 <= int(size) <= 256:
            raise dnnlib.UserError(f'{spec!r}: expected pixels or pixels:S with 1 <= S <= 256', param=param)
        return PixelFeatures(int(size))
    if dnnlib.util.is_url(spec) or spec.endswith('.pt'):
        return InceptionFeatures(spec, param).to(device)
    if not os.path.isfile(spec):
        raise FeatureNetMissing(f'{spec}: no such file (a classify.py classifier, inception or pixels)', param=param)
    return ClassifierFeatures(spec, param).to(device)


# ----------------------------------------------------------------------------
# Features of many images, in batches on the feature network's device.


def compute_features(feature_net, images: np.ndarray, batch_size: int = 128, device='cpu') -> np.ndarray:
    """uint8 [N, C, H, W] -> float32 [N, D]."""
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)
            out.append(feature_net(batch).cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def describe(feature_net, num_real: int, num_gen: int) -> dict:
    return dict(name=feature_net.name, sha256=feature_net.sha256, num_real=int(num_real), num_gen=int(num_gen))


# ----------------------------------------------------------------------------
