"""Open-set face recognition: the verification protocol over pair similarities (LFW View 2 style),
LFW ``pairs.txt`` files, and the figures a verification run writes.

Everything here works on precomputed similarity scores and file lists, so it never needs a
model: the code that embeds images (inference/) produces the scores, this package judges them.
"""
