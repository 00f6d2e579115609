"""The segment policy on controlled probabilities and levels (no model involved)."""
import numpy as np

from operators.segmenting import (FRAME, RATE, merge_short, plan_segments, sound_regions,
                                  speech_regions, split_long)
from schemas.config import SegmentConfig

CFG = SegmentConfig(speech_pad_s=0.0, min_silence_s=0.3)


def probs_for(spans_s, total_s):
    """Frame probabilities: 0.9 inside the given spans, 0.02 elsewhere."""
    n = int(total_s * RATE / FRAME)
    p = np.full(n, 0.02, np.float32)
    for s, e in spans_s:
        p[int(s * RATE / FRAME):int(e * RATE / FRAME)] = 0.9
    return p


def test_speech_regions_follow_probabilities_and_bridge_short_pauses():
    p = probs_for([(1.0, 3.0), (3.1, 4.0), (6.0, 7.0)], 10)
    regions = speech_regions(p, 10 * RATE, CFG)
    # the 0.1 s pause is shorter than min_silence_s and does not end speech
    assert len(regions) == 2
    assert abs(regions[0][0] / RATE - 1.0) < 0.05 and abs(regions[0][1] / RATE - 4.0) < 0.05
    assert abs(regions[1][0] / RATE - 6.0) < 0.05


def test_split_long_cuts_at_least_speechlike_frame_and_respects_max():
    p = probs_for([(0, 50)], 50)
    p[int(20 * RATE / FRAME)] = 0.0  # a dip at 20 s
    pieces = split_long([(0, 50 * RATE)], p, max_s=28)
    assert all(e - s <= 28 * RATE for s, e in pieces)
    assert abs(pieces[0][1] / RATE - 20.0) < 0.05
    assert pieces[0][0] == 0 and pieces[-1][1] == 50 * RATE
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))  # nothing lost between pieces


def test_merge_short_joins_neighbours_up_to_target():
    cfg = SegmentConfig(merge_gap_s=0.6, target_s=10, min_speech_s=1.0, max_speech_s=28)
    r = [(0, 4 * RATE), (int(4.3 * RATE), 8 * RATE), (int(8.2 * RATE), 14 * RATE),
         (20 * RATE, int(20.5 * RATE)), (int(20.9 * RATE), 23 * RATE)]
    merged = merge_short(r, cfg)
    assert merged[0] == (0, 8 * RATE)            # third would exceed target_s
    assert merged[1] == (int(8.2 * RATE), 14 * RATE)
    assert merged[2] == (20 * RATE, 23 * RATE)   # the 0.5 s piece merged into its neighbour


def test_sound_regions_keep_loud_non_speech_and_drop_near_silence():
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(10 * RATE) * 1e-5).astype(np.float32)  # -100 dBFS floor
    audio[2 * RATE:4 * RATE] = 0.1 * np.sin(np.arange(2 * RATE) * 2 * np.pi * 440 / RATE)
    audio[6 * RATE:int(6.2 * RATE)] = 0.1                               # 0.2 s click: too short
    regions = sound_regions(audio, [], SegmentConfig(min_sound_s=0.5))
    assert len(regions) == 1
    assert abs(regions[0][0] / RATE - 2.0) < 0.11 and abs(regions[0][1] / RATE - 4.0) < 0.11


def test_plan_segments_orders_speech_and_sound_and_flags_too_short():
    rng = np.random.default_rng(1)
    audio = (rng.standard_normal(12 * RATE) * 0.05).astype(np.float32)  # loud everywhere
    p = probs_for([(1.0, 1.5), (5.0, 9.0)], 12)
    plan = plan_segments(audio, p, SegmentConfig(speech_pad_s=0.0, merge_gap_s=0.2))
    kinds = [s.content_type for s in plan]
    assert kinds.count("speech") == 2 and "sound" in kinds
    assert [s.start for s in plan] == sorted(s.start for s in plan)
    short = [s for s in plan if s.content_type == "speech" and s.too_short]
    assert len(short) == 1 and abs(short[0].duration_s - 0.5) < 0.05
    speech = [(s.start, s.end) for s in plan if s.content_type == "speech"]
    for s in plan:  # sound never overlaps speech
        if s.content_type == "sound":
            assert all(s.end <= a or s.start >= b for a, b in speech)
