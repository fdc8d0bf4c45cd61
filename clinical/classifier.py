"""Radiograph classifier: a compact GroupNorm ResNet (or VGG) trained from scratch, and the ONE preprocessing
contract that maps PNGs on disk, dataset batches and live generator output to its input.

GroupNorm instead of BatchNorm keeps every sample's gradient independent of the others, so the same network
trains under DP-SGD. The study's frozen classifier saw generated images in another value range and geometry
than it was trained on; here `forward` always preprocesses, so no caller can feed it anything else.
"""

import hashlib
import math
import pickle

import torch
import torch.nn.functional as F

import dnnlib
from torch_utils import persistence

KINDS = ('binary', 'multiclass', 'multilabel')
ARCHS = ('resnet', 'vgg')

# ----------------------------------------------------------------------------
# The preprocessing contract: uint8 [0, 255] or float [-1, 1] (generator output), any size and channel count
# -> float [N, 1, R, R] in [-1, 1]. Grey = channel mean; resized with antialiasing, never cropped.


def preprocess(
    images: torch.Tensor,  # [N, C, H, W]: uint8 in [0, 255], or float in [-1, 1] (out-of-range values clip).
    resolution: int,  # Side of the classifier's square input.
) -> torch.Tensor:  # [N, 1, resolution, resolution] float32 in [-1, 1]; differentiable for float input.
    """Map images to the classifier input, identically for PNGs (uint8) and generator output ([-1, 1]).

    Example:
        >>> u8 = torch.randint(0, 256, [2, 1, 64, 64], dtype=torch.uint8)
        >>> torch.allclose(preprocess(u8, 32), preprocess(u8.float() / 127.5 - 1, 32), atol=1e-6)
        True
    """
    if images.ndim != 4:
        raise ValueError(f'expected images [N, C, H, W], got shape {list(images.shape)}')
    if images.dtype == torch.uint8:
        x = images.to(torch.float32) / 255
    else:
        x = (images.to(torch.float32) + 1) / 2
    x = x.clamp(0, 1).mean(dim=1, keepdim=True)
    if x.shape[2:] != (resolution, resolution):
        x = F.interpolate(x, size=(resolution, resolution), mode='bilinear', align_corners=False, antialias=True)
    return x * 2 - 1


# ----------------------------------------------------------------------------
# Building blocks: 3x3 conv + GroupNorm + SiLU; a residual block; a VGG stage.


def _norm(channels):
    return torch.nn.GroupNorm(min(8, channels), channels)


def _conv(cin, cout, stride=1):
    return torch.nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


@persistence.persistent_class
class _ResBlock(torch.nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = torch.nn.Sequential(
            _conv(cin, cout, stride), _norm(cout), torch.nn.SiLU(), _conv(cout, cout), _norm(cout)
        )
        self.skip = None
        if stride != 1 or cin != cout:
            self.skip = torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 1, stride=stride, bias=False), _norm(cout))

    def forward(self, x):
        return F.silu(self.body(x) + (x if self.skip is None else self.skip(x)))


def _vgg_stage(cin, cout, stride):
    layers = [torch.nn.AvgPool2d(2)] if stride == 2 else []
    return torch.nn.Sequential(
        *layers, _conv(cin, cout), _norm(cout), torch.nn.SiLU(), _conv(cout, cout), _norm(cout), torch.nn.SiLU()
    )


# ----------------------------------------------------------------------------
# The classifier. `forward` takes raw images (see `preprocess`) and returns logits; heads by `kind`:
# binary -> [N] (positive = class_names[1]), multiclass -> [N, K] (softmax), multilabel -> [N, K] (sigmoid).


