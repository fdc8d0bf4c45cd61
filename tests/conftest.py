"""Test-wide settings (one CPU thread: tiny tensors run fastest that way, and runs stay bit-reproducible) and
shared builders: a tiny image dataset and a tiny training config."""

import io
import json
import os
import sys
import zipfile
from collections.abc import Callable

import numpy as np
import PIL.Image
import pytest
import torch

import dnnlib


@pytest.fixture(autouse=True, scope='session')
def _single_thread():
    os.environ['OMP_NUM_THREADS'] = '1'  # Inherited by the CLIs that tests start as subprocesses.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def spawn_workers(tmp_path):
    """Run `run(rank, tmp_dir)` from the given module source in `nprocs` spawned processes.

    The worker is written to a file because spawned processes re-import it by name, which test modules
    loaded in importlib mode cannot be.
    """

    def spawn(module_source, nprocs=2):
        (tmp_path / '_spawned_worker.py').write_text(module_source)
        sys.path.insert(0, str(tmp_path))
        try:
            import _spawned_worker

            torch.multiprocessing.spawn(_spawned_worker.run, args=(str(tmp_path),), nprocs=nprocs)
        finally:
            sys.path.remove(str(tmp_path))
            sys.modules.pop('_spawned_worker', None)

    return spawn


# ----------------------------------------------------------------------------
# A tiny image dataset: PNGs (+ dataset.json) in a zip or a folder, deterministic for a given seed.


def _stripes(i, size, rnd, classes):
    """Default image: sine stripes whose frequency and fade direction give the class (i % classes)."""
    cls = i % classes
    yy, xx = np.mgrid[:size, :size] / size
    img = 0.5 + 0.4 * np.sin(2 * np.pi * ((cls + 1) * xx + rnd.rand())) * (yy if cls else 1 - yy)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)  # [H, W], values in [25, 229].


def _write_files(path, files):
    if path.endswith('.zip'):
        with zipfile.ZipFile(path, 'w') as z:
            for name, data in files.items():
                z.writestr(name, data)
        return
    for name, data in files.items():
        os.makedirs(os.path.dirname(os.path.join(path, name)), exist_ok=True)
        with open(os.path.join(path, name), 'wb') as f:
            f.write(data)


@pytest.fixture(scope='session')
def tiny_dataset(tmp_path_factory):
    """Factory: write a tiny dataset and return its path (a str), e.g. `tiny_dataset(8, class_names=['a', 'b'])`.

    Session-scoped (it keeps no state) so that module-scoped fixtures can use it too.
    """

    # fmt: off
    def make(
        n:           int = 16,                  # Number of images.
        *,
        path:        str | os.PathLike | None = None,  # '*.zip' -> a zip, else a folder; None = fresh '<tmp>/data.zip'.
        resolution:  int = 16,                  # Side of every image, unless `sizes` is given.
        sizes:       list | None = None,        # Per-image side, int or (width, height): for the bad-shape cases.
        image:       Callable | None = None,    # image(i, size, rnd) -> PIL.Image or uint8 array; None = stripes.
        names:       str | list = 'img{i:04d}.png',  # File names: a format string of `i`, or the list itself.
        labels:      bool | list = True,        # True: class i % classes; a list: one label per image; False: none.
        classes:     int = 2,                   # Number of classes, for labels=True and the default images.
        class_names: list | None = None,        # dataset.json 'class_names'; None = leave the key out.
        metadata:    dict | None = None,        # Further dataset.json keys; they win over the ones above.
        seed:        int = 0,                   # Seeds the `rnd` (np.random.RandomState) passed to `image`.
    ) -> str:                                   # The dataset path, for ImageFolderDataset or --data.
    # fmt: on
        path = str(path or tmp_path_factory.mktemp('dataset') / 'data.zip')
        names = [names.format(i=i) for i in range(n)] if isinstance(names, str) else list(names)
        image = image or (lambda i, size, rnd: _stripes(i, size, rnd, classes))
        rnd = np.random.RandomState(seed)
        files = {}
        for i, name in enumerate(names):
            img = image(i, sizes[i] if sizes else resolution, rnd)
            img = img if isinstance(img, PIL.Image.Image) else PIL.Image.fromarray(img)
            buf = io.BytesIO()
            img.save(buf, format='PNG')
            files[name] = buf.getvalue()
        meta = {}
        if labels is not False:
            values = [i % classes for i in range(n)] if labels is True else labels
            meta['labels'] = [[name, value] for name, value in zip(names, values)]
        if class_names is not None:
            meta['class_names'] = class_names
        meta.update(metadata or {})
        if meta:
            files['dataset.json'] = json.dumps(meta).encode()
        _write_files(path, files)
        return path

    return make


# ----------------------------------------------------------------------------
# A tiny training_loop() config: 16x16, 16 channels, batch 4 in two rounds of 2, ADA (target 0) and R1,
# a network snapshot every tick of 8 images and 32 images in all.


@pytest.fixture(scope='session')
def tiny_training_kwargs():
    """Factory: `tiny_training_kwargs(run_dir, data, **overrides)` -> the EasyDict for training_loop(**kwargs).

    Overrides replace top-level keys. run_dir is created.
    """

    def make(run_dir, data, **overrides):
        small = dict(channel_base=256, channel_max=16, num_fp16_res=0)
        adam = dict(class_name='torch.optim.Adam', lr=0.0025, betas=[0.0, 0.99], eps=1e-8)
        kwargs = dnnlib.EasyDict(
            run_dir=str(run_dir), device='cpu', random_seed=1,
            training_set_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path=data, use_labels=True),
            data_loader_kwargs=dict(num_workers=0),
            G_kwargs=dict(
                class_name='training.networks.Generator', z_dim=16, w_dim=16, mapping_kwargs=dict(num_layers=2),
                synthesis_kwargs=small,
            ),
            D_kwargs=dict(
                class_name='training.networks.Discriminator', epilogue_kwargs=dict(mbstd_group_size=2), **small
            ),
            G_opt_kwargs=adam, D_opt_kwargs=adam,
            augment_kwargs=dict(
                class_name='training.augment.AugmentPipe', xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1,
                xfrac=1, brightness=1, contrast=1,
            ),
            loss_kwargs=dict(class_name='training.loss.StyleGAN2Loss', r1_gamma=1),
            batch_size=4, batch_gpu=2, ema_kimg=0.01, ema_rampup=0.05, G_reg_interval=2, D_reg_interval=3,
            ada_target=0.0, ada_interval=2, ada_kimg=0.05, total_kimg=0.032, kimg_per_tick=0.008,
            image_snapshot_ticks=4, network_snapshot_ticks=1,
        )  # fmt: skip
        kwargs.update(overrides)
        os.makedirs(run_dir, exist_ok=True)
        return kwargs

    return make
