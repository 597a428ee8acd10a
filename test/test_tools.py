#!/usr/bin/env python3
"""Tests of the checkpoint exporter (tools/ptload.py, tools/export.py).

Run from the repository root:  python3 test/test_tools.py
Needs numpy only. Every checkpoint is built here: a small writer emits the
.pt zip + protocol-2 pickle with the same global names PyTorch and YOLOv7 use
(classes whose __module__/__qualname__ are set to e.g. models.common.Conv,
storages as persistent ids), so neither torch nor external files are needed.

Hostile checkpoints (a module tree that loops, pickles with huge memo
indices, deep or flooding stacks, copies over and over, zip bombs, too many
tensors, and single-byte mutations of a real-format pickle) must each be
refused cleanly within a time and an address-space limit.

Each exported file is read back by an independent reader of
docs/model-format.md (checking CRCs, alignment and sizes) and run by a numpy
forward pass that follows the format's layer semantics; that result is
compared with a float64 reference forward of the *unfused* model, written
from the module definitions (Conv = conv, BN, act; RepConv = sum of branches;
IDetect = conv(x + a) * m).
"""

import collections
import contextlib
import hashlib
import io
import json
import os
import pickle
import pickletools
import random
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zipfile
import zlib

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "tools")
EXPORT = os.path.join(TOOLS, "export.py")

# ---- a tiny torch.save look-alike ---------------------------------------------------

_FAKE = {}


def fake_global(module, name):
    """A class that pickles as GLOBAL 'module name' (never imported here)."""
    key = (module, name)
    if key not in _FAKE:
        _FAKE[key] = type(name, (), {"__module__": module, "__qualname__": name,
                                     "_fake_global": True})
    return _FAKE[key]


REBUILD_TENSOR = fake_global("torch._utils", "_rebuild_tensor_v2")
REBUILD_PARAM = fake_global("torch._utils", "_rebuild_parameter")
STORAGE_CLASS = {np.dtype(np.float16): fake_global("torch", "HalfStorage"),
                 np.dtype(np.float32): fake_global("torch", "FloatStorage"),
                 np.dtype(np.int64): fake_global("torch", "LongStorage")}


class Storage:
    def __init__(self, flat, numel=None):
        self.flat = np.ascontiguousarray(flat).reshape(-1)
        self.numel = self.flat.size if numel is None else numel    # what the pickle declares


