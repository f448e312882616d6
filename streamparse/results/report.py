"""``streamparse report``: one self-contained static HTML page per source (no server, no external file).

Sections: a summary table; people on screen over time; with tracks (schema v2) an on-screen timeline
per track, part-area timelines per track and a track table with thumbnails and mean part colours; a
short overlay clip (H.264 MP4 as a base64 data URI in a ``<video>`` element). Plots are matplotlib PNGs
embedded as base64. Schema-v1 stores get the per-frame sections and a note on what needs v2.
"""

from __future__ import annotations

import base64
import html
import io
import os
import tempfile
from pathlib import Path

import numpy as np

MAX_TRACK_PLOTS = 12
V1_MAPS_LIMIT = 2000  # v1: per-frame part areas decoded from the maps only up to this many frames


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img_tag(uri: str, alt: str, cls: str = "plot") -> str:
    return f'<img class="{cls}" alt="{html.escape(alt)}" src="{uri}">'


def _fig(w=9.0, h=2.6):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h))


def people_plot(ft) -> str:
    fig = _fig()
    ax = fig.add_subplot()
    ax.step(ft["time"], ft["people"], where="post", color="#1f77b4")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("people")
    ax.set_title("People on screen")
    ax.grid(alpha=0.3)
    return _png(fig)


def timeline_plot(res, source, tracks) -> str:
    df = res.instances(source)
    df = df[df["track"].notna()]
    tm = res.frames_table(source)["time"].to_numpy()
    step = float(np.median(np.diff(tm))) if len(tm) > 1 else 0.1
    ids = tracks["track"].tolist()
    fig = _fig(9.0, max(1.6, 0.28 * len(ids) + 0.9))
    ax = fig.add_subplot()
    from streamparse.results.overlay import track_colours

    lut = track_colours()
    for y, tr in enumerate(ids):
        t = np.sort(df.loc[df["track"] == tr, "time"].to_numpy())
        if not len(t):
            continue
        breaks = np.flatnonzero(np.diff(t) > 1.5 * step)
        starts, ends = np.r_[t[0], t[breaks + 1]], np.r_[t[breaks], t[-1]]
        ax.broken_barh(list(zip(starts, ends - starts + step)), (y - 0.4, 0.8), color=lut[int(tr) % len(lut)] / 255)
    ax.set_yticks(range(len(ids)), [f"#{t}" for t in ids])
    ax.set_xlabel("time (s)")
    ax.set_title("On screen, per track")
    ax.invert_yaxis()
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def part_area_plots(res, source, track_ids) -> list[tuple[int, str]]:
    pa = res.part_areas(source, by="track", tracks=track_ids)
    pal = res.palette / 255
    names = res.class_names
    used = [i for i in range(pa.sizes["part"]) if int(pa[:, :, i].sum()) > 0]
    out = []
    t = pa["time"].values
    for j, tr in enumerate(pa["track"].values):
        fig = _fig(9.0, 2.0)
        ax = fig.add_subplot()
        v = pa.values[:, j, used].T.astype(float)
        ax.stackplot(t, v, colors=[pal[i + 1] for i in used], labels=[names[i + 1] for i in used], step="post")
        ax.set_title(f"Track #{int(tr)}: part areas (pixels)")
        ax.set_xlabel("time (s)")
        ax.set_xlim(t[0] if len(t) else 0, t[-1] if len(t) else 1)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
        out.append((int(tr), _png(fig)))
    return out


