"""A GStreamer RTSP server for tests, bound to 127.0.0.1 only.

Run with Debian's ``/usr/bin/python3`` (python3-gi is not in the venv)::

    /usr/bin/python3 streamparse/bench/gst_rtsp_server.py --port 0 --testsrc --width 160 --height 120 --fps 25
    /usr/bin/python3 streamparse/bench/gst_rtsp_server.py --port 8554 --file clip.mp4 --exit-on-eos

Prints ``READY <port>`` on stdout once it listens (``--port 0`` picks a free port), then serves
``rtsp://127.0.0.1:<port><mount>`` until SIGTERM/SIGINT (or, with ``--exit-on-eos``, until the
first client's media reaches the end of the file). ``--user/--password`` turn on basic auth.
Started and controlled by ``streamparse.bench.rtsp_server``.
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

HOST = "127.0.0.1"


def launch_line(args: argparse.Namespace) -> str:
    if args.file:
        loc = args.file.replace('"', '\\"')
        return (
            f'( filesrc location="{loc}" ! qtdemux ! h264parse config-interval=-1 '
            "! rtph264pay name=pay0 pt=96 )"
        )
    return (
        "( videotestsrc is-live=true pattern=ball ! "
        f"video/x-raw,width={args.width},height={args.height},framerate={args.fps}/1 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.fps} threads=1 "
        "! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 )"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--mount", default="/stream")
    p.add_argument("--file", default="")
    p.add_argument("--testsrc", action="store_true")
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--height", type=int, default=120)
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--exit-on-eos", action="store_true")
    p.add_argument("--user", default="")
    p.add_argument("--password", default="")
    args = p.parse_args(argv)
    if not args.file and not args.testsrc:
        p.error("give --file or --testsrc")

    Gst.init(None)
    loop = GLib.MainLoop()
    server = GstRtspServer.RTSPServer()
    server.set_address(HOST)
    server.set_service(str(args.port))

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args))
    factory.set_shared(False)
    if args.exit_on_eos:

        def on_configure(_factory, media):
            def on_unprepared(_media):
                # the file's media went away (EOS or client left): end the process so the client's
                # TCP connection closes, like a server that ends its stream
                GLib.timeout_add(200, loop.quit)

            def on_eos_probe(pad, info):
                if info.get_event() is not None and info.get_event().type == Gst.EventType.EOS:
                    GLib.timeout_add(500, loop.quit)
                return Gst.PadProbeReturn.OK

            element = media.get_element()
            pay = element.get_by_name("pay0")
            if pay is not None:
                pay.get_static_pad("src").add_probe(Gst.PadProbeType.EVENT_DOWNSTREAM, on_eos_probe)
            media.connect("unprepared", on_unprepared)

        factory.connect("media-configure", on_configure)

    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        server.set_auth(auth)
        perms = GstRtspServer.RTSPPermissions.new()
        perms.add_role_from_structure(
            Gst.Structure.new_from_string("user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true")
        )
        factory.set_permissions(perms)

    server.get_mount_points().add_factory(args.mount, factory)
    if server.attach(None) == 0:
        print(f"ERROR could not bind {HOST}:{args.port}", flush=True)
        return 2
    print(f"READY {server.get_bound_port()}", flush=True)

    def stop(*_):
        loop.quit()
        return GLib.SOURCE_REMOVE

    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, stop)
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT, stop)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
