"""Decoding in clinical/data/sources.py: 16-bit containers scaled by the bit depth of what they hold."""

import io

import numpy as np
import PIL.Image
import pytest

import dnnlib
from clinical.data.sources import decode_image, scale_by_bit_depth


@pytest.mark.parametrize('peak, bits', [(0, 10), (255, 10), (1023, 10), (1024, 12), (4095, 12), (16383, 14),
                                        (16384, 16), (65535, 16)])  # fmt: skip
def test_bit_depth_is_the_smallest_that_holds_the_maximum(peak, bits):
    values = np.array([[0.0, peak]])
    assert scale_by_bit_depth(values, 'x.png')[0, 1] == pytest.approx(peak / (2**bits - 1))


def test_forced_bits_scale_and_refuse_larger_values():
    values = np.array([[0.0, 200.0]])
    assert scale_by_bit_depth(values, 'x.png', bits=8)[0, 1] == pytest.approx(200 / 255)
    with pytest.raises(dnnlib.UserError, match=r'x.png holds the value 200, above 127') as info:
        scale_by_bit_depth(values, 'x.png', bits=7)
    assert info.value.param == '--bits'


def test_12_bit_png_decodes_to_the_full_range():
    values = np.random.default_rng(0).integers(0, 4096, (16, 16)).astype(np.uint16)
    values[0, 0] = 4095
    buffer = io.BytesIO()
    PIL.Image.fromarray(values).save(buffer, format='PNG')
    image = decode_image('x.png', buffer.getvalue())
    assert image.dtype == np.float32 and image.max() == 1
    np.testing.assert_allclose(image, values / 4095, atol=1e-6)
