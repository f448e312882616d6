"""Scoring parsings: ``metrics`` (AP^p, AP^p_vol, PCP, mIoU) and ``predictions`` (saved predictions)."""