class Tensor:
    """Pickles like a torch tensor: _rebuild_tensor_v2(storage, offset, size, stride, ...)."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce_ex__(self, proto):
        return (REBUILD_TENSOR, (self.storage, self.offset, tuple(self.size),
                                 tuple(self.stride), False, collections.OrderedDict()))


class Param:
    def __init__(self, t):
        self.t = t

    def __reduce_ex__(self, proto):
        return (REBUILD_PARAM, (self.t, False, collections.OrderedDict()))


def contiguous_strides(shape):
    st, acc = [], 1
    for n in reversed(shape):
        st.append(acc)
        acc *= n
    return tuple(reversed(st))


def as_tensor(arr):
    arr = np.ascontiguousarray(arr)
    return Tensor(Storage(arr), 0, arr.shape, contiguous_strides(arr.shape))


class _Pickler(pickle._Pickler):
    """Writes fake classes as plain GLOBALs; storages as persistent ids."""

    def __init__(self, fh):
        super().__init__(fh, protocol=2)
        self.storages = []

    def save_global(self, obj, name=None):
        if getattr(obj, "_fake_global", False):
            self.write(pickle.GLOBAL + obj.__module__.encode() + b"\n"
                       + obj.__qualname__.encode() + b"\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)

    def persistent_id(self, obj):
        if not isinstance(obj, Storage):
            return None
        for key, s in enumerate(self.storages):
            if s is obj:
                break
        else:
            self.storages.append(obj)
            key = len(self.storages) - 1
        return ("storage", STORAGE_CLASS[obj.flat.dtype], str(key), "cpu", obj.numel)


def pickled(obj):
    """(data.pkl bytes, storages in key order) as torch.save writes them."""
    buf = io.BytesIO()
    p = _Pickler(buf)
    p.dump(obj)
    return buf.getvalue(), p.storages


def save_pt(obj, path, drop_entries=(), prefix="archive", writers=None):
    """Writes obj as a .pt zip; writers maps an entry name to a function
    (zipfile, name) that writes that entry instead (hostile entries)."""
    data, storages = pickled(obj)
    entries = [(prefix + "/data.pkl", data)]
    for key, s in enumerate(storages):
        entries.append(("%s/data/%d" % (prefix, key),
                        s.flat.astype(s.flat.dtype.newbyteorder("<")).tobytes()))
    entries.append((prefix + "/version", b"3\n"))
    writers = writers or {}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, blob in entries:
            if name in writers:
                writers[name](zf, name)
            elif name not in drop_entries:
                zf.writestr(name, blob)


# ---- fake YOLOv7 modules with their float64 reference semantics ----------------------

class Mod:
    """Builds a pickled module object (fake class instance with a torch-like
    __dict__) and remembers the values the reference forward needs."""

    def __init__(self, module_, cls_, dtype_, **attrs):
        self.obj = fake_global(module_, cls_).__new__(fake_global(module_, cls_))
        self.obj.__dict__.update(training=False, _parameters=collections.OrderedDict(),
                                 _buffers=collections.OrderedDict(),
                                 _modules=collections.OrderedDict())
        self.obj.__dict__.update(attrs)
        self.dtype = dtype_
        self.vals = {}

    def param(self, name, arr, buffer=False):
        arr = np.asarray(arr).astype(self.dtype)
        self.vals[name] = arr.astype(np.float64)
        t = as_tensor(arr)
        if buffer:
            self.obj._buffers[name] = t
        else:
            self.obj._parameters[name] = Param(t)
        return arr

    def add(self, name, sub):
        self.obj._modules[name] = sub.obj if sub is not None else None
        return sub


class Net:
    """Random small YOLOv7-style networks (deterministic)."""

    def __init__(self, dtype=np.float16, seed=1):
        self.rng = np.random.default_rng(seed)
        self.dtype = dtype

    def mod(self, module_, cls_, **attrs):
        return Mod(module_, cls_, self.dtype, **attrs)

    def conv2d(self, cin, cout, k, s=1, p=None, bias=False, scale=1.0):
        p = k // 2 if p is None else p
        m = self.mod("torch.nn.modules.conv", "Conv2d", in_channels=cin, out_channels=cout,
                     kernel_size=(k, k), stride=(s, s), padding=(p, p), dilation=(1, 1),
                     groups=1, padding_mode="zeros")
        m.param("weight", self.rng.normal(0, scale / np.sqrt(cin * k * k), (cout, cin, k, k)))
        m.obj._parameters["bias"] = None
        if bias:
            m.param("bias", self.rng.normal(0, 0.5, cout))
        m.k, m.s, m.p = k, s, p
        return m

    def bn(self, c):
        m = self.mod("torch.nn.modules.batchnorm", "BatchNorm2d", eps=0.001, momentum=0.03,
                     num_features=c, affine=True, track_running_stats=True)
        m.param("weight", self.rng.uniform(0.5, 1.5, c))
        m.param("bias", self.rng.normal(0, 0.2, c))
        m.param("running_mean", self.rng.normal(0, 0.2, c), buffer=True)
        m.param("running_var", self.rng.uniform(0.5, 1.5, c), buffer=True)
        m.obj._buffers["num_batches_tracked"] = as_tensor(np.array(7, np.int64))
        return m

    def act(self, kind):
        if kind == "leaky":
            return self.mod("torch.nn.modules.activation", "LeakyReLU", negative_slope=0.1,
                            inplace=True)
        return self.mod("torch.nn.modules.activation", "SiLU", inplace=True)

    def Conv(self, cin, cout, k=1, s=1, act="silu"):
        m = self.mod("models.common", "Conv")
        m.conv = m.add("conv", self.conv2d(cin, cout, k, s))
        m.bn = m.add("bn", self.bn(cout))
        m.act = m.add("act", self.act(act))
        m.ref = lambda x: ref_act(ref_bn(ref_conv(x, m.conv), m.bn), m.act)
        return m

    def RepConv(self, cin, cout, s=1, identity=True, act="silu"):
        m = self.mod("models.common", "RepConv", deploy=False, groups=1, in_channels=cin,
                     out_channels=cout)
        m.act = m.add("act", self.act(act))
        dense = m.add("rbr_dense", self.mod("torch.nn.modules.container", "Sequential"))
        d0, d1 = dense.add("0", self.conv2d(cin, cout, 3, s)), dense.add("1", self.bn(cout))
        one = m.add("rbr_1x1", self.mod("torch.nn.modules.container", "Sequential"))
        o0, o1 = one.add("0", self.conv2d(cin, cout, 1, s, 0)), one.add("1", self.bn(cout))
        ident = self.bn(cin) if identity else None
        if identity:
            m.add("rbr_identity", ident)
        else:
            m.obj.rbr_identity = None     # a plain attribute, as in real files

        def ref(x):
            y = ref_bn(ref_conv(x, d0), d1) + ref_bn(ref_conv(x, o0), o1)
            if ident is not None:
                y = y + ref_bn(x, ident)
            return ref_act(y, m.act)
        m.ref = ref
        return m

    def pool(self, k, s, p):
        return self.mod("torch.nn.modules.pooling", "MaxPool2d", kernel_size=k, stride=s,
                        padding=p, dilation=1, return_indices=False, ceil_mode=False)

    def MP(self):
        m = self.mod("models.common", "MP")
        m.add("m", self.pool(2, 2, 0))
        m.ref = lambda x: ref_pool(x, 2, 2, 0)
        return m

    def SP(self, k):
        m = self.mod("models.common", "SP")
        m.add("m", self.pool(k, 1, k // 2))
        m.ref = lambda x: ref_pool(x, k, 1, k // 2)
        return m

    def MaxPool2d(self, k, s):
        m = self.pool(k, s, 0)
        m.ref = lambda x: ref_pool(x, k, s, 0)
        return m

    def Concat(self):
        m = self.mod("models.common", "Concat", d=1)
        m.ref = lambda xs: np.concatenate(xs, 0)
        return m

    def Shortcut(self):
        m = self.mod("models.common", "Shortcut", d=0)
        m.ref = lambda xs: xs[0] + xs[1]
        return m

    def Upsample(self):
        m = self.mod("torch.nn.modules.upsampling", "Upsample", name="Upsample", size=None,
                     scale_factor=2.0, mode="nearest", align_corners=None)
        m.ref = lambda x: x.repeat(2, 1).repeat(2, 2)
        return m

    def ReOrg(self):
        m = self.mod("models.common", "ReOrg")

        def ref(x):   # out[b*C + c][y][x] = in[c][2y+dy][2x+dx], (dy,dx) per block b
            c, h, w = x.shape
            out = np.zeros((4 * c, h // 2, w // 2))
            for b, (dy, dx) in enumerate(((0, 0), (1, 0), (0, 1), (1, 1))):
                out[b * c:(b + 1) * c] = x[:, dy::2, dx::2]
            return out
        m.ref = ref
        return m

    def DownC(self, c1, c2):
        m = self.mod("models.common", "DownC")
        cv1 = m.add("cv1", self.Conv(c1, c1, 1))
        cv2 = m.add("cv2", self.Conv(c1, c2 // 2, 3, 2))
        cv3 = m.add("cv3", self.Conv(c1, c2 // 2, 1))
        m.add("mp", self.pool(2, 2, 0))
        m.ref = lambda x: np.concatenate([cv2.ref(cv1.ref(x)), cv3.ref(ref_pool(x, 2, 2, 0))])
        return m

    def SPPCSPC(self, c1, c2):
        m = self.mod("models.common", "SPPCSPC")
        c_ = c2
        cv = {}
        for n, a, b, k in (("cv1", c1, c_, 1), ("cv2", c1, c_, 1), ("cv3", c_, c_, 3),
                           ("cv4", c_, c_, 1), ("cv5", 4 * c_, c_, 1), ("cv6", c_, c_, 3),
                           ("cv7", 2 * c_, c2, 1)):
            cv[n] = m.add(n, self.Conv(a, b, k))
        ml = m.add("m", self.mod("torch.nn.modules.container", "ModuleList"))
        for j, k in enumerate((5, 9, 13)):
            ml.add(str(j), self.pool(k, 1, k // 2))

        def ref(x):
            x1 = cv["cv4"].ref(cv["cv3"].ref(cv["cv1"].ref(x)))
            cat = [x1] + [ref_pool(x1, k, 1, k // 2) for k in (5, 9, 13)]
            y1 = cv["cv6"].ref(cv["cv5"].ref(np.concatenate(cat)))
            return cv["cv7"].ref(np.concatenate([y1, cv["cv2"].ref(x)]))
        m.ref = ref
        return m

    def Head(self, kind, nc, anchors_px, strides, chans, aux_chans=()):
        nl, na = len(chans), len(anchors_px[0])
        no = nc + 5
        m = self.mod("models.yolo", kind, nc=nc, no=no, nl=nl, na=na,
                     grid=[np.zeros(1, np.float32)] * nl,
                     stride=np.asarray(strides, np.float32))
        px = np.asarray(anchors_px, np.float64)
        m.param("anchors", px / np.asarray(strides).reshape(-1, 1, 1), buffer=True)
        m.param("anchor_grid", px.reshape(nl, 1, na, 1, 1, 2), buffer=True)
        ml = m.add("m", self.mod("torch.nn.modules.container", "ModuleList"))
        convs = [ml.add(str(i), self.conv2d(c, na * no, 1, 1, 0, bias=True, scale=3.0))
                 for i, c in enumerate(chans)]
        ia = im = None
        if kind != "Detect":
            ial = m.add("ia", self.mod("torch.nn.modules.container", "ModuleList"))
            iml = m.add("im", self.mod("torch.nn.modules.container", "ModuleList"))
            ia, im = [], []
            for i, c in enumerate(chans):
                a = ial.add(str(i), self.mod("models.common", "ImplicitA", channel=c))
                a.param("implicit", self.rng.normal(0, 0.3, (1, c, 1, 1)))
                ia.append(a)
                b = iml.add(str(i), self.mod("models.common", "ImplicitM", channel=na * no))
                b.param("implicit", self.rng.normal(1, 0.3, (1, na * no, 1, 1)))
                im.append(b)
        if kind == "IAuxDetect":
            m2 = m.add("m2", self.mod("torch.nn.modules.container", "ModuleList"))
            for i, c in enumerate(aux_chans):
                m2.add(str(i), self.conv2d(c, na * no, 1, 1, 0, bias=True))

        def ref(xs):
            rows = []
            for lvl in range(nl):
                x = xs[lvl]
                if ia is not None:
                    x = x + ia[lvl].vals["implicit"].reshape(-1, 1, 1)
                y = ref_conv(x, convs[lvl])
                if im is not None:
                    y = y * im[lvl].vals["implicit"].reshape(-1, 1, 1)
                ny, nx = y.shape[1:]
                y = 1 / (1 + np.exp(-y.reshape(na, no, ny, nx).transpose(0, 2, 3, 1)))
                gy, gx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
                s = strides[lvl]
                y[..., 0] = (y[..., 0] * 2 - 0.5 + gx) * s
                y[..., 1] = (y[..., 1] * 2 - 0.5 + gy) * s
                y[..., 2] = (y[..., 2] * 2) ** 2 * px[lvl, :, 0].reshape(na, 1, 1)
                y[..., 3] = (y[..., 3] * 2) ** 2 * px[lvl, :, 1].reshape(na, 1, 1)
                rows.append(y.reshape(-1, no))
            return np.concatenate(rows)
        m.ref = ref
        return m

    def model(self, layers, names=None, nc=None):
        """Model with a Sequential of (f, module) pairs; returns (obj, ref_fn)."""
        model = self.mod("models.yolo", "Model", yaml={"nc": nc, "ch": 3},
                         stride=np.asarray(layers[-1][1].obj.stride, np.float32),
                         save=[], traced=False, yaml_file="test.yaml")
        if names is not None:
            model.obj.names = names
        seq = model.add("model", self.mod("torch.nn.modules.container", "Sequential"))
        for i, (f, m) in enumerate(layers):
            m.obj.i, m.obj.f = i, f
            m.obj.type = "%s.%s" % (type(m.obj).__module__, type(m.obj).__qualname__)
            m.obj.np = 0
            seq.add(str(i), m)

        def ref(x):
            ys = []
            for i, (f, m) in enumerate(layers):
                fs = [f] if isinstance(f, int) else f
                ins = [x if (j == -1 and i == 0) else ys[j if j >= 0 else i + j] for j in fs]
                ys.append(m.ref(ins if isinstance(f, list) else ins[0]))
            return ys[-1]
        return model.obj, ref


def ref_conv(x, conv):
    w = conv.vals["weight"]
    k, s, p = conv.k, conv.s, conv.p
    xp = np.pad(x, ((0, 0), (p, p), (p, p)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))[:, ::s, ::s]
    y = np.einsum("chwij,ocij->ohw", win, w)
    if "bias" in conv.vals:
        y = y + conv.vals["bias"].reshape(-1, 1, 1)
    return y


def ref_bn(x, bn):
    v = bn.vals
    return ((x - v["running_mean"].reshape(-1, 1, 1)) / np.sqrt(v["running_var"] + 0.001)
            .reshape(-1, 1, 1) * v["weight"].reshape(-1, 1, 1) + v["bias"].reshape(-1, 1, 1))


def ref_act(x, act):
    if type(act.obj).__qualname__ == "LeakyReLU":
        return np.where(x > 0, x, 0.1 * x)
    return x / (1 + np.exp(-x))


def ref_pool(x, k, s, p):
    xp = np.pad(x, ((0, 0), (p, p), (p, p)), constant_values=-np.inf)
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))[:, ::s, ::s]
    return win.max(axis=(3, 4))


# ---- the test networks ------------------------------------------------------------

TINY_ANCHORS = [[(10, 13), (16, 30)], [(30, 61), (62, 45)]]


def tiny_net(dtype=np.float16, head="Detect", seed=1):
    """Conv, MP, SP, Concat, Upsample and a 2-level head; 32x32 input."""
    n = Net(dtype, seed)
    layers = [
        (-1, n.Conv(3, 8, 3, 2, "leaky")),        # 0: 16x16
        (-1, n.MP()),                             # 1: 8x8
        (-1, n.Conv(8, 16, 3, 1, "leaky")),       # 2
        (-1, n.SP(5)),                            # 3
        ([-1, 2], n.Concat()),                    # 4: 32
        (-1, n.Conv(32, 16, 1, 1, "leaky")),      # 5
        (-1, n.Upsample()),                       # 6: 16x16
        ([-1, 0], n.Concat()),                    # 7: 24
        (-1, n.Conv(24, 16, 3, 2, "leaky")),      # 8: 8x8
        ([7, 8], n.Head(head, 2, TINY_ANCHORS, [2, 4], [24, 16])),
    ]
    return n.model(layers, names=["cat", "dog"], nc=2)


def big_net(dtype=np.float16, head="IDetect", seed=2):
    """ReOrg, DownC, SPPCSPC, Shortcut, RepConv (with and without identity),
    MaxPool2d, Concat and an implicit head; 64x64 input."""
    n = Net(dtype, seed)
    layers = [
        (-1, n.ReOrg()),                          # 0: 12 @ 32x32
        (-1, n.Conv(12, 8, 3)),                   # 1: 8
        (-1, n.DownC(8, 16)),                     # 2: 16 @ 16x16
        (-1, n.SPPCSPC(16, 8)),                   # 3: 8
        (-1, n.Conv(8, 8, 1)),                    # 4
        ([-1, 3], n.Shortcut()),                  # 5
        (-1, n.RepConv(8, 8, identity=True)),     # 6
        (-1, n.RepConv(8, 16, identity=False)),   # 7
        (1, n.MaxPool2d(2, 2)),                   # 8: 8 @ 16x16
        ([7, 8], n.Concat()),                     # 9: 24
        ([1, 9], n.Head(head, 3, [[(5, 7), (9, 4)], [(20, 30), (41, 25)]], [2, 4], [8, 24])),
    ]
    return n.model(layers, nc=3)


def aux_net(dtype=np.float16, seed=3):
    """IAuxDetect whose aux convs (layers 2, 3) never reach the lead outputs."""
    n = Net(dtype, seed)
    layers = [
        (-1, n.Conv(3, 8, 3, 2)),                 # 0: 16x16
        (-1, n.Conv(8, 16, 3, 2)),                # 1: 8x8
        (0, n.Conv(8, 8, 1)),                     # 2: aux only
        (1, n.Conv(16, 8, 1)),                    # 3: aux only
        ([0, 1, 2, 3], n.Head("IAuxDetect", 1, TINY_ANCHORS, [2, 4], [8, 16], [8, 8])),
    ]
    return n.model(layers, nc=1)


# ---- an independent reader of docs/model-format.md and a numpy forward ---------------

def read_model(path):
    """Parses and checks a model file; returns a dict of its parts."""
    blob = open(path, "rb").read()
    assert len(blob) >= 128, "file shorter than the header"
    (magic, version, hsize, fsize, nl, nt, meta_off, meta_size, layers_off, tensors_off,
     data_off, data_size, tcrc, dcrc) = struct.unpack_from("<8sIIQIIQQQQQQII", blob, 0)
    assert magic == b"LIBYOLO\0" and version == 1 and hsize == 128
    assert fsize == len(blob), "file_size %d != real %d" % (fsize, len(blob))
    assert blob[88:124] == b"\0" * 36, "reserved header bytes not zero"
    assert struct.unpack_from("<I", blob, 124)[0] == zlib.crc32(blob[:124]), "header crc"
    assert tcrc == zlib.crc32(blob[128:data_off]), "tables crc"
    assert dcrc == zlib.crc32(blob[data_off:data_off + data_size]), "data crc"
    assert meta_off == 128 and layers_off % 8 == 0 and tensors_off % 8 == 0
    assert data_off % 64 == 0 and data_off + data_size == fsize
    assert layers_off >= meta_off + meta_size and tensors_off == layers_off + 192 * nl
    assert data_off >= tensors_off + 96 * nt
    m = blob[meta_off:meta_off + meta_size]
    nc, levels, na, img, max_stride, act, fused, res = struct.unpack_from("<8I", m, 0)
    strides = list(struct.unpack_from("<4I", m, 32))
    anchors = np.frombuffer(m, "<f4", 32, 48).reshape(4, 4, 2)
    sha = m[176:208]
    name = m[208:272].split(b"\0")[0].decode()
    names_size = struct.unpack_from("<I", m, 272)[0]
    assert meta_size == 276 + names_size
    names = m[276:276 + names_size].split(b"\0")[:-1]
    assert len(names) == nc and m[276 + names_size - 1:] == b"\0"
    tensors = []
    for t in range(nt):
        r = blob[tensors_off + 96 * t:tensors_off + 96 * (t + 1)]
        tname = r[:56].split(b"\0")[0].decode()
        dtype, ndim = struct.unpack_from("<II", r, 56)
        shape = struct.unpack_from("<4I", r, 64)[:ndim]
        off, size = struct.unpack_from("<QQ", r, 80)
        assert dtype == 0 and 1 <= ndim <= 4 and off % 64 == 0
        assert size == 4 * int(np.prod(shape)) and off + size <= data_size
        arr = np.frombuffer(blob, "<f4", size // 4, data_off + off).reshape(shape)
        tensors.append((tname, arr.astype(np.float32)))
    layers = []
    for i in range(nl):
        r = blob[layers_off + 192 * i:layers_off + 192 * (i + 1)]
        v = struct.unpack("<3I16i5I2f8II13I", r)
        L = dict(type=v[0], act=v[1], inputs=list(v[3:3 + v[2]]), c_out=v[19], kernel=v[20],
                 stride=v[21], pad=v[22], groups=v[23], alpha=v[24], eps=v[25],
                 tensors=[tensors[t][1] for t in v[26:34] if t != 0xFFFFFFFF],
                 tensor_ids=[t for t in v[26:34] if t != 0xFFFFFFFF], src=v[34])
        assert all(-1 <= j < i for j in L["inputs"]) and not any(v[3 + v[2]:19])
        assert L["groups"] == 1 and not any(v[35:])
        layers.append(L)
    return dict(nc=nc, levels=levels, na=na, img=img, max_stride=max_stride, act=act,
                fused=fused, strides=strides[:levels], anchors=anchors[:levels, :na],
                sha=sha, name=name, names=[s.decode() for s in names], layers=layers,
                tensors=tensors, size=len(blob), data_off=data_off)


def _sig(x):
    return np.float32(1) / (np.float32(1) + np.exp(-x))


def _act(x, L):
    if L["act"] == 1:
        return np.where(x > 0, x, x * np.float32(L["alpha"])).astype(np.float32)
    if L["act"] == 2:
        return (x * _sig(x)).astype(np.float32)
    return x


def _conv(x, w, b, s, p):
    c, h, wd = x.shape
    o, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (p, p), (p, p)))
    oh, ow = (h + 2 * p - k) // s + 1, (wd + 2 * p - k) // s + 1
    y = np.zeros((o, oh * ow), np.float32)
    for dy in range(k):
        for dx in range(k):
            tap = xp[:, dy:dy + s * (oh - 1) + 1:s, dx:dx + s * (ow - 1) + 1:s]
            y += w[:, :, dy, dx] @ tap.reshape(c, -1)
    y = y.reshape(o, oh, ow)
    return y + b.reshape(-1, 1, 1) if b is not None else y


def _pool(x, k, s, p):
    c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (p, p), (p, p)), constant_values=-np.inf)
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    y = np.full((c, oh, ow), -np.inf, np.float32)
    for dy in range(k):
        for dx in range(k):
            np.maximum(y, xp[:, dy:dy + s * (oh - 1) + 1:s, dx:dx + s * (ow - 1) + 1:s], out=y)
    return y


def forward(model, x):
    """Runs a model file (as read by read_model) on x [3, H, W] float32."""
    ys = []
    for L in model["layers"]:
        ins = [x if j == -1 else ys[j] for j in L["inputs"]]
        t, T = L["type"], L["tensors"]
        a = ins[0]
        if t in (1, 2):
            y = _act(_conv(a, T[0], T[1] if len(T) > 1 else None, L["stride"], L["pad"]), L)
        elif t == 3:
            g, b, mu, var = T
            s = np.sqrt(var + np.float32(L["eps"]))
            y = ((a - mu.reshape(-1, 1, 1)) / s.reshape(-1, 1, 1) * g.reshape(-1, 1, 1)
                 + b.reshape(-1, 1, 1))
        elif t == 4:
            y = _act(a, L)
        elif t in (5, 6, 7):
            y = _pool(a, L["kernel"], L["stride"], L["pad"])
        elif t == 8:
            y = np.concatenate(ins)
        elif t == 9:
            y = a.repeat(L["kernel"], 1).repeat(L["kernel"], 2)
        elif t in (10, 12):
            y = _act(sum(ins[1:], ins[0]), L)
        elif t == 11:
            y = np.concatenate([a[:, ::2, ::2], a[:, 1::2, ::2], a[:, ::2, 1::2], a[:, 1::2, 1::2]])
        elif t == 13:
            y = _detect(model, L, ins)
        else:
            raise AssertionError("unknown layer type %d" % t)
        assert y.shape[0] == L["c_out"] or t == 13, "c_out mismatch in layer type %d" % t
        ys.append(y.astype(np.float32))
    return ys[-1]


def _detect(model, L, ins):
    na, no = model["na"], model["nc"] + 5
    rows = []
    for lvl, x in enumerate(ins):
        w, b = L["tensors"][2 * lvl], L["tensors"][2 * lvl + 1]
        y = _conv(x, w, b, 1, 0)
        ny, nx = y.shape[1:]
        y = _sig(y.reshape(na, no, ny, nx).transpose(0, 2, 3, 1))
        s = np.float32(model["strides"][lvl])
        gy, gx = np.meshgrid(np.arange(ny, dtype=np.float32), np.arange(nx, dtype=np.float32),
                             indexing="ij")
        y[..., 0] = (y[..., 0] * 2 - np.float32(0.5) + gx) * s
        y[..., 1] = (y[..., 1] * 2 - np.float32(0.5) + gy) * s
        anc = model["anchors"][lvl]
        y[..., 2] = (y[..., 2] * 2) ** 2 * anc[:, 0].reshape(na, 1, 1)
        y[..., 3] = (y[..., 3] * 2) ** 2 * anc[:, 1].reshape(na, 1, 1)
        rows.append(y.reshape(-1, no))
    return np.concatenate(rows)


# ---- helpers -----------------------------------------------------------------------

TMP = tempfile.mkdtemp(prefix="libyolo-test-tools-")


def tmp(name):
    return os.path.join(TMP, name)


def run_export(pt, out, *extra, env=None):
    r = subprocess.run([sys.executable, EXPORT, pt, out] + list(extra), capture_output=True,
                       text=True, env=env)
    return r.returncode, r.stdout + r.stderr


def export_ok(obj, stem, *extra):
    pt, out = tmp(stem + ".pt"), tmp(stem + ".bin")
    save_pt(obj, pt)
    rc, msg = run_export(pt, out, "--quiet", *extra)
    assert rc == 0, "export failed: %s" % msg
    return read_model(out), pt


def rand_input(h, w, seed=5):
    return np.random.default_rng(seed).uniform(0, 1, (3, h, w)).astype(np.float32)


def compare(pred, ref, box_tol=2e-3, score_tol=1e-4):
    assert pred.shape == ref.shape, "shape %s vs %s" % (pred.shape, ref.shape)
    box = np.abs(pred[:, :4] - ref[:, :4]).max()
    score = np.abs(pred[:, 4:] - ref[:, 4:]).max()
    assert box <= box_tol and score <= score_tol, \
        "differs from the reference: box %.3g px, scores %.3g" % (box, score)
    # the comparison must be able to fail: the outputs are not trivial
    assert ref[:, 4:].std() > 1e-2 and ref[:, :4].std() > 1.0, "reference output is degenerate"


def types(model):
    return [L["type"] for L in model["layers"]]


def leftovers(out):
    """The output and any temporary file the exporter made for it."""
    d, base = os.path.split(out)
    return sorted(n for n in os.listdir(d) if n == base or n.startswith(base + "."))


def expect_failure(pt, out, *words, extra=()):
    rc, msg = run_export(pt, out, *extra)
    assert rc != 0, "export should have failed: %s" % msg
    for w in words:
        assert w.lower() in msg.lower(), "message %r lacks %r" % (msg.strip(), w)
    assert not leftovers(out), "output left behind: %s" % leftovers(out)


# ---- tests -------------------------------------------------------------------------

def test_fused_tiny_matches_unfused_reference():
    obj, ref = tiny_net()
    m, _ = export_ok({"model": obj, "optimizer": None, "epoch": -1}, "tiny")
    assert types(m) == [1, 6, 1, 7, 8, 1, 9, 8, 1, 13] and m["fused"] == 1
    assert [L["src"] for L in m["layers"]] == list(range(10))
    assert m["layers"][4]["inputs"] == [3, 2] and m["layers"][9]["inputs"] == [7, 8]
    assert m["layers"][0]["act"] == 1 and abs(m["layers"][0]["alpha"] - 0.1) < 1e-7
    x = rand_input(32, 32)
    compare(forward(m, x), ref(x.astype(np.float64)))


def test_no_fuse_emits_conv2d_bn_act():
    obj, ref = tiny_net()
    m, _ = export_ok(obj, "tiny_nofuse", "--no-fuse")
    assert types(m)[:4] == [2, 3, 4, 6] and m["fused"] == 0
    assert m["layers"][1]["eps"] == np.float32(0.001) and m["layers"][2]["act"] == 1
    assert len(m["layers"][0]["tensors"]) == 1 and len(m["layers"][1]["tensors"]) == 4
    cat = [L for L in m["layers"] if L["src"] == 4][0]
    assert cat["inputs"] == [7, 6]   # Concat [-1, 2] -> the last parts of modules 3 and 2
    x = rand_input(32, 32)
    compare(forward(m, x), ref(x.astype(np.float64)))


def test_idetect_folding():
    obj, ref = tiny_net(head="IDetect")
    m, _ = export_ok(obj, "tiny_idetect")
    assert types(m)[-1] == 13 and len(m["layers"][-1]["tensors"]) == 4
    x = rand_input(32, 32)
    compare(forward(m, x), ref(x.astype(np.float64)))
    # ImplicitA/M are not silently dropped: the plain Detect result differs
    ws = [t for n, t in m["tensors"] if ".m." in n]
    obj2, _ = tiny_net(head="Detect")
    m2, _ = export_ok(obj2, "tiny_detect2")
    ws2 = [t for n, t in m2["tensors"] if ".m." in n]
    assert any(not np.allclose(a, b) for a, b in zip(ws, ws2))


def test_big_net_repconv_sppcspc_downc_reorg_shortcut():
    obj, ref = big_net()
    x = rand_input(64, 64)
    want = ref(x.astype(np.float64))
    m, _ = export_ok(obj, "big")
    # RepConv folds to one Conv layer each; SPPCSPC = 7 convs, 3 pools, 2 concats
    assert types(m).count(5) == 5 and types(m).count(10) == 1 and types(m).count(11) == 1
    rep = [L for L in m["layers"] if L["src"] in (6, 7)]
    assert [L["type"] for L in rep] == [1, 1] and rep[0]["kernel"] == 3
    compare(forward(m, x), want)
    u, _ = export_ok(obj, "big_nofuse", "--no-fuse")
    adds = [L for L in u["layers"] if L["type"] == 12]
    assert [len(L["inputs"]) for L in adds] == [3, 2] and all(L["act"] == 0 for L in adds)
    compare(forward(u, x), want)


def test_repconv_deploy_form():
    n = Net(np.float32, 9)
    rep = n.mod("models.common", "RepConv", deploy=True, groups=1, in_channels=3,
                out_channels=8)
    rep.act = rep.add("act", n.act("silu"))
    conv = rep.add("rbr_reparam", n.conv2d(3, 8, 3, 1, bias=True))
    rep.ref = lambda x: ref_act(ref_conv(x, conv), rep.act)
    head = n.Head("Detect", 1, [[(4, 4)]], [1], [8])
    obj, ref = n.model([(-1, rep), ([-1], head)], nc=1)
    m, _ = export_ok(obj, "rep_deploy")
    assert types(m) == [1, 13] and m["act"] == 2
    x = rand_input(8, 8)
    compare(forward(m, x), ref(x.astype(np.float64)))


def test_iauxdetect_skips_aux_branch():
    obj, ref = aux_net()
    m, _ = export_ok(obj, "aux")
    assert types(m) == [1, 1, 13] and m["layers"][2]["inputs"] == [0, 1]
    assert [L["src"] for L in m["layers"]] == [0, 1, 4]
    assert m["names"] == ["0"]
    x = rand_input(32, 32)
    compare(forward(m, x), ref(x.astype(np.float64)))


def test_fp32_bare_model_and_ema():
    obj, ref = tiny_net(np.float32, seed=4)
    x = rand_input(32, 32)
    m, _ = export_ok(obj, "bare32")
    compare(forward(m, x), ref(x.astype(np.float64)))
    other, _ = tiny_net(np.float32, seed=7)
    m2, _ = export_ok({"model": other, "ema": obj, "updates": 3}, "ema")
    compare(forward(m2, x), ref(x.astype(np.float64)))
    m3, _ = export_ok({"model": obj, "ema": None}, "ema_none")
    compare(forward(m3, x), ref(x.astype(np.float64)))


def test_metadata_crc_alignment_size():
    obj, _ = tiny_net()
    m, pt = export_ok({"model": obj}, "meta", "--name", "tiny-test")
    assert m["sha"] == hashlib.sha256(open(pt, "rb").read()).digest()
    assert (m["nc"], m["levels"], m["na"], m["img"], m["max_stride"], m["act"]) == \
        (2, 2, 2, 640, 4, 1)
    assert m["strides"] == [2, 4] and m["name"] == "tiny-test" and m["names"] == ["cat", "dog"]
    assert np.array_equal(m["anchors"], np.asarray(TINY_ANCHORS, np.float32))
    assert m["size"] == os.path.getsize(tmp("meta.bin"))
    # without anchor_grid the pixel anchors come from anchors (grid units) x stride
    del obj._modules["model"]._modules["9"]._buffers["anchor_grid"]
    m2, _ = export_ok(obj, "meta_nogrid")
    assert np.array_equal(m2["anchors"], np.asarray(TINY_ANCHORS, np.float32))
    # corrupting one data byte must break the data CRC (the reader has teeth)
    blob = bytearray(open(tmp("meta.bin"), "rb").read())
    blob[m["data_off"] + 5] ^= 0xFF
    open(tmp("meta_bad.bin"), "wb").write(bytes(blob))
    try:
        read_model(tmp("meta_bad.bin"))
    except AssertionError as e:
        assert "data crc" in str(e)
    else:
        raise AssertionError("corrupted file passed the CRC check")


def test_default_name_and_shared_strided_storage():
    obj, ref = tiny_net(np.float32, seed=6)
    # Re-store layer 2's conv weight transposed in a storage it shares with an
    # offset copy of the BN weight: the reader must honour offset and strides.
    conv = obj._modules["model"]._modules["2"]._modules["conv"]
    bn = obj._modules["model"]._modules["2"]._modules["bn"]
    w = conv._parameters["weight"].t.storage.flat.reshape(16, 8, 3, 3)
    g = bn._parameters["weight"].t.storage.flat
    flat = np.concatenate([np.full(3, 99, np.float32), g, w.transpose(1, 0, 2, 3).reshape(-1)])
    st = Storage(flat)
    conv._parameters["weight"] = Param(Tensor(st, 3 + 16, (16, 8, 3, 3), (9, 16 * 9, 3, 1)))
    bn._parameters["weight"] = Param(Tensor(st, 3, (16,), (1,)))
    pt = tmp("yolo-shared.pt")
    save_pt(obj, pt)
    out = tmp("shared.bin")
    rc, msg = run_export(pt, out, "--quiet")
    assert rc == 0, msg
    m = read_model(out)
    assert m["name"] == "yolo-shared"
    x = rand_input(32, 32)
    compare(forward(m, x), ref(x.astype(np.float64)))


def test_rejects_unknown_global():
    marker = tmp("pwned")
    evil = (b"\x80\x02cos\nsystem\nX" + struct.pack("<I", len("touch " + marker))
            + ("touch " + marker).encode() + b"\x85R.")
    expect_failure(pt_with_pickle("evil", evil), tmp("evil.bin"), "os.system")
    assert not os.path.exists(marker), "the pickle ran code"


def test_rejects_legacy_and_non_torch_files():
    legacy = tmp("legacy.pt")
    open(legacy, "wb").write(pickle.dumps({"model": None}, protocol=2))
    expect_failure(legacy, tmp("legacy.bin"), "legacy")
    junk = tmp("junk.pt")
    open(junk, "wb").write(b"hello world")
    expect_failure(junk, tmp("junk.bin"), "not a PyTorch zip")
    nopkl = tmp("nopkl.pt")
    with zipfile.ZipFile(nopkl, "w") as zf:
        zf.writestr("archive/version", "3\n")
    expect_failure(nopkl, tmp("nopkl.bin"), "data.pkl")
    expect_failure(tmp("does-not-exist.pt"), tmp("dne.bin"), "cannot read")


def test_rejects_missing_storage_and_keys():
    obj, _ = tiny_net()
    pt = tmp("nostorage.pt")
    save_pt(obj, pt, drop_entries=("archive/data/3",))
    expect_failure(pt, tmp("nostorage.bin"), "archive/data/3", "missing")
    obj, _ = tiny_net()
    del obj._modules["model"]._modules["2"]._modules["bn"]._buffers["running_var"]
    save_pt(obj, tmp("nokey.pt"))
    expect_failure(tmp("nokey.pt"), tmp("nokey.bin"), "layer 2", "running_var")
    obj, _ = tiny_net()
    del obj._modules["model"]._modules["9"]._modules["m"]._modules["1"]
    save_pt(obj, tmp("nohead.pt"))
    expect_failure(tmp("nohead.pt"), tmp("nohead.bin"), "layer 9", "'1'")
    save_pt({"optimizer": None, "epoch": 3}, tmp("nomodel.pt"))
    expect_failure(tmp("nomodel.pt"), tmp("nomodel.bin"), "no 'ema' or 'model'")


def test_rejects_bad_shapes_and_groups():
    obj, _ = tiny_net()
    obj._modules["model"]._modules["5"]._modules["conv"].groups = 2
    save_pt(obj, tmp("groups.pt"))
    expect_failure(tmp("groups.pt"), tmp("groups.bin"), "layer 5", "groups")
    obj, _ = tiny_net()
    obj._modules["model"]._modules["4"].f = [-1, 1]   # concat of 8x8 maps, wrong channels
    save_pt(obj, tmp("chans.pt"))
    expect_failure(tmp("chans.pt"), tmp("chans.bin"), "layer 5", "input channels")
    obj, _ = tiny_net()
    obj._modules["model"]._modules["7"].f = [-1, 1]   # 16x16 with 8x8, 8 channels each
    save_pt(obj, tmp("hw.pt"))
    expect_failure(tmp("hw.pt"), tmp("hw.bin"), "height/width")


def test_rejects_values_the_file_cannot_hold():
    cases = []
    obj, _ = tiny_net()
    obj._modules["model"]._modules["0"]._modules["act"].negative_slope = 1e300
    cases.append(("slope", obj, ("layer 0", "slope", "float32")))
    obj, _ = tiny_net()
    obj._modules["model"]._modules["6"].scale_factor = float(2 ** 40)
    cases.append(("scale", obj, ("layer 6", "kernel", "out of range")))
    obj, _ = tiny_net(np.float32)
    bn = obj._modules["model"]._modules["2"]._modules["bn"]
    bn.eps = 1e-300     # 0 in float32: with a zero variance, BN folds to 1/0
    bn._buffers["running_var"] = as_tensor(np.zeros(16, np.float32))
    cases.append(("eps", obj, ("model.2.conv.weight", "infinite or NaN")))
    for stem, obj, words in cases:
        save_pt(obj, tmp(stem + ".pt"))
        expect_failure(tmp(stem + ".pt"), tmp(stem + ".bin"), *words)
        _, msg = run_export(tmp(stem + ".pt"), tmp(stem + ".bin"))
        assert len(msg.strip().splitlines()) == 1 and "unexpected data" not in msg, msg


def test_keeps_existing_output_on_failure():
    out = tmp("keep.bin")
    open(out, "wb").write(b"old")
    obj, _ = tiny_net()
    obj._modules["model"]._modules["5"]._modules["conv"].groups = 2
    save_pt(obj, tmp("keep.pt"))
    rc, _ = run_export(tmp("keep.pt"), out)
    assert rc != 0 and open(out, "rb").read() == b"old" and leftovers(out) == ["keep.bin"]


def test_works_with_torch_hidden():
    fake = tmp("notorch")
    os.makedirs(fake, exist_ok=True)
    with open(os.path.join(fake, "torch.py"), "w") as fh:
        fh.write("raise ImportError('torch is hidden for this test')\n")
    env = dict(os.environ, PYTHONPATH=fake)
    # both layouts found in the wild: release (Detect) and training (IDetect)
    for head in ("Detect", "IDetect"):
        obj, ref = tiny_net(head=head)
        save_pt(obj, tmp("hidden.pt"))
        rc, msg = run_export(tmp("hidden.pt"), tmp("hidden.bin"), env=env)
        assert rc == 0, msg
        assert "params" in msg and "GFLOPs" in msg
        x = rand_input(32, 32)
        compare(forward(read_model(tmp("hidden.bin")), x), ref(x.astype(np.float64)))
    # the fake module really is seen first: importing torch there fails
    r = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True)
    assert r.returncode != 0


def test_help():
    r = subprocess.run([sys.executable, EXPORT, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--no-fuse" in r.stdout and "--name" in r.stdout


# ---- hostile checkpoints ---------------------------------------------------------------
# Each must be refused cleanly: status 1, one line that names the file and the
# problem, no traceback, nothing left at the output path; under an address-space
# limit, with a peak RSS near a normal export's, and within a time far above what
# a refusal takes (well under 1 s) and far below a hang.

MEM_LIMIT = 1 << 30
TIME_LIMIT = 10
PEAK_MARGIN_KIB = 100 << 10
MUTATIONS = int(os.environ.get("LIBYOLO_MUTATIONS", "1000"))


class Hang(BaseException):
    """Raised by the alarm in the mutation driver: a case that would not end."""


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEM_LIMIT, MEM_LIMIT))


def bounded_run(argv, timeout=TIME_LIMIT):
    """Runs argv under MEM_LIMIT; returns (status, output, seconds, peak RSS in KiB).
    A run still going after timeout seconds is killed, and fails the test."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    with tempfile.TemporaryFile() as out:
        start = time.monotonic()
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                             preexec_fn=_limit_memory)
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        _, status, usage = os.wait4(p.pid, 0)
        timer.cancel()
        p.returncode = os.waitstatus_to_exitcode(status)
        secs = time.monotonic() - start
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    assert secs < timeout, "still running after %d s, killed: %s" % (timeout, text[-500:])
    return p.returncode, text, secs, usage.ru_maxrss


