"""Saved layers in both packages: the checksum covers the config, the config is validated
against a schema, saves are atomic and byte-reproducible (issue 13, "Saved files")."""
import copy
import json
import os
import re
import stat

import numpy as np
import pytest
from safetensors import safe_open

import fast
import fast.formats
import quipref
import quipref.formats as qf
from quipref import _io
from quipref.datasets import synthetic_layer

PACKAGES = [quipref, fast]

CASES = [("rtn", 2, {}), ("quip", 2, {}), ("quip", 2, {"transform": "hadamard", "rescale": True}),
         ("quip#", 2, {}), ("quip#", 3, {}), ("qtip", 2, {"L": 6}), ("qtip", 2, {"L": 6, "code": "1mad"})]


@pytest.fixture(scope="module")
def layers():
    W, H = synthetic_layer(32, 64, n_tokens=512, seed=5)
    return {f"{m}-{b}-{sorted(o.items())}": quipref.quantize_linear(W, H, m, b, seed=1, **o)
            for m, b, o in CASES}


def _edit_file(path, edit):
    """Rewrite the config of a saved layer with ``edit(config)``; keep the stored checksum."""
    with safe_open(str(path), framework="numpy") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    cfg = json.loads(meta["config"])
    edit(cfg)
    meta["config"] = json.dumps(cfg)
    path.write_bytes(_io.safetensors_bytes(tensors, meta))


def _set(path_keys, value):
    def edit(cfg):
        d = cfg
        for k in path_keys[:-1]:
            d = d[k]
        d[path_keys[-1]] = value
    return edit


# --- the checksum covers everything that decides the weights ---------------------------
@pytest.mark.parametrize("pkg", PACKAGES, ids=lambda p: p.__name__)
@pytest.mark.parametrize("key,edit", [
    ("quip#-2", lambda c: c["quantizer"].__setitem__("scale", c["quantizer"]["scale"] * (1 + 1e-9))),
    ("qtip-2", lambda c: c["quantizer"].__setitem__("L", 7)),
    ("rtn-2", lambda c: c.__setitem__("shape", [64, 32])),
    ("quip#-2", lambda c: c.__setitem__("input_transform", None)),
    ("quip-2", lambda c: c["input_transform"].__setitem__("factors", [4, 16])),
    ("rtn-2", lambda c: c.__setitem__("method", "gptq")),
    ("quip#-3", lambda c: c["quantizer"].__setitem__("resid_scale", 2.05)),
])
def test_changed_config_is_refused_as_corrupted(tmp_path, layers, pkg, key, edit):
    layer = next(v for k, v in layers.items() if k.startswith(key + "-"))
    path = layer.save(tmp_path / "l.safetensors")
    _edit_file(path, edit)
    with pytest.raises(ValueError, match="corrupted"):
        pkg.load_linear(path)


# --- the schema -------------------------------------------------------------------------
def _redigest(tensors, cfg):
    """A consistent checksum for an edited config: what a buggy writer could produce."""
    cfg["sha256"] = qf._digest(tensors, cfg)
    return tensors, cfg


def _layer(layers, key):
    return next(v for k, v in layers.items() if k.startswith(key + "-"))


