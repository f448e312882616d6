"""Reading streamparse outputs in notebooks: ``open_result(store)`` -> ``Result`` (one store, local or an
fsspec URL) and ``open_archive(outdir)`` -> ``Archive`` (an archive OUTDIR: its index and a ``Result``
per video). Pandas / xarray views of committed rows only."""

from streamparse.results.archive import Archive, open_archive
from streamparse.results.store import Frame, Result, SchemaError, open_result

__all__ = ["open_result", "open_archive", "Result", "Archive", "Frame", "SchemaError"]