def hostile_base():
    """A training-style checkpoint (model and ema): more than 256 memo entries,
    so its pickle has the 4-byte memo indices of real ones."""
    return {"model": tiny_net(seed=1)[0], "ema": tiny_net(seed=2)[0], "optimizer": None,
            "epoch": -1}


_BASELINE = []


def baseline_peak():
    """Peak RSS (KiB) of a normal export of hostile_base(), measured once."""
    if not _BASELINE:
        save_pt(hostile_base(), tmp("base.pt"))
        rc, msg, _, peak = bounded_run([sys.executable, EXPORT, tmp("base.pt"), tmp("base.bin")])
        assert rc == 0, msg
        _BASELINE.append(peak)
    return _BASELINE[0]


def check_refusal(pt, out, rc, msg):
    """The clean-refusal rules, for one run (subprocess or in-process)."""
    lines = msg.strip().splitlines()
    assert rc == 1 and len(lines) == 1 and lines[0].startswith("export.py: error: %s: " % pt), \
        "not a clean refusal (status %s): %s" % (rc, msg[-3000:])
    for net in ("out of memory", "nesting too deep", "unexpected data"):   # the last resorts
        assert net not in msg, "refused by the last-resort handler: %s" % msg
    assert not leftovers(out), "output left behind: %s" % leftovers(out)