SCHEMA_CASES = [  # (layer, edit, the field the message names)
    ("rtn-2", lambda c: c.pop("shape"), "shape"),
    ("rtn-2", lambda c: c.pop("quantizer"), "quantizer"),
    ("rtn-2", lambda c: c.__setitem__("colour", "red"), "colour"),
    ("rtn-2", lambda c: c.__setitem__("shape", [32, "64"]), "shape"),
    ("rtn-2", lambda c: c.__setitem__("shape", [-1, 64]), "shape"),
    ("rtn-2", lambda c: c.__setitem__("shape", [32, 128]), "codes.shape"),
    ("rtn-2", lambda c: c.__setitem__("shape", [16, 64]), "shape"),      # per-row grid of 32 rows
    ("rtn-2", lambda c: c.__setitem__("bits", "2"), "bits"),
    ("rtn-2", lambda c: c.__setitem__("method", None), "method"),
    ("rtn-2", lambda c: c.__setitem__("rescale", 1), "rescale"),
    ("rtn-2", lambda c: c.__setitem__("rescale", True), "rescale"),
    ("rtn-2", lambda c: c.__setitem__("options", []), "options"),
    ("rtn-2", lambda c: c["codes"].__setitem__("dtype", "float32"), "codes.dtype"),
    ("rtn-2", lambda c: c["codes"].__setitem__("shape", [32, 65]), "codes.shape"),
    ("rtn-2", lambda c: c["codes"].__setitem__("dtype", "int8"), None),   # accepted: holds 0..3
    ("rtn-2", lambda c: c["quantizer"].__setitem__("bits", 3), "codes"),
    ("rtn-2", lambda c: c["quantizer"].pop("rounding"), "quantizer"),
    ("rtn-2", lambda c: c["quantizer"].__setitem__("type", "Nope"), "quantizer"),
    ("quip#-2", lambda c: c["quantizer"].__setitem__("scale", "0.02"), "quantizer"),
    ("quip#-2", lambda c: c["quantizer"].__setitem__("scale", -1.0), "quantizer"),
    ("quip#-2", lambda c: c["quantizer"].__setitem__("extra", 1), "quantizer"),
    ("quip#-2", lambda c: c["input_transform"].__setitem__("n", 32), "input_transform"),
    ("quip#-2", lambda c: c.__setitem__("input_transform", None), "input_transform"),  # its tensor is left over
    ("quip#-2", lambda c: c.__setitem__("output_transform", "RHT"), "output_transform"),
    ("quip#-2", lambda c: c["sign_arrays"].pop("input_transform.signs"), "input_transform"),
    ("quip#-2", lambda c: c["sign_arrays"]["input_transform.signs"].__setitem__("shape", [65]), "sign_arrays"),
    ("quip-2", lambda c: c["input_transform"].__setitem__("factors", [4, 16]), "input_transform"),
    ("quip-2", lambda c: c["input_transform"].__setitem__("version", 99), "input_transform"),
    ("qtip-2", lambda c: c["quantizer"].__setitem__("L", 40), "quantizer"),
    ("qtip-2", lambda c: c["quantizer"].__setitem__("tile", [16]), "quantizer"),
    ("qtip-2", lambda c: c["quantizer"].__setitem__("tail_biting", False), "codes.shape"),
    ("qtip-2", lambda c: c.__setitem__("shape", [48, 64]), "output_transform"),
    ("qtip-2", lambda c: c["codes"].__setitem__("shape", [2, 96]), "codes.shape"),
    ("qtip-2", lambda c: c.__setitem__("version", 1), "version"),
    ("qtip-2", lambda c: c.__setitem__("sha256", "x"), "sha256"),
]


@pytest.mark.parametrize("pkg", PACKAGES, ids=lambda p: p.__name__)
@pytest.mark.parametrize("key,edit,field", SCHEMA_CASES, ids=range(len(SCHEMA_CASES)))
def test_schema_names_the_field(layers, pkg, key, edit, field):
    tensors, cfg = _layer(layers, key).to_tensors()
    edit(cfg)
    if field not in ("sha256",):
        _redigest(tensors, cfg)
    if field is None:
        pkg.formats.from_tensors(tensors, cfg).dequantize()
        return
    with pytest.raises(ValueError, match=f"field '{re.escape(field)}"):
        pkg.formats.from_tensors(tensors, cfg)


def _leaves(obj, prefix=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, prefix + (i,))
    yield prefix


_MUTATIONS = [None, "x", 1.5, -3, 0, True, [], {}, 10**6, float("nan")]


@pytest.mark.parametrize("pkg", PACKAGES, ids=lambda p: p.__name__)
@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{m}-{b}-{o}" for m, b, o in CASES])
def test_every_corrupted_field_is_a_value_error_or_a_working_layer(layers, pkg, case):
    """Every leaf and sub-object of the config, replaced by values of every JSON type (with a
    consistent checksum): ValueError, or a layer that decodes and multiplies."""
    layer = list(layers.values())[case]
    tensors, cfg0 = layer.to_tensors()
    x = np.ones(layer.shape[1])
    for path in _leaves(cfg0):
        if not path or path == ("sha256",):
            continue
        for value in _MUTATIONS + ["__delete__"]:
            cfg = copy.deepcopy(cfg0)
            d = cfg
            for k in path[:-1]:
                d = d[k]
            if value == "__delete__":
                if isinstance(d, list):
                    continue
                del d[path[-1]]
            else:
                d[path[-1]] = value
            _redigest(tensors, cfg)
            try:
                back = pkg.formats.from_tensors(tensors, cfg)
            except ValueError:
                continue
            # accepted: it must be a working layer (e.g. a changed option is provenance only)
            assert back.matvec(x).shape == (layer.shape[0],), (path, value)
            assert np.all(np.isfinite(back.dequantize())), (path, value)


