"""The driver loop without Ray: the plain-Python scheduler with the in-process executor, real sources
(PyAV files; a scripted source for live timing), a real predictor and real zarr stores."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from zarr.storage import LocalStore

from faults import FaultyStore
from streamparse.store.outputs import RESERVE_NAME
from streamparse.engine.factory import build_predictor
from streamparse.config import load_config
from streamparse.engine.decoders import DecoderCore, InProcessExecutor
from streamparse.engine.scheduler import Scheduler, Slot, file_policy, live_policy
from streamparse.store.sink import ZarrSink, verify_store
from streamparse.sources import FileSource
from streamparse.structures import FrameBatch
from videos import make_video

TINY = ["model.name=uniparser_tiny", "model.input_size=[64,64]", "model.center_thresh=0.0", "model.max_instances=4",
        "model.mask_thresh=0.2", "model.merge_cos=1.01"]


@pytest.fixture(scope="module")
def predictor():
    return build_predictor(load_config(overrides=TINY), checkpoint="none", device="cpu")


class ScriptedSource:
    """The source protocol over a script of reads: a FrameBatch, or None ("nothing yet"); then the end."""

    kind = "live"

    def __init__(self, batches, sid="cam"):
        self.script = list(batches)
        self.source_id = sid
        self.closed = False

    def info(self, wait_s: float = 0.0) -> dict:
        b = next(x for x in self.script if x is not None)
        return {"uri": "rtsp://cam/x", "kind": "live", "source_id": self.source_id, "width": b.frames.shape[2],
                "height": b.frames.shape[1], "time_base": [1, 90000], "fps": 25.0}

    def read(self, n, timeout_s=None):
        return self.script.pop(0) if self.script else None

    def ended(self) -> bool:
        return not self.script

    def stats(self) -> dict:
        return {"dropped": {"drop_oldest": 3}, "reconnects": 1, "segments": 2, "errors": 0}

    def close(self) -> None:
        self.closed = True


def live_batch(idx, h=48, w=64):
    rng = np.random.default_rng(idx[0])
    n = len(idx)
    return FrameBatch(rng.integers(0, 255, (n, h, w, 3), dtype=np.uint8), idx, np.asarray(idx) * 3600,
                      np.asarray(idx) * 0.04, np.full(n, 1e9), np.zeros(n, np.uint16), (1, 90000), "cam")


class Shuffled(InProcessExecutor):
    """Inference results become ready in reverse order of submission (as a pool of workers may return them)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.held = []

    def wait(self, handles, timeout_s):
        infer = [h for h in handles if getattr(h, "infer", False)]
        other = [h for h in handles if not getattr(h, "infer", False)]
        if other:
            return other
        return infer[::-1][:1]

    def infer(self, batch):
        h = super().infer(batch)
        h.infer = True
        return h


def run_store(path, slots, executor, chunk=4, store=None, commit_frames=0):
    class_names = executor.predictor.class_names
    with ZarrSink(path, root_attrs={"model_name": "uniparser_tiny"}, chunk_frames=chunk, store=store,
                  commit_frames=commit_frames) as sink:
        def open_writer(s):
            s.writer = sink.source(s.sid, s.info, (s.info["height"], s.info["width"]), class_names,
                                   embedding_dim=executor.predictor.embedding_dim)
            s.next_seq = s.writer.next_seq

        sched = Scheduler(slots, executor, open_writer=open_writer)
        sched.start()
        sched.run()
    return sched