def expect_refusal(pt, stem, *words, extra=()):
    """Exports pt, which must be refused cleanly and within the bounds, with a
    message holding each of words. Returns (seconds, peak RSS KiB)."""
    out = tmp(stem + ".bin")
    rc, msg, secs, peak = bounded_run([sys.executable, EXPORT, pt, out] + list(extra))
    check_refusal(pt, out, rc, msg)
    for w in words:
        assert w.lower() in msg.lower(), "message %r lacks %r" % (msg.strip(), w)
    assert peak <= baseline_peak() + PEAK_MARGIN_KIB, \
        "%s: peak RSS %d KiB, a normal export %d KiB" % (stem, peak, baseline_peak())
    return secs, peak


def pt_with_pickle(stem, data):
    """A checkpoint zip whose data.pkl is the given bytes."""
    path = tmp(stem + ".pt")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data)
        zf.writestr("archive/version", "3\n")
    return path


def zeros_writer(nbytes):
    """Writes an entry of nbytes zeros, deflated (~1000:1: a zip bomb)."""
    def write(zf, name):
        info = zipfile.ZipInfo(name)
        info.compress_type = zipfile.ZIP_DEFLATED
        chunk = bytes(1 << 20)
        with zf.open(info, "w", force_zip64=True) as fh:
            for _ in range(nbytes >> 20):
                fh.write(chunk)
    return write