@pytest.mark.parametrize("pkg", PACKAGES, ids=lambda p: p.__name__)
def test_bad_argument_types_of_from_tensors(layers, pkg):
    tensors, cfg = _layer(layers, "rtn-2").to_tensors()
    with pytest.raises(TypeError, match="config must be a dict"):
        pkg.formats.from_tensors(tensors, json.dumps(cfg))
    with pytest.raises(TypeError, match="tensors must be a dict"):
        pkg.formats.from_tensors(list(tensors.values()), cfg)
    t = dict(tensors, stray=np.zeros(3))
    with pytest.raises(ValueError, match="unexpected tensor 'stray'"):
        pkg.formats.from_tensors(t, _redigest(t, dict(cfg))[1])
    t = dict(tensors)
    t["codes"] = t["codes"][:-1]
    with pytest.raises(ValueError, match="corrupted"):
        pkg.formats.from_tensors(t, cfg)


# --- atomic, reproducible saves ---------------------------------------------------------
def test_saves_are_byte_reproducible(tmp_path, layers):
    for i, layer in enumerate(layers.values()):
        blobs = {layer.save(tmp_path / f"{i}-{k}.safetensors").read_bytes() for k in range(6)}
        assert len(blobs) == 1
        back = quipref.load_linear(tmp_path / f"{i}-0.safetensors")
        assert back.save(tmp_path / "again.safetensors").read_bytes() in blobs
        assert fast.load_linear(tmp_path / f"{i}-0.safetensors").save(tmp_path / "f.safetensors").read_bytes() in blobs


def test_written_bytes_are_safetensors():
    """The deterministic writer against the reference writer: same header entries, same data."""
    from safetensors.numpy import load, save

    t = {"b": np.arange(5, dtype=np.uint16), "a": np.linspace(0, 1, 6).reshape(2, 3),
         "z": np.array(2.5), "s": np.array([-1, 1], dtype=np.int8), "e": np.zeros((0, 4), np.float32)}
    meta = {"z": "1", "a": "2"}
    ours, ref = _io.safetensors_bytes(t, meta), save(t, metadata=meta)
    for blob in (ours, ref):
        back = load(blob)
        for k, v in t.items():
            assert back[k].dtype == v.dtype and back[k].shape == v.shape
            np.testing.assert_array_equal(back[k], v)
    n = int.from_bytes(ours[:8], "little")
    assert n % 8 == 0 and list(json.loads(ours[8:8 + n])["__metadata__"]) == ["a", "z"]


def test_failed_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path, layers, monkeypatch):
    a, b = list(layers.values())[:2]
    path = a.save(tmp_path / "l.safetensors")
    good = path.read_bytes()

    def boom(*args):
        raise OSError("disk full (simulated)")

    for target in ("fsync", "replace"):
        with monkeypatch.context() as mp:
            mp.setattr(_io.os, target, boom)
            with pytest.raises(OSError, match="simulated"):
                b.save(path)
        assert path.read_bytes() == good
        assert sorted(p.name for p in tmp_path.iterdir()) == ["l.safetensors"]
    np.testing.assert_array_equal(quipref.load_linear(path).codes, a.codes)


def test_save_writes_through_a_temporary_in_the_same_folder(tmp_path, layers, monkeypatch):
    seen = []
    real = os.replace

    def spy(src, dst):
        seen.append((os.path.dirname(src), os.path.getsize(src)))
        real(src, dst)

    monkeypatch.setattr(_io.os, "replace", spy)
    path = list(layers.values())[0].save(tmp_path / "l.safetensors")
    assert seen == [(str(tmp_path), path.stat().st_size)]