def test_file_source_in_process_equals_the_batched_model_api(tmp_path, predictor):
    video = make_video(tmp_path / "clip.mp4", n=14, h=48, w=64)
    ex = InProcessExecutor(lambda s: FileSource(s.uri, source_id=s.sid), predictor, batch_size=4)
    run_store(tmp_path / "o.zarr", [Slot(uri=str(video), sid="clip", policy=file_policy(4))], ex)
    g = zarr.open_group(str(tmp_path / "o.zarr" / "clip"), mode="r")
    with FileSource(video) as src:
        ref = [p for b in src.batches(4) for p in predictor.predict(b.frames)]
    assert g["frame_index"][:].tolist() == list(range(14))
    for t, r in enumerate(ref):
        np.testing.assert_array_equal(g["part"][t], r.part)
        np.testing.assert_array_equal(g["instance"][t], r.instance)
    st = dict(g.attrs)["status"]
    assert st["state"] == "complete" and st["complete"] and st["frames_written"] == 14
    assert sum(r.num_instances for r in ref) == st["instances_written"] > 0


def test_results_out_of_order_are_written_in_order(tmp_path, predictor):
    video = make_video(tmp_path / "clip.mp4", n=20, h=48, w=64)
    a = tmp_path / "a.zarr"
    b = tmp_path / "b.zarr"
    run_store(a, [Slot(uri=str(video), sid="clip", policy=file_policy(4))],
              InProcessExecutor(lambda s: FileSource(s.uri, source_id=s.sid), predictor, batch_size=3))
    run_store(b, [Slot(uri=str(video), sid="clip", policy=file_policy(4))],
              Shuffled(lambda s: FileSource(s.uri, source_id=s.sid), predictor, batch_size=3))
    ga, gb = zarr.open_group(str(a / "clip"), mode="r"), zarr.open_group(str(b / "clip"), mode="r")
    for name in ("part", "instance", "frame_index", "inst_offset", "inst_score"):
        np.testing.assert_array_equal(ga[name][:], gb[name][:])


def test_live_policy_skips_empty_reads_and_records_drops(tmp_path, predictor):
    script = [None, live_batch([0, 1]), None, None, live_batch([5, 6, 7]), live_batch([9])]  # gaps = dropped frames
    src = ScriptedSource(script)
    ex = InProcessExecutor(lambda s: src, predictor, batch_size=4)
    sched = run_store(tmp_path / "o.zarr", [Slot(uri="rtsp://cam/x", sid="cam", policy=live_policy(2))], ex)
    g = zarr.open_group(str(tmp_path / "o.zarr" / "cam"), mode="r")
    assert g["frame_index"][:].tolist() == [0, 1, 5, 6, 7, 9]  # rows are not frame numbers for live
    st = dict(g.attrs)["status"]
    assert st["state"] == "ended" and st["complete"] and st["dropped"] == 3 and st["reconnects"] == 1
    assert sched.slots[0].metrics.summary()["dropped"] == {"drop_oldest": 3}


def test_a_live_source_writes_each_chunk_a_file_groups_them(tmp_path, predictor):
    """pipeline.commit_frames groups whole chunks into one write for files; a live source's writer writes
    each chunk once complete (a grouped write would hold up the loop that feeds the stream)."""
    video = make_video(tmp_path / "clip.mp4", n=20, h=48, w=64)
    cam = ScriptedSource([live_batch([0, 1, 2, 3]), live_batch([4, 5, 6, 7]), live_batch([8, 9, 10, 11])])
    ex = InProcessExecutor(lambda s: cam if s.sid == "cam" else FileSource(s.uri, source_id=s.sid), predictor,
                           batch_size=4)
    slots = [Slot(uri=str(video), sid="clip", policy=file_policy(4)),
             Slot(uri="rtsp://cam/x", sid="cam", policy=live_policy(2))]
    run_store(tmp_path / "o.zarr", slots, ex, chunk=4, commit_frames=16)
    assert slots[0].writer.commit_frames == 16 and slots[1].writer.commit_frames == 4
    rep = verify_store(tmp_path / "o.zarr")
    assert rep.ok and rep.sources["clip"].frames_written == 20 and rep.sources["cam"].frames_written == 12