def storage_key(obj, storage):
    """The zip entry the writer gives a storage."""
    return "archive/data/%d" % pickled(obj)[1].index(storage)


def test_refuses_module_tree_loop_and_depth():
    obj = hostile_base()
    seq = obj["ema"]._modules["model"]
    seq._modules["5"]._modules["loop"] = seq     # was a hang, after writing the output
    save_pt(obj, tmp("loop.pt"))
    expect_refusal(tmp("loop.pt"), "loop", "loops", "'model.5.loop' is 'model'")
    obj = hostile_base()
    m = obj["ema"]._modules["model"]._modules["5"]._modules
    for _ in range(100):
        m["deeper"] = fake_global("torch.nn.modules.container", "Sequential")()
        m["deeper"].__dict__.update(_modules=collections.OrderedDict())
        m = m["deeper"]._modules
    save_pt(obj, tmp("deep.pt"))
    expect_refusal(tmp("deep.pt"), "deep", "module nesting", "--max-depth")


def test_refuses_a_model_beyond_max_bytes():
    # 60 layers share one 64x64x3x3 convolution and its BatchNorm: 74 KB of
    # storage, read once, but each layer folds its own 147 KB float32 copy
    n = Net(np.float16, 3)
    first, convs = n.Conv(3, 64, 3), [n.Conv(64, 64, 3) for _ in range(60)]
    for c in convs[1:]:
        for sub in ("conv", "bn"):
            c.obj._modules[sub] = convs[0].obj._modules[sub]
    head = n.Head("Detect", 1, [[(4, 4)]], [1], [64])
    obj, _ = n.model([(-1, first)] + [(-1, c) for c in convs] + [(-1, head)], nc=1)
    save_pt(obj, tmp("sharedconv.pt"))
    assert os.path.getsize(tmp("sharedconv.pt")) < 1 << 20
    expect_refusal(tmp("sharedconv.pt"), "sharedconv", "bytes of weights", "--max-bytes",
                   extra=["--max-bytes", str(2 << 20)])


