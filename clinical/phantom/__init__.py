"""The spine phantom: procedural lateral lumbar-spine radiographs with boxed lesions, deterministic per
(seed, index); the project's default, shippable data.

    render.py   normal anatomy, acquisition and the entry points `make_phantom` and `phantom_images`.
    lesions.py  the seven VinDr-SpineXR lesion types: sampling, anatomy changes, drawing and boxes.
    canvas.py   drawing primitives: vertebra frames, the supersampled density canvas, SDFs and blobs.
"""

from clinical.phantom.render import PhantomImage, make_phantom, phantom_images

__all__ = ['PhantomImage', 'make_phantom', 'phantom_images']