def test_live_max_frames_stops_the_decoder():
    core = DecoderCore(ScriptedSource([live_batch([0, 1]), live_batch([2, 3]), live_batch([4, 5])]), batch_size=4,
                       batch_timeout_s=0.01, max_frames=4)
    got = [core.next() for _ in range(3)]
    assert [len(o["batch"]["frame_index"]) for o in got[:2]] == [2, 2]
    assert got[2]["batch"] is None and got[2]["end"]
    assert got[0]["stats"]["reconnects"] == 1  # live decoders report drops/reconnects with every batch


def test_a_failing_store_stops_one_source_and_the_other_completes(tmp_path, predictor):
    v1 = make_video(tmp_path / "one.mp4", n=16, h=48, w=64)
    v2 = make_video(tmp_path / "two.mp4", n=16, h=48, w=64)
    out = tmp_path / "o.zarr"

    class OnlyOneFails(FaultyStore):  # source one's writes fail (its volume is full); source two's go through
        async def set(self, key, value):
            if self.tripped and not key.startswith("one/"):
                await self._store.set(key, value)
                return
            await super().set(key, value)

    store = OnlyOneFails(LocalStore(str(out)), fail_on_chunk=2, match="one/part/c/", reserve=out / RESERVE_NAME)
    ex = InProcessExecutor(lambda s: FileSource(s.uri, source_id=s.sid), predictor, batch_size=4)
    slots = [Slot(uri=str(v1), sid="one", policy=file_policy(4)), Slot(uri=str(v2), sid="two", policy=file_policy(4))]
    run_store(out, slots, ex, store=store)
    rep = verify_store(out)
    assert rep.ok
    one, two = rep.sources["one"], rep.sources["two"]
    assert one.frames_written == 4 and one.state == "error"
    assert two.frames_written == 16 and two.state == "complete"
    assert "No space left" in " ".join(slots[0].errors) and not slots[1].errors


def test_interrupt_drains_what_is_in_flight(tmp_path, predictor):
    video = make_video(tmp_path / "clip.mp4", n=24, h=48, w=64)

    class Interrupting(Shuffled):
        def wait(self, handles, timeout_s):
            self.calls = getattr(self, "calls", 0) + 1
            if self.calls == 6:
                raise KeyboardInterrupt
            return super().wait(handles, timeout_s)

    ex = Interrupting(lambda s: FileSource(s.uri, source_id=s.sid), predictor, batch_size=2)
    out = tmp_path / "o.zarr"
    slots = [Slot(uri=str(video), sid="clip", policy=file_policy(4))]
    with ZarrSink(out, root_attrs={"model_name": "uniparser_tiny"}, chunk_frames=4) as sink:
        def open_writer(s):
            s.writer = sink.source(s.sid, s.info, (s.info["height"], s.info["width"]), predictor.class_names,
                                   embedding_dim=predictor.embedding_dim)

        sched = Scheduler(slots, ex, open_writer=open_writer)
        sched.start()
        with pytest.raises(KeyboardInterrupt):
            sched.run()
        in_flight = sum(n for _, _, n in sched.pending.values())
        before = slots[0].writer.committed
        sched.drain()
    st = dict(zarr.open_group(str(out / "clip"), mode="r").attrs)["status"]
    assert st["state"] == "interrupted" and st["frames_written"] >= before + in_flight > before
    assert verify_store(out).ok


