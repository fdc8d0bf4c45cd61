"""Metric speed: FID in the offline feature space (a classify.py classifier's penultimate features), N real vs N
generated images at a given resolution, from nothing cached: real features, generating images, their features
and the Frechet distance, each timed. The generator is a fresh `--cfg=cpu` one (speed does not depend on training).

Example:
    python bench/metrics_speed.py --num 2000 --res 64 --threads 2
"""

import os
import subprocess
import sys
import tempfile
import time

import click
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import dnnlib  # noqa: E402
from clinical.classifier import RadiographClassifier, save_classifier  # noqa: E402
from metrics import feature_sets, statistics  # noqa: E402
from metrics.features import load_feature_net  # noqa: E402
from training import config  # noqa: E402


def fresh_generator(res, c_dim):
    spec = config.resolve_auto_preset(config.CONFIG_PRESETS['cpu'], res, 1)
    synthesis = dict(channel_base=spec.channel_base, channel_max=spec.channel_max, num_fp16_res=0, conv_clamp=256)
    return dnnlib.util.construct_class_by_name(
        class_name='training.networks.Generator', z_dim=512, w_dim=512, c_dim=c_dim, img_resolution=res,
        img_channels=1, mapping_kwargs=dict(num_layers=spec.map_layers), synthesis_kwargs=synthesis,
    ).eval()  # fmt: skip


@click.command()
@click.option('--num', type=int, default=2000, show_default=True, help='Real and generated images each')
@click.option('--res', type=int, default=64, show_default=True, help='Resolution')
@click.option('--threads', type=int, default=2, show_default=True, help='torch threads')
@click.option('--feature-net', metavar='PKL', help='A classify.py classifier (default: an untrained one, same cost)')
def main(num, res, threads, feature_net):
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ['DNNLIB_CACHE_DIR'] = tmp  # Nothing cached: real features are computed in the timed run.
        data = os.path.join(tmp, 'phantom.zip')
        subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'dataset_tool.py'), '--source', f'phantom:{num}',
                        '--resolution', str(res), '--dest', data], check=True, capture_output=True)  # fmt: skip
        if feature_net is None:
            feature_net = os.path.join(tmp, 'classifier.pkl')
            save_classifier(feature_net, RadiographClassifier(['normal', 'abnormal'], 'binary', res), {})
        net, G = load_feature_net(feature_net), fresh_generator(res, 2)
        times = {}
        start = time.perf_counter()
        real = feature_sets.real_features(feature_sets.open_dataset(data), net, progress=False)
        times['real features'] = time.perf_counter() - start
        start = time.perf_counter()
        gen = feature_sets.generated_features(G, net, real.labels, num, progress=False)
        times['generate + features'] = time.perf_counter() - start
        start = time.perf_counter()
        fid = statistics.frechet_distance(
            *statistics.feature_stats(gen.features), *statistics.feature_stats(real.features)
        )
        times['Frechet distance'] = time.perf_counter() - start
    for name, seconds in times.items():
        print(f'{name:<22} {seconds:7.1f} s')
    print(f'{"total":<22} {sum(times.values()):7.1f} s  (FID {fid:.2f}, {num} vs {num} images at {res} px, '
          f'{threads} threads, {net.name})')  # fmt: skip


if __name__ == '__main__':
    main()