@persistence.persistent_class
class RadiographClassifier(torch.nn.Module):
    # fmt: off
    def __init__(
        self,
        class_names,                       # Class names in label order (the dataset's).
        kind,                              # 'binary' | 'multiclass' | 'multilabel'.
        resolution    = 64,                # Input side after preprocessing.
        arch          = 'resnet',          # 'resnet' (residual, GroupNorm) | 'vgg' (plain, GroupNorm).
        channels      = (32, 64, 128, 256),  # Width of each stage; every stage after the first halves the size.
        blocks        = 1,                 # Residual blocks per stage (resnet).
        dropout       = 0.1,               # Dropout before the head.
        label_schema  = None,              # The dataset's label_schema (recorded, compared by the clinical loss).
    ):
        # fmt: on
        super().__init__()
        if kind not in KINDS or arch not in ARCHS:
            raise ValueError(f'kind must be one of {KINDS} and arch one of {ARCHS}, got {kind!r}, {arch!r}')
        if kind == 'binary' and len(class_names) != 2:
            raise ValueError(f'a binary classifier needs 2 class names, got {len(class_names)}')
        self.class_names, self.kind, self.resolution = list(class_names), kind, resolution
        self.label_schema = label_schema
        stem_stride = max(1, min(4, resolution // 64))  # 256 px -> work at 64 px after the stem.
        self.stem = torch.nn.Sequential(_conv(1, channels[0], stem_stride), _norm(channels[0]), torch.nn.SiLU())
        stages, cin = [], channels[0]
        for i, cout in enumerate(channels):
            stride = 1 if i == 0 else 2
            if arch == 'resnet':
                stages += [_ResBlock(cin if b == 0 else cout, cout, stride if b == 0 else 1) for b in range(blocks)]
            else:
                stages.append(_vgg_stage(cin, cout, stride))
            cin = cout
        self.stages = torch.nn.Sequential(*stages)
        self.dropout = torch.nn.Dropout(dropout)
        self.head = torch.nn.Linear(cin, 1 if kind == 'binary' else len(class_names))
        self.num_features = cin

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features [N, num_features] (global average pool), e.g. for FID in a radiograph space."""
        x = self.stages(self.stem(preprocess(images, self.resolution)))
        return x.mean(dim=[2, 3])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.dropout(self.features(images)))
        return logits[:, 0] if self.kind == 'binary' else logits

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """binary: [N] P(class_names[1]); multiclass: [N, K] softmax; multilabel: [N, K] sigmoids."""
        logits = self(images)
        return torch.softmax(logits, dim=1) if self.kind == 'multiclass' else torch.sigmoid(logits)


@persistence.persistent_class
class ClassifierEnsemble(torch.nn.Module):
    """Classifiers of one task trained with different seeds, used as one: its probabilities are the mean of the
    members', and `forward` returns the logits of that mean (so losses, evaluation and the clinical loss take it
    like a single classifier). One classifier's test AUC moves by several hundredths with its seed alone."""

    def __init__(self, members):
        super().__init__()
        first = members[0]
        for net in members[1:]:
            if (net.class_names, net.kind, net.resolution) != (first.class_names, first.kind, first.resolution):
                raise ValueError('ensemble members must share classes, head and resolution')
        self.members = torch.nn.ModuleList(members)
        self.class_names, self.kind, self.resolution = first.class_names, first.kind, first.resolution
        self.label_schema = first.label_schema
        self.num_features = sum(net.num_features for net in members)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The members' penultimate features side by side [N, num_features] (a feature space for metrics)."""
        return torch.cat([net.features(images) for net in self.members], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # Log of the mean probability, computed from each member's log-probabilities (no overflow, exact gradients).
        logits = torch.stack([net(images) for net in self.members])
        log_count = math.log(len(self.members))
        if self.kind == 'multiclass':
            return torch.logsumexp(F.log_softmax(logits, dim=-1), dim=0) - log_count
        log_p = torch.logsumexp(F.logsigmoid(logits), dim=0) - log_count
        log_not_p = torch.logsumexp(F.logsigmoid(-logits), dim=0) - log_count
        return log_p - log_not_p

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([net.probabilities(images) for net in self.members]).mean(dim=0)


# ----------------------------------------------------------------------------
# Label vectors <-> the head's targets, and the per-sample loss (training and the clinical GAN term share it).


def label_kind(class_names: list[str], is_onehot: bool) -> str:
    """The head a dataset's labels need: one-hot with 2 classes -> binary, one-hot -> multiclass, else multilabel."""
    if not is_onehot:
        return 'multilabel'
    return 'binary' if len(class_names) == 2 else 'multiclass'


def targets_from_labels(labels: torch.Tensor, kind: str) -> torch.Tensor:
    """[N, K] label vectors -> binary [N] (P of class 1), multiclass [N] class indices, multilabel [N, K]."""
    if kind == 'binary':
        return labels[:, 1].to(torch.float32)
    if kind == 'multiclass':
        return labels.argmax(dim=1)
    return labels.to(torch.float32)


def per_sample_loss(
    logits: torch.Tensor,  # The classifier's output.
    targets: torch.Tensor,  # From targets_from_labels.
    kind: str,
    class_weights: torch.Tensor | None = None,  # binary: [1] pos_weight; multiclass: [K]; multilabel: [K] pos_weight.
) -> torch.Tensor:  # [N]
    """BCE (binary), cross-entropy (multiclass) or per-class BCE averaged over classes (multilabel)."""
    if kind == 'multiclass':
        return F.cross_entropy(logits, targets, weight=class_weights, reduction='none')
    loss = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=class_weights, reduction='none')
    return loss.mean(dim=1) if kind == 'multilabel' else loss


# ----------------------------------------------------------------------------
# Self-contained pickle: {'classifier': module (source embedded), 'metadata': dict}, written atomically.


def save_classifier(path: str, classifier: RadiographClassifier, metadata: dict) -> None:
    net = classifier.cpu().eval().requires_grad_(False)
    with dnnlib.util.atomic_write(path) as f:
        pickle.dump(dict(classifier=net, metadata=dict(metadata)), f)


def load_classifier(path: str, param: str | None = '--classifier') -> tuple[RadiographClassifier, dict]:
    """(classifier in eval mode with frozen weights, metadata). Pickles run code: trusted files only.

    Raises:
        dnnlib.UserError: missing, truncated or foreign file.
    """
    try:
        with open(path, 'rb') as f:
            blob = f.read()
        data = pickle.loads(blob)
    except Exception as err:  # Truncated or foreign pickles raise almost any exception type.
        raise dnnlib.UserError(f'{path}: cannot load classifier ({type(err).__name__}: {err})', param=param) from None
    net = data.get('classifier') if isinstance(data, dict) else None
    if not isinstance(net, torch.nn.Module) or not hasattr(net, 'class_names'):
        raise dnnlib.UserError(f'{path}: not a classifier pickle (write one with classify.py train)', param=param)
    metadata = dict(data.get('metadata') or {}, sha256=hashlib.sha256(blob).hexdigest())
    return net.eval().requires_grad_(False), metadata


# ----------------------------------------------------------------------------
# User-supplied starting weights (no download is ever needed): a classifier pickle, a .safetensors file or a
# torch state_dict file (read with weights_only, so no code runs). Same-named, same-shaped tensors are copied.


def load_weights(net: RadiographClassifier, path: str, param: str = '--init') -> list[str]:
    """Copy matching tensors from `path` into `net`; returns the names left as initialised.

    Raises:
        dnnlib.UserError: unreadable file, or no tensor of it fits the network.
    """
    try:
        if path.endswith('.safetensors'):
            import safetensors.torch

            state = safetensors.torch.load_file(path)
        else:
            state = _state_dict_from(path, param)
    except dnnlib.UserError:
        raise
    except Exception as err:  # Foreign or damaged files raise almost any exception type.
        raise dnnlib.UserError(f'{path}: cannot read weights ({type(err).__name__}: {err})', param=param) from None
    own = net.state_dict()
    fitting = {name: value for name, value in state.items() if name in own and own[name].shape == value.shape}
    if not fitting:
        raise dnnlib.UserError(f'{path}: none of its tensors fits this classifier', param=param)
    with torch.no_grad():
        for name, value in fitting.items():
            own[name].copy_(value)
    return [name for name in own if name not in fitting]


def _state_dict_from(path: str, param: str) -> dict:
    with open(path, 'rb') as f:
        head = f.read(2)
    if head[:1] == b'\x80':  # A plain pickle (torch.save writes a zip): only our classifier pickles are accepted.
        return load_classifier(path, param)[0].state_dict()
    state = torch.load(path, map_location='cpu', weights_only=True)
    state = state.get('state_dict', state) if isinstance(state, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise dnnlib.UserError(f'{path}: not a state_dict of tensors', param=param)
    return state


# ----------------------------------------------------------------------------
