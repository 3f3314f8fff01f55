"""The draft bound compares like with like: every bound decoder does the same 1/8-scale work."""

from __future__ import annotations

import numpy as np
import pytest
from benchmarks.preprocess.main import (
    KERAS,
    PILLOW_EIGHTH,
    SIMPLEJPEG_EIGHTH,
    draft_bound,
    pillow_eighth,
    simplejpeg_eighth,
)
from benchmarks.preprocess.timing import Timing
from PIL import Image

from clothing_preproc import PreprocessConfig, decode_image
from testing_support.sample_images import photo_jpeg


def test_bound_decoders_decode_the_whole_photo_at_one_eighth_scale() -> None:
    data = photo_jpeg(4000, 3000, seed=1)
    pillow = np.asarray(pillow_eighth(data))
    fast = simplejpeg_eighth(data)
    assert pillow.shape == fast.shape == (375, 500, 3)
    # The same picture: only the fast IDCT and upsampling differ, by a level or two on average.
    assert np.abs(pillow.astype(np.int16) - fast).mean() < 2


def test_draft_mode_decodes_at_the_scale_the_bound_times() -> None:
    # Draft's 299×299 output is a NEAREST sample of the same 1/8-scale decode Pillow's bound times.
    data = photo_jpeg(4000, 3000, seed=1)
    draft = decode_image(data, PreprocessConfig(draft=True))
    assert draft.tobytes() == pillow_eighth(data).resize((299, 299), Image.Resampling.NEAREST).tobytes()


def test_bound_is_the_fastest_decoder_against_keras() -> None:
    def timing(name: str, *ms: float) -> Timing:
        # Wall time twice the CPU time, as on a loaded machine: the bound is judged on CPU time.
        return Timing(name, tuple(m / 500 for m in ms), tuple(m / 1000 for m in ms))

    timings = {
        KERAS: timing(KERAS, 45.0, 44.0),
        PILLOW_EIGHTH: timing(PILLOW_EIGHTH, 15.0, 14.5),
        SIMPLEJPEG_EIGHTH: timing(SIMPLEJPEG_EIGHTH, 14.4, 14.0),
    }
    name, best, gain = draft_bound(timings)
    assert name == SIMPLEJPEG_EIGHTH
    assert best == pytest.approx(14.0)
    assert gain == pytest.approx(44.0 / 14.0)
