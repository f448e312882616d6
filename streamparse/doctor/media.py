"""Checks of the media stack: PyAV, the FFmpeg decoders a video archive needs, and the H.264
encoder ``streamparse render`` writes with (a real round trip through an in-memory MP4)."""

from __future__ import annotations

import io
from typing import Iterable

from streamparse.doctor.common import Check, _first_line, _pin_note

# Decoders that a video archive needs. AV1: FFmpeg's own "av1" decoder only drives hardware
# decoders, so a software one (dav1d or libaom) must be there.
DECODERS: list[tuple[str, tuple[str, ...]]] = [
    ("H.264", ("h264",)),
    ("HEVC", ("hevc",)),
    ("AV1", ("libdav1d", "libaom-av1")),
    ("VP9", ("vp9", "libvpx-vp9")),
]
RENDER_ENCODER = "libx264"  # what `streamparse render` encodes with (streamparse.results.video)
AV_FIX = "pip install --force-reinstall 'av==18.1.0' (the PyPI wheel bundles an FFmpeg with these codecs)"


def _codec(name: str, mode: str):
    """FFmpeg's codec ``name`` (``"r"`` decoder, ``"w"`` encoder) through PyAV, or None when absent."""
    import av

    try:
        return av.Codec(name, mode)
    except Exception:  # noqa: BLE001 - UnknownCodecError, or a build that lacks it
        return None


def _h264_roundtrip() -> str:
    """Encode 4 small frames with libx264 into an in-memory MP4 and decode them back; '' when fine."""
    import av
    import numpy as np

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as oc:
        st = oc.add_stream(RENDER_ENCODER, rate=25)
        st.width, st.height, st.pix_fmt = 64, 64, "yuv420p"
        for i in range(4):
            img = np.full((64, 64, 3), 40 * i, np.uint8)
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                oc.mux(pkt)
        for pkt in st.encode():
            oc.mux(pkt)
    buf.seek(0)
    with av.open(buf, "r") as ic:
        n = sum(1 for _ in ic.decode(video=0))
    return "" if n == 4 else f"decoded {n} of 4 frames"


def check_av(extra_decoders: Iterable[str] = ()) -> list[Check]:
    try:
        import av
    except Exception as exc:  # noqa: BLE001
        return [Check("pyav", False, f"cannot import av: {_first_line(exc)}", "pip install 'av==18.1.0'")]
    ffmpeg = getattr(av, "ffmpeg_version_info", "?")
    out = [Check("pyav", True, f"{av.__version__} (FFmpeg {ffmpeg})", _pin_note("av", av.__version__))]
    for label, names in DECODERS:
        found = [n for n in names if _codec(n, "r") is not None]
        if found:
            out.append(Check(f"decode {label}", True, f"decoder {found[0]}"))
        else:
            out.append(Check(f"decode {label}", False, f"FFmpeg has no {label} decoder ({' / '.join(names)})", AV_FIX))
    for name in extra_decoders:
        ok = _codec(name, "r") is not None
        out.append(Check(f"decode {name}", ok, f"decoder {name}" if ok else f"FFmpeg has no decoder named {name!r}",
                         "" if ok else f"install a PyAV/FFmpeg build with the {name} decoder"))
    name = "encode H.264 (render)"
    if _codec(RENDER_ENCODER, "w") is None:
        out.append(Check(name, False, f"FFmpeg has no {RENDER_ENCODER} encoder: `streamparse render` cannot write MP4s", AV_FIX))
    else:
        try:
            why = _h264_roundtrip()
        except Exception as exc:  # noqa: BLE001
            why = _first_line(exc)
        out.append(Check(name, not why, f"{RENDER_ENCODER}: 4 frames encoded and decoded back" if not why
                         else f"{RENDER_ENCODER} round trip failed: {why}", AV_FIX if why else ""))
    return out
