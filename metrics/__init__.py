"""Generative-model metrics, in layer 3 beside clinical/. Problems raise plain exceptions; only the CLIs turn
them into usage errors.

    statistics.py    the maths on precomputed [N, D] feature arrays: FID, KID, precision/recall, density/coverage.
    features.py      feature networks (Inception, a radiograph classifier, pixels) that turn images into features.
    feature_sets.py  the real and generated feature sets that the metrics compare.
    metric_main.py   the metric registry (fid, kid, pr, dc, privacy, ...) for calc_metrics.py and train.py.
    privacy.py       memorisation and privacy checks of synthetic sets against the training set.
"""
