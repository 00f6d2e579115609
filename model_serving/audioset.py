"""Coarse groups of the AudioSet ontology, by MID, so any AudioSet tagger (YAMNet's 521 classes,
PANNs' 527) maps to the same speech / music / sound fractions.

SPEECH: "Speech" and its children, plus speech babble. MUSIC: "Music" and its whole subtree,
singing and humming, whistling, and the music-production sounds (tuner, chorus effect). Everything
else an AudioSet tagger hears is "sound" (animals, machines, ambience, noise).
"""
from __future__ import annotations

SPEECH_MIDS = frozenset({
    '/m/09x0r', '/m/0ytgt', '/m/01h8n0', '/m/02qldy', '/m/0261r1', '/m/0brhx', '/m/07qfr4h'
})

MUSIC_MIDS = frozenset({
    '/m/015lz1', '/m/0l14jd', '/m/01swy6', '/m/02bk07', '/m/01c194', '/t/dd00005', '/t/dd00006',
    '/m/06bxc', '/m/02fxyj', '/m/01w250', '/m/04rlf', '/m/04szw', '/m/0fx80y', '/m/0342h',
    '/m/02sgy', '/m/018vs', '/m/042v_gx', '/m/06w87', '/m/01glhc', '/m/07s0s5r', '/m/018j2',
    '/m/0jtg0', '/m/04rzd', '/m/01bns_', '/m/07xzm', '/m/05148p4', '/m/05r5c', '/m/01s0ps',
    '/m/013y1f', '/m/03xq_f', '/m/03gvt', '/m/0l14qv', '/m/01v1d8', '/m/03q5t', '/m/0l14md',
    '/m/02hnl', '/m/0cfdd', '/m/026t6', '/m/06rvn', '/m/03t3fj', '/m/02k_mr', '/m/0bm02',
    '/m/011k_j', '/m/01p970', '/m/01qbl', '/m/03qtq', '/m/01sm1g', '/m/07brj', '/m/05r5wn',
    '/m/0xzly', '/m/0mbct', '/m/016622', '/m/0j45pbj', '/m/0dwsp', '/m/0dwtp', '/m/0dwt5',
    '/m/0l156b', '/m/05pd6', '/m/01kcd', '/m/0319l', '/m/07gql', '/m/07c6l', '/m/0l14_3',
    '/m/02qmj0d', '/m/07y_7', '/m/0d8_n', '/m/01xqw', '/m/02fsn', '/m/085jw', '/m/0l14j_',
    '/m/06ncr', '/m/01wy6', '/m/03m5k', '/m/0395lw', '/m/03w41f', '/m/027m70_', '/m/0gy1t2s',
    '/m/07n_g', '/m/0f8s22', '/m/026fgl', '/m/0150b9', '/m/03qjg', '/m/0mkg', '/m/0192l',
    '/m/02bxd', '/m/0l14l2', '/m/07kc_', '/m/0l14t7', '/m/01hgjl', '/m/064t9', '/m/0glt670',
    '/m/02cz_7', '/m/06by7', '/m/03lty', '/m/05r6t', '/m/0dls3', '/m/0dl5d', '/m/07sbbz2',
    '/m/05w3f', '/m/06j6l', '/m/0gywn', '/m/06cqb', '/m/01lyv', '/m/015y_n', '/m/0gg8l',
    '/m/02x8m', '/m/02w4v', '/m/06j64v', '/m/03_d0', '/m/026z9', '/m/0ggq0m', '/m/05lls',
    '/m/02lkt', '/m/03mb9', '/m/07gxw', '/m/07s72n', '/m/0283d', '/m/0m0jc', '/m/08cyft',
    '/m/0fd3y', '/m/07lnk', '/m/0g293', '/m/0ln16', '/m/0326g', '/m/0155w', '/m/05fw6t',
    '/m/02v2lh', '/m/0y4f8', '/m/0z9c', '/m/0164x2', '/m/0145m', '/m/02mscn', '/m/016cjb',
    '/m/028sqc', '/m/015vgc', '/m/0dq0md', '/m/06rqw', '/m/02p0sh1', '/m/05rwpb', '/m/074ft',
    '/m/025td0t', '/m/02cjck', '/m/03r5q_', '/m/0l14gg', '/m/07pkxdp', '/m/01z7dr', '/m/0140xf',
    '/m/0ggx5q', '/m/04wptg', '/t/dd00031', '/t/dd00033', '/t/dd00034', '/t/dd00035',
    '/t/dd00036', '/t/dd00037', '/m/0b_fwt', '/m/02rr_', '/m/07m2kt'
})