def test_turns_run_one_at_a_time_a_first_batch_before_the_others():
    """``Turns`` (an inference actor's order): calls run one at a time on one thread; a source's first
    batch goes before the batches that arrived earlier, the others keep their arrival order; a call's
    error reaches its caller."""
    import threading
    import time

    from streamparse.engine.turns import Turns

    turns, order, running, threads_used = Turns(), [], [], set()
    release = threading.Event()

    def work(name):
        running.append(name)
        assert len(running) == 1  # never two at once
        threads_used.add(threading.get_ident())
        if name == "busy":
            release.wait(10)
        if name == "bad":
            running.remove(name)
            raise ValueError("a broken batch")
        order.append(name)
        running.remove(name)
        return name.upper()

    results, errors = {}, {}

    def call(name, first=False):
        try:
            results[name] = turns.run(work, name, first)
        except ValueError as exc:
            errors[name] = str(exc)

    threads = [threading.Thread(target=call, args=("busy",))]
    threads[0].start()
    while not running:
        time.sleep(0.001)
    for name, first in (("a", False), ("bad", False), ("b", False), ("new-video", True), ("c", False)):
        threads.append(threading.Thread(target=call, args=(name, first)))
        threads[-1].start()
        while len(turns._waiting) < len(threads) - 1:  # registered before the next one arrives
            time.sleep(0.001)
    release.set()
    for t in threads:
        t.join(10)
    assert order == ["busy", "new-video", "a", "b", "c"]
    assert results == {n: n.upper() for n in order} and errors == {"bad": "a broken batch"}
    assert len(threads_used) == 1


def test_the_first_batch_of_each_source_is_marked_for_the_actors(tmp_path, predictor):
    video = make_video(tmp_path / "clip.mp4", n=12, h=48, w=64)
    seen = []

    class Recording(InProcessExecutor):
        def infer(self, batch):
            seen.append(bool(batch.get("first", False)))
            return super().infer(batch)

    run_store(tmp_path / "o.zarr", [Slot(uri=str(video), sid="clip", policy=file_policy(4))],
              Recording(lambda s: FileSource(s.uri, source_id=s.sid), predictor, batch_size=4))
    assert seen == [True, False, False]


def test_a_files_first_batch_goes_to_inference_before_its_writer_opens(tmp_path, predictor):
    """A file's first batch is submitted, then its writer opens (the store's arrays are created while the
    network runs); a live source's writer opens first (its rows are numbered by the writer); a file whose
    store continues at another row than the source's first frame is an internal error, not a silent gap."""
    video = make_video(tmp_path / "clip.mp4", n=12, h=48, w=64)
    events = []

    class Recording(InProcessExecutor):
        def infer(self, batch):
            events.append(("infer", int(batch["frame_index"][0])))
            return super().infer(batch)

    def run(path, slots, ex):
        with ZarrSink(path, root_attrs={"model_name": "uniparser_tiny"}, chunk_frames=4) as sink:
            def open_writer(s):
                events.append(("writer", s.sid))
                s.writer = sink.source(s.sid, s.info, (s.info["height"], s.info["width"]), predictor.class_names,
                                       embedding_dim=predictor.embedding_dim)
                s.next_seq = s.writer.next_seq

            sched = Scheduler(slots, ex, open_writer=open_writer)
            sched.start()
            sched.run()

    run(tmp_path / "f.zarr", [Slot(uri=str(video), sid="clip", policy=file_policy(4))],
        Recording(lambda s: FileSource(s.uri, source_id=s.sid), predictor, batch_size=4))
    assert events == [("infer", 0), ("writer", "clip"), ("infer", 4), ("infer", 8)]
    g = zarr.open_group(str(tmp_path / "f.zarr" / "clip"), mode="r")
    assert g["frame_index"][:].tolist() == list(range(12)) and dict(g.attrs)["status"]["complete"]

    events.clear()
    script = [live_batch([0, 1]), live_batch([2, 3])]
    run(tmp_path / "l.zarr", [Slot(uri="rtsp://cam/x", sid="cam", policy=live_policy(4))],
        Recording(lambda s: ScriptedSource(script), predictor, batch_size=2))
    assert events[:2] == [("writer", "cam"), ("infer", 0)]

    events.clear()
    from streamparse.engine.scheduler import PipelineError

    with pytest.raises(PipelineError, match="the store continues at row 0, the source at frame 4"):
        run(tmp_path / "r.zarr", [Slot(uri=str(video), sid="clip", policy=file_policy(4), start_frame=4)],
            Recording(lambda s: FileSource(s.uri, source_id=s.sid, start_frame=4), predictor, batch_size=4))
