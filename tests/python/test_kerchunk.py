"""Cross-checks of fedstac's Kerchunk references (generator/src/kerchunk).

Every netCDF file of the corpus is opened twice, through its references with
xarray's zarr engine (local-path URLs, so no server) and with the netCDF4
engine, and every variable must agree: same dims, dtype, bitwise-equal raw
values (decode_cf=False) and equal attributes. HDF5 chunk offsets and sizes
are checked against h5py's chunk_iter; combined datasets against xr.concat;
and Python kerchunk's own references get the same checks, for a count.
Edge cases (every HDF5 chunk index type, filters, compact, never written,
scalar, char, string, groups, CDF-1/2/5) are generated into a tempdir.

References come from the example binary `kerchunk_refs` (until the CLI has a
subcommand): $FEDSTAC_KERCHUNK_BIN, else `cargo build -p fedstac --example
kerchunk_refs` is run. Needs the packages of requirements-kerchunk.txt
(skipped without them):
    python3 -m venv .venv-kerchunk && .venv-kerchunk/bin/pip install -r tests/python/requirements-kerchunk.txt
    .venv-kerchunk/bin/python -m pytest tests/python/test_kerchunk.py -q
"""

import collections
import json
import math
import os
import posixpath
import subprocess
import warnings
from pathlib import Path
from urllib.parse import urlsplit

import pytest

np = pytest.importorskip("numpy")
xr = pytest.importorskip("xarray")
h5py = pytest.importorskip("h5py")
netCDF4 = pytest.importorskip("netCDF4")
pytest.importorskip("zarr")
pytest.importorskip("fsspec")

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "corpus" / "netcdf" / "mini-esgf-data" / "test_data"


def corpus_files():
    if not CORPUS.is_dir():
        return []
    # The pool/…/CMIP6 symlink repeats a tree: os.walk does not follow links.
    return sorted(str(Path(d) / f) for d, _, fs in os.walk(CORPUS) for f in fs if f.endswith(".nc"))


FILES = corpus_files()
needs_corpus = pytest.mark.skipif(not FILES, reason="../shared/corpus is missing")


@pytest.fixture(scope="session")
def refs_bin():
    env = os.environ.get("FEDSTAC_KERCHUNK_BIN")
    if env:
        return env
    subprocess.run(["cargo", "build", "-q", "-p", "fedstac", "--example", "kerchunk_refs"], cwd=REPO, check=True)
    meta = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=REPO, check=True,
                          capture_output=True, text=True)
    return str(Path(json.loads(meta.stdout)["target_directory"]) / "debug" / "examples" / "kerchunk_refs")


def make_refs(refs_bin, files, out_dir):
    """{path: refs dict or error string} for files, written by the binary."""
    subprocess.run([refs_bin, str(out_dir), *map(str, files)], check=True)
    out = {}
    for entry in json.loads((Path(out_dir) / "index.json").read_text()):
        out[entry["path"]] = entry.get("error") or json.loads((Path(out_dir) / entry["refs"]).read_text())
    return out


def combine(refs_bin, files, out):
    done = subprocess.run([refs_bin, "--combine", str(out), *map(str, files)], capture_output=True, text=True)
    if done.returncode:
        return done.stderr.strip()
    return json.loads(Path(out).read_text())


@pytest.fixture(scope="session")
def corpus_refs(refs_bin, tmp_path_factory):
    return make_refs(refs_bin, FILES, tmp_path_factory.mktemp("corpus-refs"))


class Served(dict):
    """A sidecar served over HTTP: its JSON (for the checks that read it)
    and how fsspec opens it (by URL, with the template override the item
    asset asks for)."""

    def __init__(self, url, dir_template=None):
        import requests
        super().__init__(requests.get(url, timeout=30).json())
        self.url = url
        self.overrides = {dir_template: url.rsplit("/", 1)[0]} if dir_template else None

    def storage_options(self):
        # zarr 3 opens the reference filesystem asynchronously; its HTTP target must be too.
        options = {"fo": self.url, "remote_options": {"asynchronous": True}}
        if self.overrides:
            options["template_overrides"] = self.overrides
        return options


def open_refs(refs, group=None, **kw):
    kw.setdefault("decode_cf", False)
    options = refs.storage_options() if isinstance(refs, Served) else {"fo": refs}
    # A group goes into the URL: with group=, zarr 3.1's FsspecStore lists "/grp"
    # on the reference filesystem and finds nothing (Python kerchunk's refs too).
    return xr.open_dataset(f"reference://{group or ''}", engine="zarr",
                           backend_kwargs={"consolidated": False, "storage_options": options}, **kw)


# ---- comparisons --------------------------------------------------------

def same_value(a, b):
    """Attribute equality that keeps types: text is text, integers are
    integers, floats are floats (NaN equals NaN)."""
    if isinstance(a, bytes):
        a = a.decode()
    if isinstance(a, np.ndarray) or isinstance(b, (list, tuple, np.ndarray)):
        a, b = np.atleast_1d(np.asarray(a)).ravel().tolist(), np.atleast_1d(np.asarray(b)).ravel().tolist()
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if isinstance(a, (float, np.floating)):
        if not isinstance(b, (float, np.floating)):
            return False
        return float(a) == float(b) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (int, np.integer)):
        return isinstance(b, (int, np.integer)) and int(a) == int(b)
    return a == b


