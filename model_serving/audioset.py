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


# --- groups for caption evidence (operators/caption_evidence.py) --------------------------------
# Subtrees of the AudioSet ontology, by MID; the class index order of AudioSet's label list (which
# YAMNet and PANNs share) walks the ontology depth-first, so each group is a contiguous run of it.
# tests/test_caption_evidence.py checks the groups by the display names of the tagger.

# Cheering ... Hubbub: a crowd
CROWD_MIDS = frozenset({
    '/m/053hz1', '/m/028ght', '/m/07rkbfh', '/m/03qtwd', '/m/07qfr4h'
})

# Animal and its whole subtree (Dog ... Whale vocalization)
ANIMAL_MIDS = frozenset({
    '/m/0jbk', '/m/068hy', '/m/0bt9lr', '/m/05tny_', '/m/07r_k2n', '/m/07qf0zm', '/m/07rc7d9',
    '/m/0ghcn6', '/t/dd00136', '/m/01yrx', '/m/02yds9', '/m/07qrkrw', '/m/07rjwbb',
    '/m/07r81j2', '/m/0ch8v', '/m/03k3r', '/m/07rv9rh', '/m/07q5rw0', '/m/01xq0k1',
    '/m/07rpkh9', '/m/0239kh', '/m/068zj', '/t/dd00018', '/m/03fwl', '/m/07q0h5t', '/m/07bgp',
    '/m/025rv6n', '/m/09b5t', '/m/07st89h', '/m/07qn5dc', '/m/01rd7k', '/m/07svc2k', '/m/09ddx',
    '/m/07qdb04', '/m/0dbvp', '/m/07qwf61', '/m/01280g', '/m/0cdnk', '/m/04cvmfc', '/m/015p6',
    '/m/020bb7', '/m/07pggtn', '/m/07sx8x_', '/m/0h0rv', '/m/07r_25d', '/m/04s8yn',
    '/m/07r5c2p', '/m/09d5_', '/m/07r_80w', '/m/05_wcq', '/m/01z5f', '/m/06hps', '/m/04rmv',
    '/m/07r4gkf', '/m/03vt0', '/m/09xqv', '/m/09f96', '/m/0h2mp', '/m/07pjwq1', '/m/01h3n',
    '/m/09ld4', '/m/07st88b', '/m/078jl', '/m/07qn4z3', '/m/032n05'
})

# Natural sounds: Wind ... Crackle (weather, water, fire)
NATURE_MIDS = frozenset({
    '/m/03m9d0z', '/m/09t49', '/t/dd00092', '/m/0jb2l', '/m/0ngt1', '/m/0838f', '/m/06mb1',
    '/m/07r10fb', '/t/dd00038', '/m/0j6m2', '/m/0j2kx', '/m/05kq4', '/m/034srq', '/m/06wzb',
    '/m/07swgks', '/m/02_41', '/m/07pzfmf'
})

# Vehicle and Engine subtrees (Boat ... Accelerating)
VEHICLE_MIDS = frozenset({
    '/m/07yv9', '/m/019jd', '/m/0hsrw', '/m/056ks2', '/m/02rlv9', '/m/06q74', '/m/012f08',
    '/m/0k4j', '/m/0912c9', '/m/07qv_d5', '/m/02mfyn', '/m/04gxbd', '/m/07rknqz', '/m/0h9mv',
    '/t/dd00134', '/m/0ltv', '/m/07r04', '/m/0gvgw0', '/m/05x_td', '/m/02rhddq', '/m/03cl9h',
    '/m/01bjv', '/m/03j1ly', '/m/04qvtq', '/m/012n7d', '/m/012ndj', '/m/04_sv', '/m/0btp2',
    '/m/06d_3', '/m/07jdr', '/m/04zmvq', '/m/0284vy3', '/m/01g50p', '/t/dd00048', '/m/0195fx',
    '/m/0k5j', '/m/014yck', '/m/04229', '/m/02l6bg', '/m/09ct_', '/m/0cmf2', '/m/0199g',
    '/m/06_fw', '/m/02mk9', '/t/dd00065', '/m/08j51y', '/m/01yg9g', '/m/01j4z9', '/t/dd00066',
    '/t/dd00067', '/m/01h82_', '/t/dd00130', '/m/07pb8fc', '/m/07q2z82'
})

# Domestic sounds: Door ... Shuffling cards
HOUSEHOLD_MIDS = frozenset({
    '/m/02dgv', '/m/03wwcy', '/m/07r67yg', '/m/02y_763', '/m/07rjzl8', '/m/07r4wb8',
    '/m/07qcpgn', '/m/07q6cd_', '/m/0642b4', '/m/0fqfqc', '/m/04brg2', '/m/023pjk',
    '/m/07pn_8q', '/m/0dxrf', '/m/0fx9l', '/m/02pjr4', '/m/02jz0l', '/m/0130jx', '/m/03dnzn',
    '/m/03wvsk', '/m/01jt3m', '/m/012xff', '/m/04fgwm', '/m/0d31p', '/m/01s0vc', '/m/03v3yw',
    '/m/0242l', '/m/01lsmm', '/m/02g901', '/m/05rj2'
})

# Typing, Typewriter, Computer keyboard, Writing
OFFICE_MIDS = frozenset({
    '/m/0316dw', '/m/0c2wf', '/m/01m2v', '/m/081rb'
})

# Inside, small room / large room or hall / public space
INDOOR_MIDS = frozenset({
    '/t/dd00125', '/t/dd00126', '/t/dd00127'
})

# Outside, urban or manmade / rural or natural
OUTDOOR_MIDS = frozenset({
    '/t/dd00128', '/t/dd00129'
})

# Telephone, ringing, ringtone, dialing, dial tone, busy signal
TELEPHONE_MIDS = frozenset({
    '/m/07cx4', '/m/07pp8cl', '/m/01hnzm', '/m/02c8p', '/m/015jpf', '/m/01z47d'
})

# Singing, Choir, Yodeling, Chant, Mantra, Child singing, Synthetic singing, Rapping, Humming
SINGING_MIDS = frozenset({
    '/m/015lz1', '/m/0l14jd', '/m/01swy6', '/m/02bk07', '/m/01c194', '/t/dd00005', '/t/dd00006',
    '/m/06bxc', '/m/02fxyj'
})
