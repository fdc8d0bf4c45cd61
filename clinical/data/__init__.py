"""What dataset_tool.py converts and how it writes it; problems raise dnnlib.UserError naming the flag.

sources.py     --source specs (vindr:ROOT, phantom:N, image folders, existing datasets) -> lazily loaded,
               labelled items; decoding (16-bit data by its bit depth) and squaring; ConversionError, SkipItem.
labels_csv.py  a folder's labels.csv, read strictly: encoding, ragged rows, duplicates, paths, labels.
writer.py      the conversion loop, the zip or folder of PNGs plus dataset.json, and the preview grid.
"""

from clinical.data.sources import ConversionError, Source, open_source, phantom_count
from clinical.data.writer import DatasetWriter, convert, write_preview

__all__ = ['ConversionError', 'DatasetWriter', 'Source', 'convert', 'open_source', 'phantom_count', 'write_preview']