def long_pickle(*parts):
    return b"\x80\x02" + b"".join(parts) + b"."


def test_refuses_pickles_beyond_the_bounds():
    encode = b"c_codecs\nencode\nq\x00"
    text = b"X" + struct.pack("<I", 1 << 20) + b"a" * (1 << 20) + b"q\x01"
    ints = b"".join(b"J" + struct.pack("<i", i) for i in range(50000))
    cases = [
        # a dict stored at memo index 2**31 - 16: the unpickler's memo array grows to it
        ("memo", long_pickle(b"}r", struct.pack("<I", 0x7FFFFFF0)), "memo index", "--max-memo"),
        ("memo_get", long_pickle(b"}j", struct.pack("<I", 4321)), "never stored"),
        ("stack", long_pickle(b"N" * 150000), "--max-stack"),
        ("marks", long_pickle(b"(" * 150000, b"N"), "--max-stack"),
        # a tuple 300,000 deep as a dict key: hashing it overflows the C stack
        ("tuple", long_pickle(b"})", b"\x85" * 300000, b"Ns"), "tuples nested", "--max-depth"),
        ("bytes", long_pickle(b"B", struct.pack("<I", 0x7FFFFFF0), b"ab"), "remain"),
        ("string", long_pickle(b"\x8d", struct.pack("<Q", 1 << 62), b"ab"), "remain"),
        # set(list) of 50,000 ints, 20,000 times: a copy per call
        ("copies", long_pickle(b"c__builtin__\nset\nq\x00]q\x01(", ints, b"e0]",
                               b"h\x00h\x01\x85Ra" * 20000), "copies more elements"),
        # a 1 MiB string encoded 2,000 times
        ("encode", long_pickle(encode, text, b"0]", b"h\x00h\x01X\x06\x00\x00\x00latin1\x86Ra"
                               * 2000), "encodes more text"),
        # numpy.ndarray called directly allocates any shape
        ("ndarray", long_pickle(b"cnumpy\nndarray\n\x8a\x06\x00\x00\x00\x00\x00\x01\x85\x85R"),
         "cannot unpickle", "not callable"),
    ]
    for stem, data, *words in cases:
        expect_refusal(pt_with_pickle(stem, data), stem, "data.pkl", *words)
    save_pt(hostile_base(), tmp("ops.pt"))
    expect_refusal(tmp("ops.pt"), "ops", "opcodes", extra=["--max-pickle-ops", "1000"])
    expect_refusal(tmp("ops.pt"), "pkl_bytes", "--max-pickle-bytes",
                   extra=["--max-pickle-bytes", "1000"])


