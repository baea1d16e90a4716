"""sine_pos_1d / sine_pos_2d positional encodings."""
import math

import pytest

from ris_plugins.models import (sine_pos_1d, sine_pos_2d)


def test_sine_positional_encodings():
    d, h, w = 8, 3, 4
    pe = sine_pos_2d(h, w, d)
    assert pe.shape == (h * w, d)
    half = d // 2
    for y in range(h):
        for x in range(w):
            for k in range(half // 2):
                f = 10000**(-2 * k / half)
                row = pe[y * w + x]
                assert row[2 * k] == pytest.approx(math.sin(x * f), abs=1e-6)
                assert row[2 * k + 1] == pytest.approx(math.cos(x * f),
                                                       abs=1e-6)
                assert row[half + 2 * k] == pytest.approx(
                    math.sin(y * f), abs=1e-6)
                assert row[half + 2 * k + 1] == pytest.approx(
                    math.cos(y * f), abs=1e-6)
    pe1 = sine_pos_1d(5, 6)
    assert pe1[3, 2] == pytest.approx(math.sin(3 * 10000**(-2 / 6)))
    assert pe1[3, 5] == pytest.approx(math.cos(3 * 10000**(-4 / 6)))
    with pytest.raises(ValueError, match='dim % 4'):
        sine_pos_2d(2, 2, 6)
