"""Tests of scripts/faceprep/jpeg.py: which JPEGs are plain enough to keep without asking TensorFlow."""

from collections import Counter

import numpy as np

import bin_samples
from bin_samples import PLAIN_JPEG_KINDS, damaged, pixels_for
from faceprep.jpeg import plain_jpeg


def test_plain_jpeg_accepts_the_complete_8bit_jpegs_among_the_samples(tf, tf_reads):
    samples = {kind: bin_samples.encode(pixels_for(0), kind) for kind in bin_samples.KINDS}
    samples["tf.io.encode_jpeg"] = tf.io.encode_jpeg(pixels_for(1)).numpy()
    samples["tf.io.encode_jpeg progressive"] = tf.io.encode_jpeg(pixels_for(1), progressive=True).numpy()
    accepted = {kind for kind, data in samples.items() if plain_jpeg(data)}
    assert accepted == PLAIN_JPEG_KINDS | {"tf.io.encode_jpeg", "tf.io.encode_jpeg progressive"}
    assert all(tf_reads(samples[kind]) for kind in accepted)


def test_plain_jpeg_never_accepts_a_damaged_jpeg_tf_refuses(tf_reads):
    """TF keeps the last word on everything plain_jpeg turns down, so what matters is that it
    never accepts what TF refuses. Thousands of damaged JPEGs of each plain kind probe that."""
    rng = np.random.default_rng(11)
    originals = [bin_samples.encode(pixels_for(seed), kind) for seed in range(3) for kind in sorted(PLAIN_JPEG_KINDS)]
    verdicts = Counter()
    for _ in range(3000):
        data = damaged(originals[int(rng.integers(len(originals)))], rng)
        verdicts[plain_jpeg(data), tf_reads(data)] += 1
    assert verdicts[True, False] == 0, verdicts
    # Both sides were probed: damage TF refuses, and damage both accept.
    assert verdicts[False, False] > 500 and verdicts[True, True] > 500, verdicts