def test_refuses_zip_bombs_and_oversized_storages():
    bomb = 128 << 20
    obj = hostile_base()
    conv = obj["ema"]._modules["model"]._modules["0"]._modules["conv"]
    # the zip says 128 MiB where the pickle says 216 halves: refused before inflating
    key = storage_key(obj, conv._parameters["weight"].t.storage)
    save_pt(obj, tmp("bomb.pt"), writers={key: zeros_writer(bomb)})
    assert os.path.getsize(tmp("bomb.pt")) < 1 << 20
    expect_refusal(tmp("bomb.pt"), "bomb", key, "the zip declares %d bytes" % bomb)
    # the pickle agrees (a view of a 128 MiB storage) but --max-bytes is lower
    big = Storage(np.zeros(0, np.float32), numel=bomb // 4)
    conv._parameters["weight"] = Param(Tensor(big, 0, (8, 3, 3, 3), (27, 9, 3, 1)))
    save_pt(obj, tmp("bomb2.pt"), writers={storage_key(obj, big): zeros_writer(bomb)})
    expect_refusal(tmp("bomb2.pt"), "bomb2", "storages", "--max-bytes",
                   extra=["--max-bytes", str(64 << 20)])
    # a view with stride 0 claims 2**32 elements of a 1-element storage
    conv._parameters["weight"] = Param(Tensor(Storage(np.zeros(1, np.float32)), 0,
                                              (1 << 16, 1 << 16), (0, 0)))
    save_pt(obj, tmp("stride0.pt"))
    expect_refusal(tmp("stride0.pt"), "stride0", "bytes of tensors", "--max-bytes")
    # data.pkl itself inflating to 128 MiB
    save_pt(hostile_base(), tmp("pklbomb.pt"), writers={"archive/data.pkl": zeros_writer(bomb)})
    expect_refusal(tmp("pklbomb.pt"), "pklbomb", "--max-pickle-bytes")
    expect_refusal(tmp("pklbomb.pt"), "filesize", "file size", "--max-bytes",
                   extra=["--max-bytes", "10000"])


def test_refuses_too_many_tensors():
    obj = hostile_base()
    shared = Storage(np.zeros(4, np.float32))
    obj["extra"] = [Tensor(shared, 0, (1,), (1,)) for _ in range(20001)]
    save_pt(obj, tmp("many.pt"))
    expect_refusal(tmp("many.pt"), "many", "tensors: 20001", "--max-tensors")
    save_pt(hostile_base(), tmp("entries.pt"))
    with zipfile.ZipFile(tmp("entries.pt"), "a") as zf:
        for i in range(200):
            zf.writestr("archive/junk/%d" % i, b"")
    expect_refusal(tmp("entries.pt"), "entries", "zip entries", "--max-tensors",
                   extra=["--max-tensors", "100"])
    # names of 1,000 bytes: a directory too large for the entries allowed, refused
    # before zipfile parses it
    save_pt(hostile_base(), tmp("names.pt"))
    with zipfile.ZipFile(tmp("names.pt"), "a") as zf:
        for i in range(100):
            zf.writestr("archive/junk/%d/%s" % (i, "n" * 1000), b"")
    expect_refusal(tmp("names.pt"), "names", "zip directory bytes", "--max-tensors",
                   extra=["--max-tensors", "100"])


# -- single-byte mutations of a real-format pickle, run in one process (a
#    subprocess per case would take minutes) under the same limits

WIDE_ARGS = {"LONG_BINPUT", "LONG_BINGET", "BININT", "BINUNICODE", "BINSTRING", "BINBYTES",
             "BINPUT", "BINGET", "BININT1", "BININT2", "SHORT_BINSTRING"}


def mutation_cases(data, n, seed=11):
    """n (position, byte) changes: a third on opcodes, a third in the arguments
    that carry memo indices, lengths and integers, a third anywhere."""
    rng = random.Random(seed)
    ops, args = [], []
    for op, _, pos in pickletools.genops(data):
        ops.append(pos)
        if op.name in WIDE_ARGS:
            args.extend(range(pos + 1, pos + 1 + op.arg.n))
    codes = [op.code.encode("latin-1")[0] for op in pickletools.opcodes]
    cases = []
    for i in range(n):
        if i % 3 == 0:
            cases.append((rng.choice(ops), rng.choice(codes)))
        elif i % 3 == 1:
            cases.append((rng.choice(args), rng.choice([0x00, 0x7F, 0x80, 0xFF,
                                                         rng.randrange(256)])))
        else:
            cases.append((rng.randrange(len(data)), rng.randrange(256)))
    return cases


def mutation_driver(base, n, report):
    """Exports n mutations of base's data.pkl in this process; writes a JSON report."""
    sys.path.insert(0, TOOLS)
    import export
    with zipfile.ZipFile(base) as zf:
        entries = [(i.filename, zf.read(i)) for i in zf.infolist()]
    data = dict(entries)["archive/data.pkl"]
    work = os.path.dirname(report)
    pt, out = os.path.join(work, "mutant.pt"), os.path.join(work, "mutant.bin")

    def alarm(signum, frame):
        raise Hang()
    signal.signal(signal.SIGALRM, alarm)
    results = []
    for pos, value in mutation_cases(data, n):
        with zipfile.ZipFile(pt, "w") as zf:
            for name, blob in entries:
                zf.writestr(name, data[:pos] + bytes([value]) + data[pos + 1:]
                            if name == "archive/data.pkl" else blob)
        err = io.StringIO()
        start = time.monotonic()
        signal.alarm(TIME_LIMIT)
        try:
            with contextlib.redirect_stderr(err):
                rc, escaped = export.main([pt, out, "--quiet"]), None
        except BaseException:        # what the test is looking for (Hang included)
            rc, escaped = None, traceback.format_exc()[-3000:]
        finally:
            signal.alarm(0)
        secs = time.monotonic() - start
        problem = escaped
        if rc == 0:
            try:
                read_model(out)
            except Exception:
                problem = "exported an unreadable file: %s" % traceback.format_exc()[-1000:]
            os.unlink(out)
        elif problem is None:
            try:
                check_refusal(pt, out, rc, err.getvalue())
            except AssertionError as e:
                problem = str(e)
        results.append(dict(pos=pos, value=value, rc=rc, secs=secs, problem=problem,
                            msg=err.getvalue().strip()))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open(report, "w") as fh:
        json.dump(dict(results=results, peak=peak), fh)
    shutil.rmtree(TMP, ignore_errors=True)


def test_mutated_pickles_export_or_refuse_cleanly():
    save_pt(hostile_base(), tmp("mutate.pt"))
    os.makedirs(tmp("mutations"), exist_ok=True)
    report = os.path.join(tmp("mutations"), "report.json")
    rc, msg, secs, peak = bounded_run(
        [sys.executable, os.path.abspath(__file__), "--mutations", tmp("mutate.pt"),
         str(MUTATIONS), report], timeout=TIME_LIMIT + MUTATIONS)
    assert rc == 0, "the mutation driver failed: %s" % msg[-3000:]
    r = json.load(open(report))
    bad = [c for c in r["results"] if c["problem"]]
    assert not bad, "%d of %d mutations not handled cleanly, e.g. byte %d -> 0x%02x: %s" % (
        len(bad), len(r["results"]), bad[0]["pos"], bad[0]["value"], bad[0]["problem"])
    slowest = max(c["secs"] for c in r["results"])
    assert slowest < TIME_LIMIT
    assert r["peak"] <= baseline_peak() + PEAK_MARGIN_KIB, \
        "peak RSS %d KiB over %d mutations, a normal export %d KiB" % (
            r["peak"], len(r["results"]), baseline_peak())
    refused = sum(c["rc"] == 1 for c in r["results"])
    print("     %d mutations: %d refused, %d exported; slowest %.3f s, peak RSS %d MiB"
          % (len(r["results"]), refused, len(r["results"]) - refused, slowest,
             r["peak"] >> 10))


def main():
    tests = [(n, f) for n, f in sorted(globals().items()) if n.startswith("test_")]
    passed = failed = 0
    for name, fn in tests:
        try:
            fn()
        except Exception:
            failed += 1
            print("FAIL %s\n%s" % (name, traceback.format_exc().rstrip()))
        else:
            passed += 1
            print("ok   %s" % name)
    shutil.rmtree(TMP, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--mutations"]:
        mutation_driver(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        sys.exit(0)
    sys.exit(main())
