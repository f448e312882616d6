"""Person tracks: ``tracker`` (the online tracker, plain Python, run writer-side), ``store`` (offline
re-tracking of a store), ``evaluate`` (HOTA / IDF1 / MOTA with TrackEval)."""