def frame_part_plot(area) -> str:
    fig = _fig()
    ax = fig.add_subplot()
    names = list(area["part"].values)
    v = area.values.T.astype(float)
    keep = v.sum(axis=1) > 0
    ax.stackplot(area["time"].values, v[keep], labels=[n for n, k in zip(names, keep) if k], step="post")
    ax.set_title("Part areas, all people (pixels)")
    ax.set_xlabel("time (s)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    return _png(fig)


def thumbnails(res, source, video, tracks, ov) -> dict[int, str]:
    """Track id -> PNG data URI: the person at the frame where it is largest, overlay drawn, 96 px high."""
    import cv2
    from PIL import Image

    from streamparse.results.video import decode_rows

    df = res.instances(source)
    df = df[df["track"].notna()]
    best = df.loc[df.groupby("track")["area"].idxmax()] if len(df) else df
    best = best[best["track"].isin(tracks["track"])]
    ft = res.frames_table(source)
    row_of = {int(f): i for i, f in enumerate(ft["frame"])}
    want: dict[int, list] = {}
    for r in best.itertuples():
        want.setdefault(row_of[int(r.frame)], []).append(r)
    out = {}
    maps = {f.row: f for f in res.iter_frames(source, sorted(want))}
    for row, rgb in decode_rows(res, source, video, sorted(want)):
        f = maps[row]
        drawn = ov.draw(rgb, f.part, f.instance)
        H, W = f.part.shape
        for r in want[row]:
            m = max(2, int(0.08 * max(r.x1 - r.x0, r.y1 - r.y0)))
            crop = drawn[max(0, r.y0 - m):min(H, r.y1 + m), max(0, r.x0 - m):min(W, r.x1 + m)]
            if not crop.size:
                continue
            h = 96
            crop = cv2.resize(crop, (max(1, int(round(crop.shape[1] * h / crop.shape[0]))), h), interpolation=cv2.INTER_AREA)
            buf = io.BytesIO()
            Image.fromarray(crop).save(buf, format="PNG")
            out[int(r.track)] = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return out


def overlay_clip(res, source, video, seconds: float, max_width: int = 480) -> tuple[str, dict]:
    from streamparse.results.video import render_video

    tm = res.frames_table(source)["time"].to_numpy()
    start = float(tm[0])
    with tempfile.TemporaryDirectory(prefix="sp-report-") as d:
        p = Path(d) / "clip.mp4"
        info = render_video(res, source, video, p, start=start, end=start + seconds, legend=True, max_width=max_width,
                            crf=28)
        data = p.read_bytes()
    return "data:video/mp4;base64," + base64.b64encode(data).decode("ascii"), info


_CSS = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1100px;color:#222}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
img.plot{max-width:100%}.sw{display:inline-block;width:12px;height:12px;border:1px solid #999;margin-right:2px}
.note{background:#fff6dd;padding:8px;border-left:4px solid #e0b000}video{max-width:100%;background:#000}"""


def build_report(res, source: str, video: str | Path, out: str | Path, *, clip_seconds: float = 5.0,
                 max_tracks: int = MAX_TRACK_PLOTS) -> dict:
    """Write the report page of ``source`` to ``out`` (via ``out.partial``; the caller checked ``out``)."""
    from streamparse.store.outputs import generator_mark
    from streamparse.results.overlay import Overlay
    from streamparse.results.summary import summarize

    from streamparse.results.video import check_video

    check_video(res, source, video)  # refuse a wrong video before any work
    summ = summarize(res)
    s = summ["sources"][source]
    ft = res.frames_table(source)
    esc = html.escape
    rows = [("store", res.path), ("source", source), ("uri", s["uri"]), ("schema", f"v{res.schema_version}"),
            ("model", summ["model_name"]), ("checkpoint sha256", (summ["checkpoint_sha256"] or "none")[:16]),
            ("frames", s["frames"]), ("duration", f"{s['duration_s']:.2f} s"), ("size", f"{s['width']}x{s['height']}"),
            ("state", s["state"]), ("dropped", s["dropped"]), ("segments", s["segments"]),
            ("people per frame (min/median/max)", "-" if not s["people_per_frame"] else
             "{min}/{median:g}/{max}".format(**s["people_per_frame"])),
            ("detections", s["instances"]), ("tracks", s["tracks"] if s["tracks"] is not None else "n/a (schema v1)")]
    parts = [f"<h1>streamparse report: {esc(source)}</h1>", "<h2>Summary</h2><table>"]
    parts += [f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>" for k, v in rows] + ["</table>"]
    clip_uri, clip = overlay_clip(res, source, video, clip_seconds)
    parts.append(f"<h2>Overlay ({clip['frames']} frames from the start)</h2>"
                 f'<video id="overlay" controls muted playsinline preload="auto" src="{clip_uri}"></video>')
    parts += ["<h2>People on screen</h2>", _img_tag(people_plot(ft), "people on screen over time")]
    n_tracks = 0
    if res.schema_version >= 2:
        tracks = res.tracks(source).sort_values("frames", ascending=False, kind="stable")
        n_tracks = len(tracks)
        shown = tracks.head(max_tracks).sort_values("track")
        if len(shown):
            parts += ["<h2>Tracks on screen</h2>", _img_tag(timeline_plot(res, source, shown), "track timeline")]
            ov = Overlay(res.palette)
            thumbs = thumbnails(res, source, video, shown, ov)
            parts.append(f"<h2>Tracks ({len(shown)} of {n_tracks}, longest first)</h2><table><tr><th>track</th><th>person</th>"
                         "<th>first - last (s)</th><th>frames</th><th>mean area</th><th>largest parts</th></tr>")
            for r in shown.itertuples():
                sw = "".join(f'<span class="sw" style="background:{c}"></span>{esc(p)} ' for p, c in zip(r.top_parts, r.top_colours))
                th = _img_tag(thumbs[r.track], f"track {r.track}", "thumb") if r.track in thumbs else ""
                parts.append(f"<tr><td>#{r.track}</td><td>{th}</td><td>{r.first_time:.2f} - {r.last_time:.2f}</td>"
                             f"<td>{r.frames}</td><td>{r.mean_area:.0f}</td><td>{sw}</td></tr>")
            parts.append("</table><h2>Part areas per track</h2>")
            parts += [_img_tag(uri, f"part areas of track {tr}") for tr, uri in part_area_plots(res, source, shown["track"].tolist())]
    else:
        parts.append('<p class="note">Schema v1 store: no tracks, so no per-track timelines, thumbnails or part '
                     "areas (they need schema v2).</p>")
        if len(ft) <= V1_MAPS_LIMIT and len(ft):
            parts += ["<h2>Part areas (from the label maps)</h2>",
                      _img_tag(frame_part_plot(res.part_areas(source, by="frame", from_maps=True)), "part areas")]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta name="generator" content="{esc(generator_mark())}">'
            f"<title>streamparse report: {esc(source)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"out": str(out), "bytes": len(page), "tracks": n_tracks, "clip_frames": clip["frames"]}
