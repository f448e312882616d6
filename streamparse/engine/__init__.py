"""The engine: one frame's trip from a decoded batch to a written parsing.

``preprocess`` (resize, normalise, pad) -> ``predictor`` (the network and post-processing on one
device) -> ``scheduler`` (the driver loop in plain Python, with file/live policies) -> ``actors``
(thin Ray wrappers: decoders, inference workers, the Ray executor), plus ``metrics`` (per-source
counters), ``interrupts`` (signals deferred during writes) and ``inputs`` (what a run is given).
"""
