"""The UniParser authors' checkpoints and protocol: ``convert`` (their checkpoints -> ours),
``mmdet_config`` (their config, read without executing it), ``preprocess`` (their preprocessing)."""
