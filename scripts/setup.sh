#!/usr/bin/env bash
# Set up a fresh clone: system packages (GStreamer RTSP server, used by the live-stream tests; Chromium and
# chromedriver, used by the report page test),
# a virtual environment in .venv and the package with its dev extras. Idempotent.
#   bash scripts/setup.sh            # everything
#   SKIP_APT=1 bash scripts/setup.sh # no system packages (the RTSP and browser tests then skip)
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-tools gir1.2-gstreamer-1.0 python3-gi"
BROWSER_PACKAGES="chromium chromium-driver"

if [ "${SKIP_APT:-0}" != "1" ]; then
  if ! /usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer" 2>/dev/null; then
    SUDO=""
    if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $APT_PACKAGES
  fi
  # headless Chromium + its driver: the report page test loads the page in a real browser
  if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $BROWSER_PACKAGES
  fi
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# pip (not uv/poetry): torch 2.14.1 + torchvision 0.29.1 come from files already on this kind of machine.
.venv/bin/pip install -q -e '.[dev]'
# tracking metrics (TrackEval) and the ByteTrack baseline (roboflow trackers): --no-deps, because both
# declare opencv-python (GUI build), which must not be installed next to opencv-python-headless
.venv/bin/pip install -q --no-deps trackeval==1.3.0 trackers==2.6.1 supervision==0.31.2 pydeprecate==0.13.0 \
  defusedxml==0.7.1 tabulate==0.10.0
.venv/bin/python -c "import streamparse, torch, torchvision, av, ray, zarr, kornia; print('streamparse', streamparse.__version__, 'torch', torch.__version__, 'ready')"
