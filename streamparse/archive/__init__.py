"""Archives: one store per video on a Ray cluster. ``outdir`` (the OUTDIR and its lock), ``index``
(``index.jsonl``: read and written here, also by ``streamparse.results.archive``), ``pool`` (the shared
inference actors), ``worker`` (one video, on a worker)."""