def test_file_mode_follows_the_umask(tmp_path, layers):
    old = os.umask(0o027)
    try:
        path = list(layers.values())[0].save(tmp_path / "l.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_save_into_a_missing_folder_is_a_clear_error(tmp_path, layers):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(layers.values())[0].save(tmp_path / "nope" / "l.safetensors")


def test_version_1_files_are_still_read(tmp_path, layers):
    """A file as version 1 wrote it (tensor-only checksum in the metadata)."""
    layer = _layer(layers, "quip#-2")
    tensors, cfg = layer.to_tensors()
    del cfg["version"], cfg["sha256"]
    meta = {"format": qf.FORMAT_NAME, "version": "1", "config": json.dumps(cfg), "sha256": qf._digest(tensors)}
    path = tmp_path / "v1.safetensors"
    path.write_bytes(_io.safetensors_bytes(tensors, meta))
    for pkg in PACKAGES:
        np.testing.assert_array_equal(pkg.load_linear(path).dequantize(), layer.dequantize())
    tensors["codes"] = tensors["codes"].copy()
    tensors["codes"][0] ^= 1
    path.write_bytes(_io.safetensors_bytes(tensors, meta))
    with pytest.raises(ValueError, match="corrupted"):
        quipref.load_linear(path)


# --- QuIP's Kronecker factors from a seed ------------------------------------------------
def test_splitmix64_matches_the_published_stream():
    """Vigna's splitmix64.c with state 0 outputs e220a8397b1dcdaf, 6e789e6aa1b965f4,
    06c45d188009454f (the reference sequence of the generator; not produced by our code)."""
    from quipref._stream import splitmix64

    assert [int(v) for v in splitmix64(0, 3)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


def _splitmix_python(key, i):
    """The stream in plain Python integers (an independent implementation)."""
    mask = 2**64 - 1
    z = (key + (i + 1) * 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


@pytest.mark.parametrize("seed", [0, 7, 2**63 + 5])
def test_kronecker_draws_are_the_documented_stream(seed):
    """perm_in / perm_out are the stable argsort of sub-streams 0 / 3 of the seed, B1 / B2
    the Haar QR of Box-Muller normals of sub-streams 1 / 2, as the docstring says."""
    import math

    from quipref.incoherence import KroneckerOrthogonal, _haar_from_normals

    n = 48
    T = KroneckerOrthogonal(n, seed=seed)
    key = [_splitmix_python(seed, j) for j in range(4)]
    for j, perm in ((0, T.perm_in), (3, T.perm_out)):
        draws = [_splitmix_python(key[j], i) for i in range(n)]
        assert list(perm) == sorted(range(n), key=lambda i: (draws[i], i))
    for j, B in ((1, T.B1), (2, T.B2)):
        p = B.shape[0]
        u = [((_splitmix_python(key[j], i) >> 11) + 0.5) * 2.0**-53 for i in range(2 * p * p)]
        g = [math.sqrt(-2 * math.log(u[2 * k])) * math.cos(2 * math.pi * u[2 * k + 1]) for k in range(p * p)]
        # libm vs NumPy's log/cos may differ in the last ulp: compare to round-off
        np.testing.assert_allclose(B, _haar_from_normals(np.array(g).reshape(p, p)), rtol=0, atol=1e-12)


def test_quip_layers_store_seeds_not_factors_and_bits_per_weight_shows_it(tmp_path):
    W, H = synthetic_layer(96, 256, n_tokens=512, seed=0)
    m, n = W.shape
    for pkg in PACKAGES:
        seeded = pkg.quantize_linear(W, H, "quip", 2, seed=3)
        stored = pkg.quantize_linear(W, H, "quip", 2, seed=3, store_factors=True)
        np.testing.assert_array_equal(seeded.codes, stored.codes)
        # 2-bit codes + the grid's float64 step and offset; the transforms are two seeds
        assert seeded.bits_per_weight == pytest.approx((m * n * 2 + 128) / (m * n), rel=1e-15)
        extra = sum(64 * (p1 * p1 + p2 * p2) + 2 * 16 * k for k, (p1, p2) in
                    ((m, stored.output_transform.factors), (n, stored.input_transform.factors)))
        assert stored.bits_per_weight == pytest.approx((m * n * 2 + 128 + extra) / (m * n), rel=1e-15)
        for layer in (seeded, stored):
            path = layer.save(tmp_path / "q.safetensors")
            for reader in PACKAGES:
                back = reader.load_linear(path)
                np.testing.assert_array_equal(back.dequantize(), layer.dequantize())
                assert back.bits_per_weight == layer.bits_per_weight
    np.testing.assert_array_equal(quipref.quantize_linear(W, H, "quip", 2, seed=3).dequantize(),
                                  fast.quantize_linear(W, H, "quip", 2, seed=3).dequantize())


def test_a_seed_that_regenerates_other_factors_is_refused(layers, monkeypatch):
    """A reader whose stream differed (another generator) must not load silently."""
    import quipref.incoherence as qi

    tensors, cfg = _layer(layers, "quip-2").to_tensors()
    assert "input_transform.B1" not in tensors
    real = qi._stream.normals
    monkeypatch.setattr(qi._stream, "normals", lambda key, count: real(key + 1, count))
    for pkg in PACKAGES:
        with pytest.raises(ValueError, match="another random stream"):
            pkg.formats.from_tensors(tensors, cfg)


@pytest.mark.parametrize("code,V", [("hyb", 2), ("gaussian", 1), ("1mad", 1)])
def test_generator_seeded_trellis_layers_round_trip(code, V):
    """A Trellis seeded by a Generator stores seed None (its LUT is stored): the schema's
    state round-trip check must accept it."""
    from quipref.quantizers import Trellis

    W, _ = synthetic_layer(32, 64, n_tokens=256, seed=0)
    q = Trellis(6, 2, V, code, seed=np.random.default_rng(1))
    layer = quipref.QuantizedLinear(q.encode(W), q, (32, 64), "custom", 2)
    for pkg in PACKAGES:
        back = pkg.formats.from_tensors(*layer.to_tensors())
        np.testing.assert_array_equal(back.dequantize(), layer.dequantize())
