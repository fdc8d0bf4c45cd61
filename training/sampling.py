"""Per-seed images from a generator: the z of every image comes from `RandomState(seed)`, so an image depends on
its seed (and label) only, never on the batch it was drawn in. generate.py, classify.py and the metrics share it.
"""

import numpy as np
import torch

# ----------------------------------------------------------------------------
# Per-seed images: uint8 [N, H, W, C], the same bytes generate.py writes as PNGs.


def generate_images(G, seeds, label, truncation_psi=1, noise_mode='const', batch_size=16, device='cpu'):
    """One uint8 image [H, W, C] per seed; `label` is one [c_dim] vector or one per seed [N, c_dim].

    Example:
        >>> images = generate_images(G, [0, 1], np.zeros([G.c_dim], np.float32))  # doctest: +SKIP
    """
    device = torch.device(device)
    z = np.stack([np.random.RandomState(seed).randn(G.z_dim) for seed in seeds]).astype(np.float32)
    c = np.broadcast_to(label, [len(seeds), G.c_dim]).astype(np.float32)
    if noise_mode == 'random':
        batch_size = 1  # Per-seed noise: seed torch per image.
    images = []
    with torch.no_grad():
        for start in range(0, len(seeds), batch_size):
            if noise_mode == 'random':
                torch.manual_seed(seeds[start])
            z_batch = torch.from_numpy(z[start : start + batch_size]).to(device)
            c_batch = torch.from_numpy(c[start : start + batch_size]).to(device)
            img = G(
                z_batch, c_batch, truncation_psi=truncation_psi, noise_mode=noise_mode, force_fp32=device.type == 'cpu'
            )
            img = (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
            images.append(img.cpu().numpy())
    return np.concatenate(images)
