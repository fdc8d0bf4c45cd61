"""The clinical domain, above training/ and below the CLIs. Problems raise plain exceptions (dnnlib.UserError
naming the flag at fault); only the CLIs turn them into one-line usage errors.

    labels.py    label schemas: class order and names, the abnormal rule, relabelling.
    dicom_io.py  DICOM reading and writing, and the VinDr-SpineXR tree layout.
    phantom/     the procedural spine phantom (make_phantom, phantom_images).
    data/        radiograph sources and the dataset writer behind dataset_tool.py.
"""