def native(x):
    return x.astype(x.dtype.newbyteorder("=")) if x.dtype.byteorder not in "=|" else x


def same_array(a, b):
    if a.shape != b.shape:
        return f"shape {a.shape} != {b.shape}"
    if a.dtype.kind in "OUT" or b.dtype.kind in "OUT":
        sa = [s.decode() if isinstance(s, bytes) else str(s) for s in a.ravel().tolist()]
        sb = [s.decode() if isinstance(s, bytes) else str(s) for s in b.ravel().tolist()]
        return None if sa == sb else "strings differ"
    if (a.dtype.kind, a.dtype.itemsize) != (b.dtype.kind, b.dtype.itemsize):
        return f"dtype {a.dtype} != {b.dtype}"
    a, b = native(np.ascontiguousarray(a)), native(np.ascontiguousarray(b))
    return None if a.tobytes() == b.tobytes() else "values differ"


def missing_chunks(refs, var):
    """Whether the references leave chunks of var unwritten (fill value applies)."""
    meta = json.loads(refs["refs"][f"{var}/.zarray"])
    grid = math.prod(-(-s // c) for s, c in zip(meta["shape"], meta["chunks"])) if meta["shape"] else 1
    prefix = f"{var}/"
    have = sum(1 for k in refs["refs"] if k.startswith(prefix) and not k[len(prefix):].startswith(".")
               and "/" not in k[len(prefix):])
    return have < grid


def problems(path, refs, group=None):
    """Everything in which the references disagree with netCDF4's reading."""
    if isinstance(refs, str):
        return [f"no references: {refs}"]
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            zz = open_refs(refs, group)
        except Exception as e:  # noqa: BLE001 - a count of failures is the point
            return [f"references do not open: {type(e).__name__}: {e}"]
        nc = xr.open_dataset(path, engine="netcdf4", decode_cf=False, group=group)
        # Attributes from netCDF4 itself: xarray moves some (least_significant_digit) to encoding.
        root = netCDF4.Dataset(path)
        root.set_auto_maskandscale(False)
        raw = root[group] if group else root
        with nc, zz:
            if set(nc.variables) != set(zz.variables):
                out.append(f"variables {sorted(set(nc.variables) ^ set(zz.variables))} differ")
            gattrs = {k: raw.getncattr(k) for k in raw.ncattrs()}
            if set(gattrs) != set(zz.attrs):
                out.append(f"global attributes {sorted(set(gattrs) ^ set(zz.attrs))} differ")
            out += [f"global attribute {k}" for k in gattrs if k in zz.attrs and not same_value(gattrs[k], zz.attrs[k])]
            for name in sorted(set(nc.variables) & set(zz.variables)):
                a, b = nc[name], zz[name]
                rv = raw.variables[name]
                a_attrs = {k: rv.getncattr(k) for k in rv.ncattrs()}
                if a.dims != b.dims:
                    out.append(f"{name}: dims {a.dims} != {b.dims}")
                try:
                    diff = same_array(a.values, b.values)
                except Exception as e:  # noqa: BLE001
                    diff = f"unreadable: {type(e).__name__}: {e}"
                if diff:
                    out.append(f"{name}: {diff}")
                extra = set(b.attrs) - set(a_attrs)
                if extra == {"_FillValue"} and missing_chunks(refs, name if not group else f"{group}/{name}"):
                    extra = set()  # the documented case: unwritten chunks read as the file's fill value
                if extra or set(a_attrs) - set(b.attrs):
                    out.append(f"{name}: attributes {sorted(extra | (set(a_attrs) - set(b.attrs)))} differ")
                out += [f"{name}: attribute {k}: {a_attrs[k]!r} != {b.attrs[k]!r}"
                        for k in a_attrs if k in b.attrs and not same_value(a_attrs[k], b.attrs[k])]
        root.close()
    return out


# ---- the corpus ---------------------------------------------------------

@needs_corpus
def test_every_corpus_file_has_references(corpus_refs):
    failed = {p: r for p, r in corpus_refs.items() if isinstance(r, str)}
    assert len(corpus_refs) == len(FILES) == 274
    assert not failed


@needs_corpus
@pytest.mark.parametrize("path", FILES, ids=lambda p: str(Path(p).relative_to(CORPUS)))
def test_corpus_file_reads_as_netcdf4_does(path, corpus_refs):
    assert problems(path, corpus_refs[path]) == []


def h5_chunks(path):
    """{zarr array path: (chunks, {chunk index: (offset, size)})} from h5py."""
    out = {}

    def visit(name, obj):
        if not isinstance(obj, h5py.Dataset):
            return
        dsid = obj.id
        pl = dsid.get_create_plist()
        key = "/".join(p[len("_nc4_non_coord_"):] if p.startswith("_nc4_non_coord_") else p for p in name.split("/"))
        filters = [pl.get_filter(i)[0] for i in range(pl.get_nfilters())]
        strip = 4 if filters and filters[-1] == h5py.h5z.FILTER_FLETCHER32 else 0
        if pl.get_layout() == h5py.h5d.CHUNKED:
            got = {}
            masks = {}

            def record(c):  # returns None: anything else stops chunk_iter
                index = tuple(o // n for o, n in zip(c.chunk_offset, obj.chunks))
                got[index] = (c.byte_offset, c.size - strip)
                masks[index] = c.filter_mask
            dsid.chunk_iter(record)
            # A chunk that skipped a filter the others applied is re-encoded and inlined.
            common = min(masks.values(), default=0)
            out[key] = (list(obj.chunks), {k: v for k, v in got.items() if masks[k] == common})
            out[key + "#reencoded"] = len(got) - len(out[key][1])
        elif pl.get_layout() == h5py.h5d.CONTIGUOUS and dsid.get_offset() is not None:
            out[key] = (list(obj.shape) or None, {(0,) * max(obj.ndim, 1): (dsid.get_offset(), dsid.get_storage_size())})
    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return out


def check_chunk_offsets(path, refs):
    """Chunk refs equal h5py's offsets and sizes; inline chunks equal the file's bytes."""
    data = Path(path).read_bytes()
    checked = 0
    h5 = h5_chunks(path)
    for var, (chunks, expected) in ((k, v) for k, v in h5.items() if not k.endswith("#reencoded")):
        zkey = f"{var}/.zarray"
        if zkey not in refs["refs"]:
            continue  # a netCDF dimension without a variable
        meta = json.loads(refs["refs"][zkey])
        if meta["dtype"] == "|O" or (chunks is not None and meta["chunks"] != chunks):
            continue  # strings and small consolidated arrays are inlined values
        for index, (offset, size) in expected.items():
            ref = refs["refs"].get(f"{var}/" + ".".join(map(str, index)))
            assert ref is not None, f"{var}: chunk {index} missing"
            if isinstance(ref, list):
                assert ref[1:] == [offset, size], f"{var} chunk {index}"
            else:
                inline = __import__("base64").b64decode(ref[7:]) if ref.startswith("base64:") else ref.encode()
                assert inline == data[offset:offset + size], f"{var} chunk {index} inline bytes"
            checked += 1
        have = [k for k in refs["refs"] if k.startswith(f"{var}/") and not k.split("/")[-1].startswith(".")]
        reencoded = h5.get(var + "#reencoded", 0)
        assert len(have) == len(expected) + reencoded, f"{var}: {len(have)} chunk refs, h5py has {len(expected)}"
    return checked


@needs_corpus
def test_hdf5_chunk_offsets_equal_h5py(corpus_refs):
    hdf5 = [p for p in FILES if Path(p).read_bytes()[:4] == b"\x89HDF"]
    assert len(hdf5) == 169
    checked = sum(check_chunk_offsets(p, corpus_refs[p]) for p in hdf5)
    assert checked > 10000


def datasets_in_corpus():
    """Files of one variable in one directory, with more than one file."""
    groups = collections.defaultdict(list)
    for p in FILES:
        groups[(str(Path(p).parent), Path(p).name.split("_")[0])].append(p)
    return {k: v for k, v in sorted(groups.items()) if len(v) > 1}


def concat_problems(files, refs):
    """Combined references against xr.concat of the files along time."""
    if isinstance(refs, str):
        return [f"not combined: {refs}"]
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parts = [xr.open_dataset(f, engine="netcdf4", decode_cf=False) for f in files]
        parts.sort(key=lambda d: d.time.values[0] if len({d.time.attrs.get("units") for d in parts}) == 1 else 0)
        units = {d.time.attrs.get("units") for d in parts}
        if len(units) > 1:
            # Different units: compare decoded times, and raw values of everything else.
            decoded = [xr.decode_cf(d[["time"]], use_cftime=True) for d in parts]
            order = sorted(range(len(parts)), key=lambda i: decoded[i].time.values[0])
            parts = [parts[i] for i in order]
            expected_time = np.concatenate([decoded[i].time.values for i in order])
            got_time = xr.decode_cf(open_refs(refs)[["time"]], use_cftime=True).time.values
            if list(expected_time) != list(got_time):
                out.append("decoded times differ")
        expected = xr.concat(parts, dim="time", data_vars="minimal", coords="minimal", compat="override",
                             join="override", combine_attrs="override")
        got = open_refs(refs)
        for name in expected.variables:
            if name not in got.variables:
                out.append(f"{name} missing")
                continue
            if len(units) > 1 and "time" in expected[name].dims and name in ("time", expected.time.attrs.get("bounds")):
                continue  # re-expressed in the first file's units: compared decoded above
            diff = same_array(expected[name].values, got[name].values)
            if diff or expected[name].dims != got[name].dims:
                out.append(f"{name}: {diff or 'dims differ'}")
        for d in parts:
            d.close()
    return out


def overlapping(files):
    """Whether the files' time ranges overlap (a real quirk: HadGEM2-ES repeats Dec 2099)."""
    spans = []
    for f in files:
        with netCDF4.Dataset(f) as d:
            t = d["time"]
            values = netCDF4.num2date(t[:], t.units, getattr(t, "calendar", "standard"))
            spans.append((values[0], values[-1]))
    spans.sort()
    return any(a[1] >= b[0] for a, b in zip(spans, spans[1:]))


@needs_corpus
def test_combined_datasets_equal_xr_concat(refs_bin, tmp_path):
    results, refused = {}, []
    for (d, var), files in datasets_in_corpus().items():
        refs = combine(refs_bin, files, tmp_path / "combined.json")
        key = f"{Path(d).relative_to(CORPUS)}:{var}"
        if overlapping(files):
            assert isinstance(refs, str), key  # overlap (or, for the _zm file, other variables)
            refused.append(key)
            continue
        results[key] = concat_problems(files, refs)
    bad = {k: v for k, v in results.items() if v}
    print(f"\ncombined {len(results) - len(bad)} of {len(results)} multi-file datasets; refused (overlapping) {refused}")
    assert (len(results), len(refused)) == (27, 4)
    assert not bad


# ---- Python kerchunk, for a count ---------------------------------------

def kerchunk_refs(path):
    """Python kerchunk's references for one file, or its error."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if Path(path).read_bytes()[:3] == b"CDF":
                from kerchunk.netCDF3 import NetCDF3ToZarr
                return NetCDF3ToZarr(path).translate()
            from kerchunk.hdf import SingleHdf5ToZarr
            return SingleHdf5ToZarr(path).translate()
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"


@needs_corpus
def test_count_against_python_kerchunk(corpus_refs):
    pytest.importorskip("kerchunk")
    pytest.importorskip("scipy")
    # Every 5th file by default (kerchunk takes ~1 s a file); all with FEDSTAC_KERCHUNK_ALL=1.
    files = FILES if os.environ.get("FEDSTAC_KERCHUNK_ALL") else FILES[::5]
    ours = kerchunks = kerchunk_values = 0
    kinds = collections.Counter()
    for path in files:
        ours += not problems(path, corpus_refs[path])
        theirs = problems(path, kerchunk_refs(path))
        kerchunks += not theirs
        kerchunk_values += not [p for p in theirs if "attribute" not in p]
        kinds.update({p.split(": ", 1)[-1].split(" ")[0] if ": " in p else p.split(" ")[0] for p in theirs})
    print(f"\nfiles read exactly as netCDF4 does: fedstac {ours}/{len(files)}, Python kerchunk {kerchunks}/{len(files)} "
          f"(values and dims right: {kerchunk_values}); kerchunk's kinds of problems: {dict(kinds.most_common(8))}")
    assert ours == len(files)


# ---- generated edge cases -----------------------------------------------

def write_netcdf4(path):
    """netCDF-4 file with every variable kind fedstac handles."""
    rng = np.random.default_rng(0)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as d:
        d.createDimension("time", None)
        d.createDimension("x", 5)
        d.createDimension("nchar", 4)
        d.createDimension("unused", 3)  # a dimension without a variable
        d.createDimension("station", 3)
        d.createDimension("slen", 2)
        t = d.createVariable("time", "f8", ("time",))
        t.units, t.calendar = "days since 2000-01-01", "noleap"
        t[:] = np.arange(7) + 0.5
        d.createVariable("x", "i4", ("x",))[:] = np.arange(5)
        c = d.createVariable("contiguous", "i2", ("x",), contiguous=True)
        c[:] = [1, -2, 3, -4, 5]
        z = d.createVariable("zlib_shuffle_fletcher", "f4", ("time", "x"), zlib=True, complevel=4, shuffle=True,
                             fletcher32=True, chunksizes=(2, 5), fill_value=np.float32(np.nan))
        z[:] = rng.random((7, 5), dtype="f4")
        z[3, 2] = np.nan
        d.createVariable("never_written", "f8", ("time", "x"), chunksizes=(1, 5))
        d.createVariable("never_written_fill", "i4", ("x",), fill_value=-7, chunksizes=(5,))
        p = d.createVariable("partly_written", "f4", ("time", "x"), chunksizes=(1, 5), fill_value=np.float32(-1))
        p[0:2] = rng.random((2, 5), dtype="f4")
        d.createVariable("scalar", "f8")[...] = 3.25
        ch = d.createVariable("chars", "S1", ("x", "nchar"))
        ch[:] = netCDF4.stringtochar(np.array(["ab", "cdef", "", "g", "hijk"], "S4"))
        s = d.createVariable("strings", str, ("x",))
        s[:] = np.array(["α", "", "long string", "x", "y"], dtype=object)
        # Named like a dimension it is not the coordinate of: stored as _nc4_non_coord_unused.
        d.createVariable("unused", "f4", ("x",))[:] = np.arange(5, dtype="f4")
        # A multi-dimensional coordinate variable (_Netcdf4Coordinates).
        st = d.createVariable("station", "S1", ("station", "slen"))
        st[:] = netCDF4.stringtochar(np.array(["AB", "CD", "EF"], "S2"))
        d.createVariable("big_endian", "f8", ("x",), endian="big")[:] = np.linspace(0, 1, 5)
        d.setncattr("i8", np.int8(-5))
        d.setncattr("u16", np.uint16(65000))
        d.setncattr("i64", np.int64(2**40))
        d.setncattr("f32_nan", np.float32("nan"))
        d.setncattr("f64_list", np.array([1.5, 2.5]))
        d.setncattr("text", "with\nnewline and \"quotes\"")
        d.setncattr("empty", "")
        d.setncattr_string("string_list", ["a", "bc"])
        z.setncattr("valid_range", np.array([0, 1], "f4"))
        g = d.createGroup("grp")
        g.createDimension("y", 3)
        gv = g.createVariable("gv", "u1", ("y",))
        gv[:] = [1, 2, 3]
        gv.note = "in a group"
        g.createVariable("gx", "f8", ("x",), zlib=True)[:] = np.arange(5) * 2.0
        g.title = "group attribute"


def test_generated_netcdf4(refs_bin, tmp_path):
    path = tmp_path / "edge.nc"
    write_netcdf4(path)
    refs = make_refs(refs_bin, [path], tmp_path / "refs")[str(path)]
    assert not isinstance(refs, str), refs
    assert problems(str(path), refs) == []
    assert problems(str(path), refs, group="grp") == []
    zr = refs["refs"]
    assert "unused/.zarray" in zr and "_nc4_non_coord_unused/.zarray" not in zr
    assert json.loads(zr["station/.zattrs"])["_ARRAY_DIMENSIONS"] == ["station", "slen"]
    assert json.loads(zr["zlib_shuffle_fletcher/.zarray"])["fill_value"] == "NaN"
    assert not any(k.startswith("never_written/0") for k in zr)  # nothing to point at
    assert check_chunk_offsets(str(path), refs) > 0


def write_h5(path):
    """Each HDF5 chunk index type, compact, fletcher32 first, big-endian, a skipped filter."""
    # Over CONSOLIDATE_BYTES (64 KiB), so that chunks stay references.
    data = np.arange(200 * 100, dtype="i4").reshape(200, 100) % 1000
    with h5py.File(path, "w", libver="latest") as f:
        f.create_dataset("fixed_array", data=data, chunks=(40, 40))
        f.create_dataset("extensible_array", data=data, chunks=(20, 50), maxshape=(None, 100), compression="gzip")
        f.create_dataset("btree_v2", data=data, chunks=(40, 30), maxshape=(None, None), shuffle=True)
        f.create_dataset("single_chunk", data=data, chunks=(200, 100))
        f.create_dataset("single_chunk_filtered", data=data, chunks=(200, 100), compression="gzip")
        f.create_dataset("big_endian", data=np.linspace(0, 1, 10).astype(">f8"), chunks=(5,))
        f.create_dataset("contiguous", data=data)
        f.create_dataset("scalar", data=np.float32(2.5))
        for name, values, setup in [
            ("implicit", data, lambda p: (p.set_chunk((40, 40)), p.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY))),
            ("compact", data[:10, :10], lambda p: p.set_layout(h5py.h5d.COMPACT)),
            ("fletcher32_first", data, lambda p: (p.set_chunk((30, 50)), p.set_fletcher32(), p.set_deflate(5))),
            ("fletcher32_last", data, lambda p: (p.set_chunk((30, 50)), p.set_shuffle(), p.set_deflate(5), p.set_fletcher32())),
        ]:
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            setup(dcpl)
            h5py.h5d.create(f.id, name.encode(), h5py.h5t.STD_I32LE, h5py.h5s.create_simple(values.shape), dcpl=dcpl)
            f[name][...] = values
        # Chunk 1 written with deflate skipped (filter mask bit 1): its bytes are only shuffled.
        mixed = f.create_dataset("mixed_mask", data=data, chunks=(100, 100), shuffle=True, compression="gzip")
        raw = data[100:].tobytes()
        shuffled = bytes(raw[i * 4 + b] for b in range(4) for i in range(len(raw) // 4))
        mixed.id.write_direct_chunk((100, 0), shuffled, filter_mask=0b10)


def open_zarr(refs):
    zarr = pytest.importorskip("zarr")
    fsspec = pytest.importorskip("fsspec")
    return zarr.open_group(store=fsspec.get_mapper("reference://", fo=refs), mode="r", zarr_format=2)


def test_generated_hdf5_index_types(refs_bin, tmp_path):
    path = tmp_path / "index_types.h5"
    write_h5(path)
    refs = make_refs(refs_bin, [path], tmp_path / "refs")[str(path)]
    assert not isinstance(refs, str), refs
    group = open_zarr(refs)
    with h5py.File(path, "r") as f:
        kinds = set()
        for name, ds in f.items():
            kinds.add(ds.id.get_create_plist().get_layout())
            assert same_array(ds[()], group[name][()]) is None, name
        assert kinds == {h5py.h5d.CHUNKED, h5py.h5d.CONTIGUOUS, h5py.h5d.COMPACT}
    assert json.loads(refs["refs"]["fletcher32_first/.zarray"])["filters"][0] == {"id": "fletcher32"}
    assert "fletcher32" not in refs["refs"]["fletcher32_last/.zarray"]  # stripped from the chunk lengths
    assert check_chunk_offsets(str(path), refs) > 0


@pytest.mark.parametrize("codec,filter_id", [("lzf", "32000"), ("szip", "(szip)")])
def test_unsupported_filter_names_the_variable(refs_bin, tmp_path, codec, filter_id):
    if codec == "szip" and not h5py.h5z.filter_avail(h5py.h5z.FILTER_SZIP):
        pytest.skip("this h5py cannot write szip")
    path = tmp_path / f"{codec}.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("packed", data=np.arange(100), chunks=(10,), compression=codec)
        f.create_dataset("plain", data=np.arange(100), chunks=(10,), compression="gzip")
    refs = make_refs(refs_bin, [path], tmp_path / "refs")[str(path)]
    assert not isinstance(refs, str), refs  # the file's other variables are still referenced
    skipped = json.loads((tmp_path / "refs" / "index.json").read_text())[0]["skipped"]
    assert list(skipped) == ["packed"] and filter_id in skipped["packed"] and "no zarr codec" in skipped["packed"]
    assert "packed/.zarray" not in refs["refs"]
    assert same_array(open_zarr(refs)["plain"][()], np.arange(100)) is None


@pytest.mark.parametrize("fmt", ["NETCDF3_CLASSIC", "NETCDF3_64BIT_OFFSET", "NETCDF3_64BIT_DATA"])
def test_generated_classic(refs_bin, tmp_path, fmt):
    files = []
    for n_records, record_vars in [(4, "many"), (3, "one"), (0, "many")]:
        path = tmp_path / f"{fmt}-{n_records}-{record_vars}.nc"
        with netCDF4.Dataset(path, "w", format=fmt) as d:
            d.createDimension("time", None)
            d.createDimension("x", 3)
            d.createDimension("nchar", 5)
            t = d.createVariable("time", "f8", ("time",))
            t.units = "hours since 1990-01-01 00:00:00"
            t[:] = np.arange(n_records) * 6.0
            # A 2-byte record variable: padded to 4 bytes per record unless it is the only one.
            d.createVariable("short_rec", "i2", ("time",) if record_vars == "one" else ("time", "x"))[:] = \
                np.arange(n_records * (1 if record_vars == "one" else 3)).reshape((n_records,) + (() if record_vars == "one" else (3,)))
            if record_vars == "many":
                b = d.createVariable("byte_rec", "i1", ("time", "x"), fill_value=np.int8(-1))
                b[:] = np.arange(n_records * 3).reshape(n_records, 3) - 5
            d.createVariable("lat", "f4", ("x",))[:] = [-10.5, 0, 10.5]
            lab = d.createVariable("label", "S1", ("x", "nchar"))
            lab[:] = netCDF4.stringtochar(np.array(["one", "two", "three"], "S5"))
            d.createVariable("scalar", "i4")[...] = 42
            if fmt == "NETCDF3_64BIT_DATA":
                d.createVariable("u64", "u8", ("x",))[:] = [0, 2**63, 2**64 - 1]
                d.createVariable("i64", "i8", ("x",))[:] = [-(2**62), 0, 2**62]
                d.setncattr("u16", np.uint16(65535))
            d.setncattr("f32", np.float32(0.1))
            d.setncattr("ints", np.array([1, 2, 3], "i4"))
            d.setncattr("history", "made by the test")
        files.append(path)
    all_refs = make_refs(refs_bin, files, tmp_path / "refs")
    for path in files:
        assert problems(str(path), all_refs[str(path)]) == [], path.name


def write_series(path, times, units, chunk, x=4, dtype="f8"):
    with netCDF4.Dataset(path, "w", format="NETCDF4_CLASSIC") as d:
        d.createDimension("time", None)
        d.createDimension("x", x)
        d.createDimension("bnds", 2)
        t = d.createVariable("time", dtype, ("time",), chunksizes=(512,))
        t.units, t.calendar, t.bounds = units, "standard", "time_bnds"
        t[:] = times
        tb = d.createVariable("time_bnds", dtype, ("time", "bnds"), chunksizes=(1, 2))
        tb[:] = np.stack([np.asarray(times) - 0.5, np.asarray(times) + 0.5], axis=1)
        d.createVariable("x_bnds", "f8", ("x", "bnds"))[:] = np.arange(2 * x).reshape(x, 2)
        d.createVariable("height", "f8")[...] = 2.0
        v = d.createVariable("tas", "f4", ("time", "x"), zlib=True, chunksizes=(chunk, x), fill_value=np.float32(1e20))
        v[:] = np.arange(len(times) * x, dtype="f4").reshape(len(times), x) + times[0]


def test_generated_combinations(refs_bin, tmp_path):
    a, b, c = tmp_path / "a.nc", tmp_path / "b.nc", tmp_path / "c.nc"
    # 12 + 12 + 3 steps in time chunks of 12, the second file in other units: combines.
    write_series(a, np.arange(12) + 0.5, "days since 2000-01-01", 12)
    write_series(b, np.arange(12) + 0.5, "days since 2000-01-13", 12)
    write_series(c, np.arange(3) + 0.5, "hours since 2000-01-25", 12)  # hours: 0.5 h steps
    refs = combine(refs_bin, [c, a, b], tmp_path / "abc.json")  # any order: sorted by time
    assert not isinstance(refs, str), refs
    assert concat_problems([a, b, c], refs) == []
    got = open_refs(refs)
    assert got.time.attrs["units"] == "days since 2000-01-01" and got.time.shape == (27,)
    assert got.x_bnds.dims == ("x", "bnds") and got.height.dims == ()
    # 3 + 12 in chunks of 12: the first file's partial chunk would sit inside the array.
    d, e = tmp_path / "d.nc", tmp_path / "e.nc"
    write_series(d, np.arange(3) + 0.5, "days since 2000-01-01", 12)
    write_series(e, np.arange(12) + 3.5, "days since 2000-01-01", 12)
    refused = combine(refs_bin, [d, e], tmp_path / "de.json")
    assert isinstance(refused, str) and "not a whole number of time chunks" in refused
    # Unequal chunk grids beyond time, overlapping times: refused.
    f = tmp_path / "f.nc"
    write_series(f, np.arange(12) + 24.5, "days since 2000-01-01", 6)
    assert "zarr needs one chunk grid" in combine(refs_bin, [a, f], tmp_path / "af.json")
    assert "overlap in time" in combine(refs_bin, [a, a], tmp_path / "aa.json")
    # Integer time that the first file's units cannot hold exactly.
    g, h = tmp_path / "g.nc", tmp_path / "h.nc"
    write_series(g, np.arange(3), "days since 2000-01-01", 1, dtype="i4")
    write_series(h, np.arange(3), "hours since 2000-01-10 06:00", 1, dtype="i4")
    assert "not whole numbers" in combine(refs_bin, [g, h], tmp_path / "gh.json")


# ---- sidecars in built sites, served by nginx ---------------------------
#
# `fedstac build` writes a sidecar per file and a combined one per multi-file
# dataset (generator/src/sidecars.rs). Two sites of the corpus's CMIP6 tree
# are built, one per URL mode that works over HTTP, and served with the
# archive by a real nginx: every sidecar is opened by URL through fsspec's
# reference:// filesystem and must read as the original files do.

CMIP6_ROOT = CORPUS / "badc" / "cmip6" / "data"


@pytest.fixture(scope="session")
def fedstac_bin():
    env = os.environ.get("FEDSTAC_BIN")
    if env:
        return env
    subprocess.run(["cargo", "build", "-q", "-p", "fedstac", "--bin", "fedstac"], cwd=REPO, check=True)
    meta = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=REPO, check=True,
                          capture_output=True, text=True)
    return str(Path(json.loads(meta.stdout)["target_directory"]) / "debug" / "fedstac")


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nginx(prefix, root, port):
    import time
    import urllib.request
    nginx = next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx") if Path(p).is_file()), None)
    if nginx is None:
        pytest.skip("nginx is not installed (scripts/setup.sh installs it)")
    prefix.mkdir(parents=True, exist_ok=True)
    # As root the workers would switch to nobody, who cannot read a private tempdir.
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = " ".join(f"{k}_temp_path {prefix}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (prefix / "nginx.conf").write_text(
        f"worker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log warn;\n{user}"
        "events { worker_connections 256; }\n"
        "http {\n  types { application/json json; text/html html; application/x-netcdf nc; }\n"
        f"  default_type application/octet-stream;\n  access_log off;\n  {temp}\n"
        f"  server {{ listen 127.0.0.1:{port}; root {root}; }}\n}}\n")
    proc = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log"),
                             "-g", "daemon off;"])
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
            break
        except urllib.error.HTTPError:
            break  # 403/404 for the root: nginx answers
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError(f"nginx did not start: {(prefix / 'error.log').read_text() if (prefix / 'error.log').exists() else ''}")
    return proc


@pytest.fixture(scope="module")
def served(fedstac_bin, tmp_path_factory):
    if not FILES:
        pytest.skip("../shared/corpus is missing")
    pytest.importorskip("aiohttp")
    pytest.importorskip("requests")
    tmp = tmp_path_factory.mktemp("served")
    www = tmp / "www"
    www.mkdir()
    # The archive beside the sites, as one server serves both (nginx follows the link).
    (www / "archive").symlink_to(CORPUS)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    summaries = {}
    for mode in ("relative", "public"):
        config = tmp / f"{mode}.yaml"
        config.write_text(f"""
site: {{name: ceda, title: "kerchunk {mode}", url: "{base}/{mode}/"}}
roots:
  - path: "{www / 'archive' / 'badc' / 'cmip6' / 'data'}"
    recipe: cmip6
    data_url: "{base}/archive/badc/cmip6/data/"
    kerchunk: {{enabled: true, urls: {mode}}}
output: "{www / mode}"
cache: "{tmp / ('cache-' + mode)}"
checksums: false
""")
        subprocess.run([fedstac_bin, "--quiet", "build", "-c", str(config)], check=True)
        summaries[mode] = json.loads((tmp / f"cache-{mode}" / "last-build.json").read_text())
    proc = start_nginx(tmp / "nginx", www, port)
    try:
        yield {"base": base, "www": www, "summaries": summaries}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def site_items(site):
    """(item JSON path, item) for every item of a built site."""
    out = []
    for p in sorted(site.rglob("*.json")):
        if "kerchunk" in p.relative_to(site).parts[:1] or p.name == "fedstac-manifest.json":
            continue
        doc = json.loads(p.read_text())
        if doc.get("type") == "Feature":
            out.append((p, doc))
    return out


def sidecars_of(item):
    return {k: a for k, a in item["assets"].items() if "kerchunk" in a.get("roles", [])}


def local_file(asset_href):
    """The corpus file behind a data asset's public href (.../archive/<path under test_data>)."""
    return CORPUS / asset_href.split("/archive/", 1)[1]


def served_url(served, mode, item_path, href):
    from urllib.parse import urljoin
    rel = item_path.relative_to(served["www"]).as_posix()
    return urljoin(f"{served['base']}/{rel}", href)


def test_site_sidecars_open_over_http(served):
    """Every sidecar of the relative-URL site, opened over HTTP by URL, reads as netCDF4 reads the files."""
    site = served["www"] / "relative"
    items = site_items(site)
    assert len(items) == 62
    checked_files = checked_combined = offsets = 0
    bad = {}
    for item_path, item in items:
        data = {k: a for k, a in item["assets"].items() if k not in sidecars_of(item)}
        for key, asset in sidecars_of(item).items():
            assert asset["protocol"] == "kerchunk" and asset["type"] == "application/json"
            assert asset["fedstac:dir_template"] == "u"
            refs = Served(served_url(served, "relative", item_path, asset["href"]), "u")
            files = sorted(str(local_file(a["href"])) for a in data.values())
            if key == "kerchunk" and len(files) > 1:
                problems_found = concat_problems(files, refs)
                checked_combined += 1
            else:
                path = str(local_file(data[key.removeprefix("kerchunk_")]["href"])) if key != "kerchunk" else files[0]
                problems_found = problems(path, refs)
                # Every chunk URL is the file's, as served beside the site.
                for v in refs["refs"].values():
                    if isinstance(v, list):
                        url = urlsplit(v[0].replace("{{u}}", refs.overrides["u"]))
                        assert posixpath.normpath(url.path) == "/archive/" + Path(path).relative_to(CORPUS).as_posix(), v[0]
                if Path(path).read_bytes()[:4] == b"\x89HDF":
                    offsets += check_chunk_offsets(path, refs)
                checked_files += 1
            if problems_found:
                bad[f"{item['id']}:{key}"] = problems_found
    print(f"\nover HTTP: {checked_files} file sidecars, {checked_combined} combined; {offsets} chunk offsets equal h5py's")
    assert not bad, bad
    assert checked_files == 132 and checked_combined == 11
    summary = served["summaries"]["relative"]["kerchunk"]
    assert (summary["files"], summary["combined"], summary["failed"], summary["unreferenced_variables"]) == (132, 11, 0, 0)


def test_public_urls_name_the_data_assets(served):
    """The public-URL site: the same references, every chunk at its data asset's public href."""
    site = served["www"] / "public"
    relative = dict((p.relative_to(served["www"] / "relative"), i) for p, i in site_items(served["www"] / "relative"))
    for item_path, item in site_items(site):
        hrefs = {a["href"] for a in item["assets"].values() if "kerchunk" not in a.get("roles", [])}
        for key, asset in sidecars_of(item).items():
            assert "fedstac:dir_template" not in asset
            refs = json.loads((item_path.parent / asset["href"]).resolve().read_text())
            assert "templates" not in refs
            urls = {v[0] for v in refs["refs"].values() if isinstance(v, list)}
            assert urls <= hrefs, (item["id"], key, urls - hrefs)
            twin = relative[item_path.relative_to(site)]
            other = json.loads((served["www"] / "relative" / item_path.relative_to(site)).parent.joinpath(
                twin["assets"][key]["href"]).resolve().read_text())
            assert set(other["refs"]) == set(refs["refs"]), "both modes reference the same chunks"
    # One multi-file dataset opened over HTTP through public URLs.
    item_path, item = next((p, i) for p, i in site_items(site) if "siconc" in i["id"] and "SAM0-UNICON" in i["id"])
    files = sorted(str(local_file(a["href"])) for k, a in item["assets"].items() if k not in sidecars_of(item))
    refs = Served(served_url(served, "public", item_path, item["assets"]["kerchunk"]["href"]))
    assert concat_problems(files, refs) == []


def snippet_of(html):
    """The text of the item page's Python snippet (tags dropped, entities decoded)."""
    import html as htmllib
    import re
    code = re.search(r'<code class="kerchunk-snippet">(.*?)</code>', html, re.S)
    assert code, "no snippet on the page"
    return htmllib.unescape(re.sub(r"<[^>]+>", "", code.group(1)))


@pytest.mark.parametrize("mode", ["relative", "public"])
def test_item_page_snippet_runs(served, mode):
    import contextlib
    import io
    import requests
    site = served["www"] / mode
    item_path, item = next((p, i) for p, i in site_items(site) if "siconc" in i["id"] and "SAM0-UNICON" in i["id"])
    page = requests.get(served_url(served, mode, item_path.with_suffix(".html"), item_path.with_suffix(".html").name), timeout=30)
    assert page.status_code == 200
    code = snippet_of(page.text)
    assert f"{served['base']}/{mode}/kerchunk/" in code
    namespace = {}
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(compile(code, "snippet", "exec"), namespace)  # noqa: S102 - the point is that it runs
    ds = namespace["ds"]
    files = sorted(local_file(a["href"]) for k, a in item["assets"].items() if k not in sidecars_of(item))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parts = [xr.open_dataset(f, engine="netcdf4") for f in files]
        expected = xr.concat(parts, dim="time", data_vars="minimal", coords="minimal", compat="override",
                             join="override", combine_attrs="override").sortby("time")
        assert ds.sizes["time"] == expected.sizes["time"] and "siconc" in out.getvalue()
        np.testing.assert_array_equal(ds["siconc"].values, expected["siconc"].values)
        np.testing.assert_array_equal(ds["time"].values, expected["time"].values)
