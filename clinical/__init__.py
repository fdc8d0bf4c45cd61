"""The clinical domain, above training/ and below the CLIs. Problems raise plain exceptions (dnnlib.UserError
naming the flag at fault); only the CLIs turn them into one-line usage errors.

    labels.py               label schemas: class order and names, the abnormal rule, relabelling.
    dicom_io.py             DICOM reading and writing, and the VinDr-SpineXR tree layout.
    phantom/                the procedural spine phantom (make_phantom, phantom_images).
    data/                   radiograph sources and the dataset writer behind dataset_tool.py.
    classifier.py           the radiograph classifier and its one preprocessing contract.
    classifier_data.py      labelled image sets (real, synthetic, mixed) and the patient-aware split.
    classifier_training.py  training a classifier, choosing its epoch and threshold on validation.
    classifier_report.py    judging classifiers on a test set (eval, compare).
    evaluation.py           AUC with bootstrap CI, operating points, DeLong, ROC figures.
    synthetic.py            loading a generator and drawing labelled synthetic images.
    clinical_loss.py        the frozen-classifier generator term (--clinical-loss).
"""
