"""The landscape store: one HDF5 file per study, readable with plain h5py.

Layout (schema_version 2; the full specification is docs/store-spec.md):

    /                               schema="lossatlas", schema_version=2, encoding-type="store"
    /subjects/<subject>             encoding-type="subject", config (JSON), dim
        theta0, buffers0            the subject's starting parameters / floating buffers
        minima/<000>                encoding-type="minimum", complete: theta, buffers; attrs seed, recipe,
                                    metrics (JSON)
        samples/<kind>/<key>        encoding-type="sample": kind, config (JSON), prepared; the header arrays
            <part>                  encoding-type="part", complete (set last): one task's arrays and attrs
        surface                     encoding-type="surface": an imported loss surface, as a sample's header
        results/<method>/<key>      encoding-type="result": method, params, seed, versions, created,
                                    wall_time_s, analyzer (JSON: scope, views, metric metadata), complete;
                                    metrics/ (one float attribute each), arrays/ (datasets)
    /benchmarks/<name>              encoding-type="benchmark": record (JSON: the plan and the result keys of every run)

Every node carries ``encoding-type`` and ``encoding-version`` and its content is read by the reader
registered for that pair (only ``Store.tree`` and the raw ``Store.file`` bypass it); a store
holding a node this lossatlas does not know is refused when opened (``encoding``), except read only
with ``validate=False``, which ``lossatlas inspect`` uses to show it. The layers: ``durability``
(locks, disk space, atomic creation), ``integrity`` (checksums), ``encoding`` (the registry of node
readers and writers), ``records`` (what the rest of lossatlas sees), ``inspection`` (a store at a
glance, ``Store.summary``) and ``study`` (``Store``).
"""
from ..errors import StoreError
from .durability import _HELD as _HELD  # the locks this process holds (tests read it)
from .durability import fcntl as fcntl  # the module taking them (tests patch it)
from .encoding import SCHEMA, SCHEMA_VERSION
from .records import Minimum, Part, Result, SubjectRecord, minimum_part
from .durability import StoreLocked
from .study import SampleHandle, Store, read_while_written, remove_if_empty
from .study import _check_name as _check_name  # the harness checks subject names before a run writes them

__all__ = ["SCHEMA", "SCHEMA_VERSION", "Minimum", "Part", "Result", "SampleHandle", "Store", "StoreError",
           "StoreLocked", "SubjectRecord", "minimum_part", "read_while_written", "remove_if_empty"]
