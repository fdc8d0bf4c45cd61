"""The clinical domain: label schemas, the spine phantom, DICOM reading, and (later) classifier, loss and DP."""
