#!/usr/bin/env python3
"""Exports a YOLOv7 PyTorch checkpoint (.pt) to the libyolo model format
(docs/model-format.md). Needs only Python 3 and numpy: the checkpoint is read
by tools/ptload.py, which never runs code from the file and never imports torch.

    python3 tools/export.py IN.pt OUT.bin [--no-fuse] [--name NAME] [--quiet]

The network is taken from the pickled modules (Model._modules['model']), not
from the yaml, so the activation and every shape are what the file holds.
By default BatchNorm, RepConv branches and the implicit layers of IDetect /
IAuxDetect heads are folded in float32, as the official Model.fuse() does;
--no-fuse keeps Conv2d, BatchNorm2d and activation layers apart (implicit
layers are still folded into the head: the format has no layer for them).
"""

import argparse
import hashlib
import os
import struct
import sys
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ptload  # noqa: E402  (local module next to this script)

# ---- file format constants (docs/model-format.md) ------------------------------

MAGIC = b"LIBYOLO\0"
VERSION = 1
HEADER_SIZE = 128
LAYER_SIZE = 192
TENSOR_SIZE = 96
DATA_ALIGN = 64
MAX_LAYERS = 4096
MAX_TENSORS = 65536
MAX_INPUTS = 16
NO_TENSOR = 0xFFFFFFFF
INT32_MAX = 2 ** 31 - 1
FLT_MAX = float(np.finfo(np.float32).max)

CONV, CONV2D, BATCHNORM, ACT, MAXPOOL, MP, SP, CONCAT, UPSAMPLE, SHORTCUT, REORG, ADD, \
    DETECT = range(1, 14)
TYPE_NAMES = {CONV: "Conv", CONV2D: "Conv2d", BATCHNORM: "BatchNorm2d", ACT: "activation",
              MAXPOOL: "MaxPool2d", MP: "MP", SP: "SP", CONCAT: "Concat",
              UPSAMPLE: "Upsample", SHORTCUT: "Shortcut", REORG: "ReOrg", ADD: "Add",
              DETECT: "Detect"}
ACT_NONE, ACT_LEAKY, ACT_SILU = 0, 1, 2
ACT_NAMES = {ACT_NONE: "none", ACT_LEAKY: "LeakyReLU", ACT_SILU: "SiLU"}
HEADS = ("Detect", "IDetect", "IAuxDetect")


class ExportError(Exception):
    """A checkpoint this exporter cannot turn into a model file."""


def fail(where, msg):
    raise ExportError("%s: %s" % (where, msg))


# ---- reading pickled modules -----------------------------------------------------

def kind_of(mod):
    return mod.kind if isinstance(mod, ptload.Module) else type(mod).__name__


def child(mod, name, where, kinds=None):
    """A required child module, optionally of one of the given kinds."""
    c = mod.child(name) if isinstance(mod, ptload.Module) else None
    if c is None and isinstance(mod, ptload.Module):
        c = mod.attr(name)
    if not isinstance(c, ptload.Module):
        fail(where, "missing submodule '%s'" % name)
    if kinds and c.kind not in kinds:
        fail(where, "submodule '%s' is a %s, expected %s" % (name, c.cls, "/".join(kinds)))
    return c


def optional_child(mod, name):
    c = mod.child(name)
    if c is None:
        c = mod.attr(name)
    return c if isinstance(c, ptload.Module) else None


def tensor(mod, name, where, shape=None, required=True):
    """A parameter/buffer as float32, checked for shape and finite values."""
    t = mod.tensor(name)
    if t is None:
        if required:
            fail(where, "missing tensor '%s'" % name)
        return None
    if not isinstance(t, np.ndarray) or t.dtype.kind != "f":
        fail(where, "tensor '%s' is not a float tensor" % name)
    if shape is not None and tuple(t.shape) != tuple(shape):
        fail(where, "tensor '%s' has shape %s, expected %s"
             % (name, list(t.shape), list(shape)))
    t = t.astype(np.float32)
    if not np.all(np.isfinite(t)):
        fail(where, "tensor '%s' holds NaN or infinite values" % name)
    return t


def pair(value, what, where):
    """A PyTorch int-or-tuple hyper-parameter that must be square."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            fail(where, "%s %s is not square" % (what, list(value)))
        value = value[0]
    if not isinstance(value, int) or value < 0:
        fail(where, "%s %r is not a non-negative integer" % (what, value))
    return value


class ConvSpec:
    """A validated nn.Conv2d: fp32 weight/bias and its hyper-parameters."""

    def __init__(self, conv, where):
        if conv.kind != "Conv2d":
            fail(where, "expected a Conv2d, found %s" % conv.cls)
        groups = conv.attr("groups", 1)
        if groups != 1:
            fail(where, "grouped convolution (groups=%r) is not supported" % (groups,))
        if pair(conv.attr("dilation", 1), "dilation", where) != 1:
            fail(where, "dilated convolution is not supported")
        if conv.attr("padding_mode", "zeros") != "zeros":
            fail(where, "padding_mode %r is not supported" % (conv.attr("padding_mode"),))
        if isinstance(conv.attr("padding"), str):
            fail(where, "string padding %r is not supported" % (conv.attr("padding"),))
        self.k = pair(conv.attr("kernel_size"), "kernel_size", where)
        self.s = pair(conv.attr("stride", 1), "stride", where)
        self.p = pair(conv.attr("padding", 0), "padding", where)
        cin, cout = conv.attr("in_channels"), conv.attr("out_channels")
        if not isinstance(cin, int) or not isinstance(cout, int) or cin < 1 or cout < 1:
            fail(where, "bad in/out channels %r/%r" % (cin, cout))
        if self.k < 1 or self.s < 1:
            fail(where, "kernel %d / stride %d must be >= 1" % (self.k, self.s))
        self.w = tensor(conv, "weight", where, (cout, cin, self.k, self.k))
        self.b = tensor(conv, "bias", where, (cout,), required=False)
        self.cin, self.cout = cin, cout


class BNSpec:
    """A validated BatchNorm2d (fp32)."""

    def __init__(self, bn, c, where):
        if bn.kind != "BatchNorm2d":
            fail(where, "expected a BatchNorm2d, found %s" % bn.cls)
        self.eps = bn.attr("eps")
        if not isinstance(self.eps, float) or not self.eps > 0:
            fail(where, "BatchNorm2d eps %r is not a positive float" % (self.eps,))
        self.mean = tensor(bn, "running_mean", where, (c,))
        self.var = tensor(bn, "running_var", where, (c,))
        if np.any(self.var < 0):
            fail(where, "BatchNorm2d running_var has negative values")
        gamma = tensor(bn, "weight", where, (c,), required=False)
        beta = tensor(bn, "bias", where, (c,), required=False)
        self.gamma = gamma if gamma is not None else np.ones(c, np.float32)
        self.beta = beta if beta is not None else np.zeros(c, np.float32)

    def fold(self, w, b):
        """Folds this BN into a conv (w, b) the way Model.fuse() does, in fp32:
        s = sqrt(var + eps); w' = (gamma/s) w; b' = beta - (gamma*mean)/s
        (plus (gamma/s) b if the conv has its own bias)."""
        s = np.sqrt(self.var + np.float32(self.eps)).astype(np.float32)
        scale = (self.gamma / s).astype(np.float32)
        wf = (w * scale.reshape(-1, 1, 1, 1)).astype(np.float32)
        bf = (self.beta - (self.gamma * self.mean) / s).astype(np.float32)
        if b is not None:
            bf = (bf + scale * b).astype(np.float32)
        return wf, bf


def activation(mod, where):
    """(act code, alpha) from a pickled activation module."""
    if mod is None:
        return ACT_NONE, 0.0
    if mod.kind == "LeakyReLU":
        slope = mod.attr("negative_slope", 0.01)
        if not isinstance(slope, (int, float)):
            fail(where, "LeakyReLU negative_slope %r is not a number" % (slope,))
        return ACT_LEAKY, float(slope)
    if mod.kind == "SiLU":
        return ACT_SILU, 0.0
    if mod.kind == "Identity":
        return ACT_NONE, 0.0
    fail(where, "activation %s is not supported (only LeakyReLU, SiLU, Identity)" % mod.cls)


def pool_params(mp, where):
    """(kernel, stride, pad) of a validated MaxPool2d."""
    if mp.kind != "MaxPool2d":
        fail(where, "expected a MaxPool2d, found %s" % mp.cls)
    if mp.attr("ceil_mode", False):
        fail(where, "MaxPool2d with ceil_mode is not supported")
    if mp.attr("return_indices", False):
        fail(where, "MaxPool2d with return_indices is not supported")
    if pair(mp.attr("dilation", 1), "dilation", where) != 1:
        fail(where, "dilated MaxPool2d is not supported")
    k = pair(mp.attr("kernel_size"), "kernel_size", where)
    stride = mp.attr("stride")
    s = k if stride is None or stride == () or stride == [] else pair(stride, "stride", where)
    p = pair(mp.attr("padding", 0), "padding", where)
    if k < 1 or s < 1 or p > k // 2:
        fail(where, "MaxPool2d kernel %d stride %d pad %d is invalid" % (k, s, p))
    return k, s, p


# ---- the layer graph being built -----------------------------------------------

class Graph:
    """Layers and tensors in file order, with output channels for checks."""

    def __init__(self, in_channels, max_bytes):
        self.layers = []
        self.tensors = []   # (name, float32 array)
        self.in_channels = in_channels
        # Modules may share tensors in a pickle, and each use is a new copy here:
        # the file's own limits and --max-bytes stop a small checkpoint from
        # building a huge model.
        self.max_bytes = max_bytes
        self.nbytes = 0

    def channels(self, idx):
        return self.in_channels if idx == -1 else self.layers[idx]["c_out"]

    def add_tensor(self, name, arr):
        if len(name.encode()) > 55:
            name = name[:27] + "~" + name[-27:]
        if len(self.tensors) >= MAX_TENSORS:
            fail("graph", "more than %d tensors (the file format's limit)" % MAX_TENSORS)
        self.nbytes += 4 * arr.size
        if self.nbytes > self.max_bytes:
            fail("graph", "%d bytes of weights, more than the limit of %d (--max-bytes)"
                 % (self.nbytes, self.max_bytes))
        if not np.all(np.isfinite(arr)):
            fail(name, "infinite or NaN values after folding (extreme BatchNorm or implicit "
                       "values)")
        self.tensors.append((name, np.ascontiguousarray(arr, dtype=np.float32)))
        return len(self.tensors) - 1

    def add(self, ltype, inputs, c_out, src, act=ACT_NONE, alpha=0.0, kernel=0, stride=0,
            pad=0, eps=0.0, tensors=()):
        if not 1 <= len(inputs) <= MAX_INPUTS:
            fail("layer %d" % src, "%d inputs (1..%d allowed)" % (len(inputs), MAX_INPUTS))
        if len(self.layers) >= MAX_LAYERS:
            fail("graph", "more than %d layers (the file format's limit)" % MAX_LAYERS)
        # what the file's int32/float32 fields can hold
        for what, v in (("channels", c_out), ("kernel", kernel), ("stride", stride),
                        ("padding", pad)):
            if not 0 <= v <= INT32_MAX:
                fail("layer %d" % src, "%s %d out of range" % (what, v))
        for what, v in (("slope", alpha), ("eps", eps)):
            if not abs(v) <= FLT_MAX:
                fail("layer %d" % src, "%s %r is not a finite float32" % (what, v))
        self.layers.append(dict(type=ltype, act=act, alpha=alpha, inputs=list(inputs),
                                c_out=int(c_out), kernel=kernel, stride=stride, pad=pad,
                                eps=eps, tensors=list(tensors), src=src))
        return len(self.layers) - 1

    # -- building blocks shared by several modules --

    def conv(self, inp, w, b, k, s, p, act, alpha, name, src, ltype=CONV):
        where = "layer %d (%s)" % (src, name)
        if w.shape[1] != self.channels(inp):
            fail(where, "weight expects %d input channels, its input has %d"
                 % (w.shape[1], self.channels(inp)))
        ts = [self.add_tensor(name + ".weight", w)]
        if b is not None:
            ts.append(self.add_tensor(name + ".bias", b))
        return self.add(ltype, [inp], w.shape[0], src, act=act, alpha=alpha, kernel=k,
                        stride=s, pad=p, tensors=ts)

    def batchnorm(self, inp, bn, name, src):
        ts = [self.add_tensor(name + "." + n, t) for n, t in
              (("weight", bn.gamma), ("bias", bn.beta), ("running_mean", bn.mean),
               ("running_var", bn.var))]
        return self.add(BATCHNORM, [inp], self.channels(inp), src, eps=bn.eps, tensors=ts)

    def act(self, inp, act, alpha, src):
        if act == ACT_NONE:
            return inp
        return self.add(ACT, [inp], self.channels(inp), src, act=act, alpha=alpha)


# ---- one emitter per module kind ---------------------------------------------------
# Each takes (exporter, module, input C-layer indices, name prefix, source index)
# and returns the index of the last layer it emitted (the module's output).

class Exporter:
    def __init__(self, fuse, max_bytes):
        self.fuse = fuse
        self.max_bytes = max_bytes
        self.graph = None
        self.act_counts = {}
        self.folded_implicit = 0   # elements of ImplicitA/M folded into the head
        self.head = None

    def note_act(self, act):
        self.act_counts[act] = self.act_counts.get(act, 0) + 1

    def conv_module(self, mod, inp, name, src):
        """models.common.Conv: Conv2d (no bias) + BatchNorm2d + act."""
        where = "layer %d (%s)" % (src, name)
        spec = ConvSpec(child(mod, "conv", where), where + ".conv")
        bnmod = optional_child(mod, "bn")
        bn = BNSpec(bnmod, spec.cout, where + ".bn") if bnmod is not None else None
        act, alpha = activation(optional_child(mod, "act"), where + ".act")
        self.note_act(act)
        g = self.graph
        if self.fuse:
            w, b = bn.fold(spec.w, spec.b) if bn else (spec.w, spec.b)
            return g.conv(inp, w, b, spec.k, spec.s, spec.p, act, alpha, name + ".conv", src)
        x = g.conv(inp, spec.w, spec.b, spec.k, spec.s, spec.p, ACT_NONE, 0.0, name + ".conv",
                   src, ltype=CONV2D)
        if bn:
            x = g.batchnorm(x, bn, name + ".bn", src)
        return g.act(x, act, alpha, src)

    def repconv(self, mod, inp, name, src):
        """models.common.RepConv: deploy (rbr_reparam) or three BN branches."""
        where = "layer %d (%s)" % (src, name)
        act, alpha = activation(optional_child(mod, "act"), where + ".act")
        self.note_act(act)
        g = self.graph
        reparam = optional_child(mod, "rbr_reparam")
        if reparam is not None:
            spec = ConvSpec(reparam, where + ".rbr_reparam")
            if self.fuse:
                return g.conv(inp, spec.w, spec.b, spec.k, spec.s, spec.p, act, alpha,
                              name + ".rbr_reparam", src)
            x = g.conv(inp, spec.w, spec.b, spec.k, spec.s, spec.p, ACT_NONE, 0.0,
                       name + ".rbr_reparam", src, ltype=CONV2D)
            return g.act(x, act, alpha, src)
        branches = []
        for bname, ksize in (("rbr_dense", 3), ("rbr_1x1", 1)):
            seq = child(mod, bname, where, ("Sequential",))
            bw = "%s.%s" % (where, bname)
            spec = ConvSpec(child(seq, "0", bw), bw + ".0")
            bn = BNSpec(child(seq, "1", bw), spec.cout, bw + ".1")
            if spec.k != ksize or spec.p != ksize // 2:
                fail(bw, "expected a %dx%d conv with padding %d, found k=%d p=%d"
                     % (ksize, ksize, ksize // 2, spec.k, spec.p))
            branches.append((bname, spec, bn))
        dense, one = branches[0][1], branches[1][1]
        if dense.s != one.s or dense.cout != one.cout or dense.cin != one.cin:
            fail(where, "rbr_dense and rbr_1x1 differ in stride or channels")
        ident = optional_child(mod, "rbr_identity")
        id_bn = None
        if ident is not None:
            if dense.cin != dense.cout or dense.s != 1:
                fail(where, "rbr_identity needs equal channels and stride 1")
            id_bn = BNSpec(ident, dense.cout, where + ".rbr_identity")
        if self.fuse:
            w3, b3 = branches[0][2].fold(dense.w, dense.b)
            w1, b1 = branches[1][2].fold(one.w, one.b)
            w = w3.copy()
            w[:, :, 1:2, 1:2] = w1 + w3[:, :, 1:2, 1:2]
            b = (b1 + b3).astype(np.float32)
            if id_bn is not None:
                kid = np.zeros_like(w3)
                kid[np.arange(dense.cout), np.arange(dense.cout), 1, 1] = 1.0
                wid, bid = id_bn.fold(kid, None)
                w = (w + wid).astype(np.float32)
                b = (b + bid).astype(np.float32)
            return g.conv(inp, w, b, 3, dense.s, 1, act, alpha, name + ".rbr_reparam", src)
        outs = []
        for bname, spec, bn in branches:
            x = g.conv(inp, spec.w, spec.b, spec.k, spec.s, spec.p, ACT_NONE, 0.0,
                       "%s.%s.0" % (name, bname), src, ltype=CONV2D)
            outs.append(g.batchnorm(x, bn, "%s.%s.1" % (name, bname), src))
        if id_bn is not None:
            outs.append(g.batchnorm(inp, id_bn, name + ".rbr_identity", src))
        x = g.add(ADD, outs, dense.cout, src)
        return g.act(x, act, alpha, src)

    def sppcspc(self, mod, inp, name, src):
        """models.common.SPPCSPC expanded into its Conv, MaxPool2d, Concat parts."""
        where = "layer %d (%s)" % (src, name)
        g = self.graph
        cv = {n: child(mod, n, where, ("Conv",)) for n in
              ("cv1", "cv2", "cv3", "cv4", "cv5", "cv6", "cv7")}
        pools = child(mod, "m", where, ("ModuleList", "Sequential")).children()
        if not pools:
            fail(where, "no max-pools in 'm'")
        x = self.conv_module(cv["cv1"], inp, name + ".cv1", src)
        x = self.conv_module(cv["cv3"], x, name + ".cv3", src)
        x1 = self.conv_module(cv["cv4"], x, name + ".cv4", src)
        cat = [x1]
        for pname, pool in pools:
            k, s, p = pool_params(pool, "%s.m.%s" % (where, pname))
            cat.append(g.add(MAXPOOL, [x1], g.channels(x1), src, kernel=k, stride=s, pad=p))
        x = g.add(CONCAT, cat, sum(g.channels(c) for c in cat), src)
        x = self.conv_module(cv["cv5"], x, name + ".cv5", src)
        y1 = self.conv_module(cv["cv6"], x, name + ".cv6", src)
        y2 = self.conv_module(cv["cv2"], inp, name + ".cv2", src)
        x = g.add(CONCAT, [y1, y2], g.channels(y1) + g.channels(y2), src)
        return self.conv_module(cv["cv7"], x, name + ".cv7", src)

    def downc(self, mod, inp, name, src):
        """models.common.DownC: concat(cv2(cv1(x)), cv3(maxpool(x)))."""
        where = "layer %d (%s)" % (src, name)
        g = self.graph
        a = self.conv_module(child(mod, "cv1", where, ("Conv",)), inp, name + ".cv1", src)
        a = self.conv_module(child(mod, "cv2", where, ("Conv",)), a, name + ".cv2", src)
        k, s, p = pool_params(child(mod, "mp", where), where + ".mp")
        b = g.add(MAXPOOL, [inp], g.channels(inp), src, kernel=k, stride=s, pad=p)
        b = self.conv_module(child(mod, "cv3", where, ("Conv",)), b, name + ".cv3", src)
        return g.add(CONCAT, [a, b], g.channels(a) + g.channels(b), src)

    def simple(self, mod, inputs, name, src):
        """Parameter-free modules."""
        where = "layer %d (%s)" % (src, mod.kind)
        g = self.graph
        kind = mod.kind
        one = inputs[:1]
        if kind != "Concat" and kind != "Shortcut" and len(inputs) != 1:
            fail(where, "expected one input, 'f' names %d" % len(inputs))
        if kind == "Concat":
            if mod.attr("d", 1) != 1:
                fail(where, "concatenation along dimension %r is not supported"
                     % (mod.attr("d"),))
            return g.add(CONCAT, inputs, sum(g.channels(i) for i in inputs), src)
        if kind == "Shortcut":
            if len(inputs) != 2:
                fail(where, "expected two inputs, 'f' names %d" % len(inputs))
            if g.channels(inputs[0]) != g.channels(inputs[1]):
                fail(where, "inputs have %d and %d channels"
                     % (g.channels(inputs[0]), g.channels(inputs[1])))
            return g.add(SHORTCUT, inputs, g.channels(inputs[0]), src)
        if kind == "MP":
            k, s, p = pool_params(child(mod, "m", where), where + ".m")
            if (k, s, p) != (2, 2, 0):
                fail(where, "MP must pool 2x2 stride 2 (found k=%d s=%d p=%d)" % (k, s, p))
            return g.add(MP, one, g.channels(one[0]), src, kernel=2, stride=2)
        if kind == "SP":
            k, s, p = pool_params(child(mod, "m", where), where + ".m")
            if s != 1 or p != k // 2 or k % 2 != 1:
                fail(where, "SP must pool k (odd) stride 1 pad k/2 (found k=%d s=%d p=%d)"
                     % (k, s, p))
            return g.add(SP, one, g.channels(one[0]), src, kernel=k, stride=1, pad=p)
        if kind == "MaxPool2d":
            k, s, p = pool_params(mod, where)
            return g.add(MAXPOOL, one, g.channels(one[0]), src, kernel=k, stride=s, pad=p)
        if kind == "Upsample":
            if mod.attr("mode", "nearest") != "nearest":
                fail(where, "Upsample mode %r is not supported" % (mod.attr("mode"),))
            if mod.attr("size") is not None:
                fail(where, "Upsample with a fixed size is not supported")
            f = mod.attr("scale_factor")
            if isinstance(f, (list, tuple)):
                if len(set(f)) != 1:
                    fail(where, "non-uniform scale_factor %r" % (f,))
                f = f[0]
            if not isinstance(f, (int, float)) or f != int(f) or int(f) < 1:
                fail(where, "scale_factor %r is not a positive integer" % (f,))
            return g.add(UPSAMPLE, one, g.channels(one[0]), src, kernel=int(f))
        if kind == "ReOrg":
            return g.add(REORG, one, 4 * g.channels(one[0]), src)
        fail(where, "module %s is not supported" % mod.cls)

    def detect(self, mod, inputs, name, src, model):
        """Detect / IDetect / IAuxDetect: one 1x1 conv per level, implicit
        vectors folded: b' = m*(b + W a), W' = m*W."""
        where = "layer %d (%s)" % (src, mod.kind)
        g = self.graph
        nc, nl, na, no = (mod.attr(k) for k in ("nc", "nl", "na", "no"))
        for k, v in (("nc", nc), ("nl", nl), ("na", na), ("no", no)):
            if not isinstance(v, int) or v < 1:
                fail(where, "attribute '%s' is %r, expected a positive integer" % (k, v))
        if no != nc + 5:
            fail(where, "no=%d but nc+5=%d" % (no, nc + 5))
        if not 1 <= nl <= 4 or not 1 <= na <= 4 or nc > 10000:
            fail(where, "nl=%d na=%d nc=%d out of range (1..4, 1..4, 1..10000)"
                 % (nl, na, nc))
        if len(inputs) != nl:
            fail(where, "%d lead inputs for %d levels" % (len(inputs), nl))
        convs = child(mod, "m", where, ("ModuleList",))
        implicit = mod.kind in ("IDetect", "IAuxDetect")
        if implicit:
            ia = child(mod, "ia", where, ("ModuleList",))
            im = child(mod, "im", where, ("ModuleList",))
        ts = []
        for lvl, inp in enumerate(inputs):
            lw = "%s.m.%d" % (where, lvl)
            spec = ConvSpec(child(convs, str(lvl), where), lw)
            cin = g.channels(inp)
            if spec.k != 1 or spec.s != 1 or spec.p != 0:
                fail(lw, "head conv must be 1x1 stride 1 pad 0")
            if spec.cout != na * no or spec.cin != cin:
                fail(lw, "weight is [%d, %d], expected [%d, %d] (na*no, input channels)"
                     % (spec.cout, spec.cin, na * no, cin))
            if spec.b is None:
                fail(lw, "head conv has no bias")
            w, b = spec.w.reshape(na * no, cin), spec.b
            if implicit:
                a = tensor(child(ia, str(lvl), where, ("ImplicitA",)), "implicit",
                           "%s.ia.%d" % (where, lvl), (1, cin, 1, 1)).reshape(cin)
                m = tensor(child(im, str(lvl), where, ("ImplicitM",)), "implicit",
                           "%s.im.%d" % (where, lvl), (1, na * no, 1, 1)).reshape(na * no)
                b = (b + np.matmul(w, a)).astype(np.float32)
                b = (b * m).astype(np.float32)
                w = (w * m.reshape(-1, 1)).astype(np.float32)
                self.folded_implicit += a.size + m.size
            ts.append(g.add_tensor("%s.m.%d.weight" % (name, lvl), w.reshape(na * no, cin, 1, 1)))
            ts.append(g.add_tensor("%s.m.%d.bias" % (name, lvl), b))
        strides = self.strides(mod, model, nl, where)
        anchors = self.anchors(mod, strides, nl, na, where)
        self.head = dict(kind=mod.kind, nc=nc, nl=nl, na=na, strides=strides, anchors=anchors)
        return g.add(DETECT, inputs, no, src, kernel=1, stride=1, tensors=ts)

    @staticmethod
    def strides(mod, model, nl, where):
        st = mod.attr("stride")
        if st is None:
            st = model.attr("stride")
        if st is None:
            fail(where, "no 'stride' on the head or the model")
        st = np.asarray(st, dtype=np.float64).reshape(-1)
        if st.size != nl or np.any(st < 1) or np.any(st != np.round(st)) or np.any(st > 1024):
            fail(where, "stride %s is not %d positive integers" % (st.tolist(), nl))
        return [int(s) for s in st]

    @staticmethod
    def anchors(mod, strides, nl, na, where):
        grid = mod.tensor("anchor_grid")
        if grid is not None:
            if grid.size != nl * na * 2:
                fail(where, "anchor_grid has shape %s, expected %d levels x %d anchors x 2"
                     % (list(grid.shape), nl, na))
            px = grid.astype(np.float32).reshape(nl, na, 2)
        else:
            grid = tensor(mod, "anchors", where, (nl, na, 2))
            px = (grid * np.asarray(strides, np.float32).reshape(nl, 1, 1)).astype(np.float32)
        if not np.all(np.isfinite(px)) or np.any(px <= 0):
            fail(where, "anchors must be positive and finite")
        return px

    # -- the whole network --

    def run(self, model):
        if model.kind != "Model":
            fail("checkpoint", "the model is a %s, expected models.yolo.Model" % model.cls)
        seq = child(model, "model", "Model", ("Sequential",))
        mods = seq.children()
        if not mods:
            fail("Model.model", "no layers")
        for pos, (key, m) in enumerate(mods):
            if key != str(pos):
                fail("Model.model", "child %r at position %d (expected '%d')" % (key, pos, pos))
            if m.attr("i") != pos:
                fail("layer %d (%s)" % (pos, m.kind), "attribute i=%r" % (m.attr("i"),))
        mods = [m for _, m in mods]
        froms = [self.sources(m, pos) for pos, m in enumerate(mods)]
        head = mods[-1]
        if head.kind not in HEADS:
            fail("layer %d" % (len(mods) - 1), "last layer is %s, expected one of %s"
                 % (head.cls, ", ".join(HEADS)))
        nl = head.attr("nl")
        if not isinstance(nl, int) or nl < 1:
            fail("layer %d (%s)" % (len(mods) - 1, head.kind), "bad 'nl' %r" % (nl,))
        lead = froms[-1][:nl]
        if head.kind == "IAuxDetect":
            if len(froms[-1]) != 2 * nl:
                fail("layer %d (IAuxDetect)" % (len(mods) - 1),
                     "'f' names %d inputs, expected %d" % (len(froms[-1]), 2 * nl))
        froms[-1] = lead
        live = self.reachable(froms, len(mods) - 1)
        self.skipped = len(mods) - len(live)
        self.n_modules = len(mods)

        in_ch = 3
        yaml = model.attr("yaml")
        if isinstance(yaml, dict) and isinstance(yaml.get("ch"), int):
            in_ch = yaml["ch"]
        self.graph = Graph(in_ch, self.max_bytes)
        out = {}
        for pos, m in enumerate(mods):
            if pos not in live:
                continue
            inputs = [-1 if j == -1 else out[j] for j in froms[pos]]
            name = "model.%d" % pos
            out[pos] = self.module(m, inputs, name, pos, model)
        return self.graph

    @staticmethod
    def sources(m, pos):
        """Absolute module indices (-1 = network input) of a module's 'f'."""
        where = "layer %d (%s)" % (pos, m.kind)
        f = m.attr("f")
        fs = [f] if isinstance(f, int) else f
        if not isinstance(fs, (list, tuple)) or not fs or \
                not all(isinstance(x, int) and not isinstance(x, bool) for x in fs):
            fail(where, "'from' attribute f=%r is not an int or a list of ints" % (f,))
        res = []
        for x in fs:
            j = pos + x if x < 0 else x
            if x < 0 and j < 0:
                if pos == 0 and x == -1:
                    j = -1
                else:
                    fail(where, "f=%r points before the first layer" % (f,))
            if j >= pos:
                fail(where, "f=%r points to layer %d, not an earlier one" % (f, j))
            res.append(j)
        return res

    @staticmethod
    def reachable(froms, head):
        """Modules whose output reaches the head (aux branches drop out)."""
        live, todo = set(), [head]
        while todo:
            j = todo.pop()
            if j == -1 or j in live:
                continue
            live.add(j)
            todo.extend(froms[j])
        return live

    def module(self, m, inputs, name, pos, model):
        kind = m.kind
        where = "layer %d (%s)" % (pos, kind)
        one = kind not in ("Concat", "Shortcut") + HEADS
        if one and len(inputs) != 1:
            fail(where, "expected one input, 'f' names %d" % len(inputs))
        if kind == "Conv":
            return self.conv_module(m, inputs[0], name, pos)
        if kind == "RepConv":
            return self.repconv(m, inputs[0], name, pos)
        if kind == "SPPCSPC":
            return self.sppcspc(m, inputs[0], name, pos)
        if kind == "DownC":
            return self.downc(m, inputs[0], name, pos)
        if kind in HEADS:
            if pos != self.n_modules - 1:
                fail(where, "a detection head must be the last layer")
            return self.detect(m, inputs, name, pos, model)
        if kind in ("Concat", "Shortcut", "MP", "SP", "MaxPool2d", "Upsample", "ReOrg"):
            return self.simple(m, inputs, name, pos)
        fail(where, "module %s is not supported by this exporter" % m.cls)


# ---- shapes and FLOPs ------------------------------------------------------------

def propagate(graph, h, w):
    """Per-layer (c, h, w) for an h x w input, checking spatial agreement;
    returns (shapes, multiply-accumulates of all convolutions incl. the head)."""
    shapes, macs = [], 0
    for idx, L in enumerate(graph.layers):
        ins = [(graph.in_channels, h, w) if i == -1 else shapes[i] for i in L["inputs"]]
        c, ih, iw = ins[0]
        t, k, s, p = L["type"], L["kernel"], L["stride"], L["pad"]
        where = "file layer %d (from module %d, %s)" % (idx, L["src"], TYPE_NAMES[t])
        if t in (CONV, CONV2D, MAXPOOL, MP, SP):
            oh, ow = (ih + 2 * p - k) // s + 1, (iw + 2 * p - k) // s + 1
            if oh < 1 or ow < 1:
                fail(where, "output would be empty for a %dx%d input" % (w, h))
            if t in (CONV, CONV2D):
                macs += L["c_out"] * oh * ow * c * k * k
            shapes.append((L["c_out"], oh, ow))
        elif t == UPSAMPLE:
            shapes.append((c, ih * k, iw * k))
        elif t == REORG:
            shapes.append((4 * c, ih // 2, iw // 2))
        elif t == DETECT:
            for lvl, (ci, hh, ww) in enumerate(ins):
                macs += graph.tensors[L["tensors"][2 * lvl]][1].shape[0] * ci * hh * ww
            shapes.append((L["c_out"], 1, 1))
        else:
            if any((x[1], x[2]) != (ih, iw) for x in ins):
                fail(where, "inputs differ in height/width at a %dx%d input: %s"
                     % (w, h, [list(x) for x in ins]))
            if t in (SHORTCUT, ADD) and any(x[0] != c for x in ins):
                fail(where, "inputs differ in channels: %s" % [x[0] for x in ins])
            shapes.append((L["c_out"], ih, iw))
    return shapes, macs


# ---- writing the file ------------------------------------------------------------

def align(n, a):
    return (n + a - 1) // a * a


def metadata_block(meta):
    head = meta["head"]
    nl, na = head["nl"], head["na"]
    strides = head["strides"] + [0] * (4 - nl)
    anchors = np.zeros((4, 4, 2), np.float32)
    anchors[:nl, :na] = head["anchors"]
    names = b"".join(n.encode("utf-8") + b"\0" for n in meta["names"])
    name = meta["name"].encode("utf-8")
    blob = struct.pack("<8I", head["nc"], nl, na, meta["img_size"], max(head["strides"]),
                       meta["act"], meta["fused"], 0)
    blob += struct.pack("<4I", *strides) + anchors.astype("<f4").tobytes()
    blob += meta["sha256"] + name.ljust(64, b"\0") + struct.pack("<I", len(names)) + names
    assert len(blob) == 276 + len(names)
    return blob


def layer_record(L):
    inputs = L["inputs"] + [0] * (MAX_INPUTS - len(L["inputs"]))
    tens = L["tensors"] + [NO_TENSOR] * (8 - len(L["tensors"]))
    rec = struct.pack("<3I16i5I2f8II13I", L["type"], L["act"], len(L["inputs"]), *inputs,
                      L["c_out"], L["kernel"], L["stride"], L["pad"], 1,
                      L["alpha"] if L["act"] == ACT_LEAKY else 0.0, L["eps"], *tens, L["src"],
                      *([0] * 13))
    assert len(rec) == LAYER_SIZE
    return rec


def serialize(graph, meta):
    """The whole model file as bytes."""
    if not 1 <= len(graph.layers) <= MAX_LAYERS:
        fail("graph", "%d layers (1..%d allowed)" % (len(graph.layers), MAX_LAYERS))
    if len(graph.tensors) > MAX_TENSORS:
        fail("graph", "%d tensors (at most %d)" % (len(graph.tensors), MAX_TENSORS))
    meta_blob = metadata_block(meta)
    layers_off = align(HEADER_SIZE + len(meta_blob), 8)
    tensors_off = layers_off + LAYER_SIZE * len(graph.layers)
    data_off = align(tensors_off + TENSOR_SIZE * len(graph.tensors), DATA_ALIGN)
    records, chunks, pos = [], [], 0
    for name, arr in graph.tensors:
        pos = align(pos, DATA_ALIGN)
        raw = arr.astype("<f4").tobytes()
        shape = list(arr.shape) + [0] * (4 - arr.ndim)
        records.append(struct.pack("<56sII4IQQ", name.encode("utf-8"), 0, arr.ndim, *shape,
                                   pos, len(raw)))
        chunks.append((pos, raw))
        pos += len(raw)
    data = bytearray(pos)
    for off, raw in chunks:
        data[off:off + len(raw)] = raw
    tables = bytearray(meta_blob)
    tables += b"\0" * (layers_off - HEADER_SIZE - len(tables))
    tables += b"".join(layer_record(L) for L in graph.layers)
    tables += b"".join(records)
    tables += b"\0" * (data_off - HEADER_SIZE - len(tables))
    file_size = data_off + len(data)
    header = struct.pack("<8sIIQIIQQQQQQII", MAGIC, VERSION, HEADER_SIZE, file_size,
                         len(graph.layers), len(graph.tensors), HEADER_SIZE, len(meta_blob),
                         layers_off, tensors_off, data_off, len(data),
                         zlib.crc32(tables) & 0xFFFFFFFF, zlib.crc32(data) & 0xFFFFFFFF)
    header += b"\0" * 36
    header += struct.pack("<I", zlib.crc32(header) & 0xFFFFFFFF)
    assert len(header) == HEADER_SIZE
    return bytes(header) + bytes(tables) + bytes(data)


def write_atomically(path, blob):
    """Writes a temporary file of a name no one else uses next to path, then
    renames it over path: path is only ever absent, as before, or complete.
    Whatever stops the write (an error, Ctrl-C) removes the temporary file."""
    tmp = "%s.%d.%s.tmp" % (path, os.getpid(), os.urandom(4).hex())
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise ExportError("cannot write %s: %s" % (path, e.strerror)) from None
        raise


# ---- command line -------------------------------------------------------------------

def class_names(model, nc):
    names = model.attr("names")
    if names is None:
        return [str(i) for i in range(nc)]
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if not isinstance(names, (list, tuple)) or len(names) != nc:
        fail("Model.names", "has %s entries, the head has nc=%d"
             % (len(names) if isinstance(names, (list, tuple)) else "no list of", nc))
    out = []
    for n in names:
        if not isinstance(n, str) or "\0" in n:
            fail("Model.names", "entry %r is not a string without NUL" % (n,))
        out.append(n)
    return out


def float_dtypes(modules):
    """Float dtypes of every parameter/buffer of the (path, module) pairs."""
    res = set()
    for _, m in modules:
        for table in ("_parameters", "_buffers"):
            for t in m.table(table).values():
                if isinstance(t, np.ndarray) and t.dtype.kind == "f":
                    res.add(str(t.dtype))
    return res


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="export.py",
        description="Export a YOLOv7 .pt checkpoint to the libyolo model format "
                    "(docs/model-format.md). Needs numpy only; never runs code from the file.")
    ap.add_argument("input", metavar="IN.pt", help="checkpoint (torch >= 1.6 zip format)")
    ap.add_argument("output", metavar="OUT.bin", help="model file to write")
    ap.add_argument("--no-fuse", action="store_true",
                    help="keep Conv2d, BatchNorm2d and activation layers separate "
                         "(implicit layers are folded into the head regardless)")
    ap.add_argument("--name", help="model name stored in the file (default: from IN)")
    ap.add_argument("--quiet", action="store_true", help="print nothing on success")
    lim = ap.add_argument_group(
        "limits", "bounds on what a checkpoint may make the exporter do, so that a hostile "
        "or broken file is refused instead of taking all time or memory; the defaults are "
        "far above any YOLOv7 (docs/exporter.md)")
    for name, default, meaning in ptload.LIMITS:
        lim.add_argument(ptload.option(name), dest=name, type=positive, default=default,
                         metavar="N", help="%s (default %d)" % (meaning, default))
    return ap.parse_args(argv)


def positive(text):
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not an integer" % text) from None
    if value < 1:
        raise argparse.ArgumentTypeError("%r is not positive" % text)
    return value


def model_name(args):
    """--name, or the input's file name; checked before the checkpoint is read."""
    name = args.name
    if name is None:
        name = os.path.splitext(os.path.basename(args.input))[0][:63]
    if not name or len(name.encode("utf-8")) > 63 or "\0" in name:
        fail("--name", "%r must be 1..63 bytes of UTF-8 without NUL" % name)
    return name


def sha256_of(path):
    """A MiB at a time: the file may be as large as --max-bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.digest()


def export(args):
    name = model_name(args)
    limits = ptload.Limits(**{n: getattr(args, n) for n, _, _ in ptload.LIMITS})
    ckpt = ptload.load(args.input, limits)
    try:
        with np.errstate(all="ignore"):     # non-finite results are refused explicitly
            result = build(args, name, limits, ckpt)
    except (ExportError, ptload.PtLoadError) as e:
        raise ExportError("%s: %s" % (args.input, e)) from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError,
            struct.error) as e:
        # A value of a type or size that no check expected: still the
        # checkpoint's fault (valid ones never get here), said in one line.
        raise ExportError("%s: unexpected data in the checkpoint (%s: %s)"
                          % (args.input, type(e).__name__, e)) from None
    write_atomically(args.output, result["blob"])
    return result


def build(args, name, limits, ckpt):
    """The model file's bytes, and what the summary reports, from a loaded checkpoint."""
    model, where = ptload.select_model(ckpt)
    # Checked before anything walks the tree: a loop would never end.
    modules = ptload.walk_modules(model, limits.max_depth)
    ex = Exporter(fuse=not args.no_fuse, max_bytes=limits.max_bytes)
    graph = ex.run(model)
    shapes, macs = propagate(graph, 640, 640)
    head = ex.head
    acts = ex.act_counts
    main_act = max(acts, key=lambda a: acts[a]) if acts else ACT_NONE
    meta = dict(head=head, img_size=1280 if head["nl"] == 4 else 640, act=main_act,
                fused=0 if args.no_fuse else 1, sha256=sha256_of(args.input), name=name,
                names=class_names(model, head["nc"]))
    blob = serialize(graph, meta)
    params = sum(t.size for _, t in graph.tensors)
    return dict(name=name, where=where, graph=graph, params=params, macs=macs, blob=blob,
                size=len(blob), head=head, dtypes=float_dtypes(modules), ex=ex, act=main_act)


def summary(args, r):
    head, ex = r["head"], r["ex"]
    layout = "release (Detect head)" if head["kind"] == "Detect" else \
        "training (%s head, implicit layers folded)" % head["kind"]
    counts = {}
    for L in r["graph"].layers:
        nm = TYPE_NAMES[L["type"]] if L["type"] != ACT else ACT_NAMES[L["act"]]
        counts[nm] = counts.get(nm, 0) + 1
    lines = [
        "exported %s -> %s" % (args.input, args.output),
        "  model name : %s" % r["name"],
        "  layout     : %s, from %s, weights %s" % (layout, r["where"],
                                                    "/".join(sorted(r["dtypes"])) or "?"),
        "  layers     : %d modules -> %d layers in file (%s)%s"
        % (ex.n_modules, len(r["graph"].layers), "unfused" if args.no_fuse else "fused",
           ", %d aux-only modules skipped" % ex.skipped if ex.skipped else ""),
        "  layer types: %s" % ", ".join("%s %d" % kv for kv in sorted(counts.items())),
        "  head       : nc %d, %d levels (strides %s), %d anchors/level, activation %s"
        % (head["nc"], head["nl"], ",".join(map(str, head["strides"])), head["na"],
           ACT_NAMES[r["act"]]),
        "  params     : %d elements in %d tensors" % (r["params"], len(r["graph"].tensors)),
    ]
    if ex.folded_implicit:
        lines.append("               (official fused count %d: + %d folded implicit elements)"
                     % (r["params"] + ex.folded_implicit, ex.folded_implicit))
    lines += ["  GFLOPs     : %.1f at 640x640 (2 x conv MACs, head included)" % (2e-9 * r["macs"]),
              "  file size  : %d bytes" % r["size"]]
    print("\n".join(lines))


def one_line(msg, limit=1000):
    """Messages quote values from the checkpoint: keep them on one line, and short."""
    msg = " ".join(msg.split())
    return msg if len(msg) <= limit else msg[:limit] + " ..."


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        result = export(args)
    except (ExportError, ptload.PtLoadError) as e:
        print("export.py: error: %s" % one_line(str(e)), file=sys.stderr)
        return 1
    except OSError as e:
        print("export.py: error: %s: %s" % (e.filename or args.input, e.strerror),
              file=sys.stderr)
        return 1
    except (MemoryError, RecursionError) as e:
        # A last resort: the limits are meant to refuse a file long before this.
        print("export.py: error: %s: %s while reading it (a checkpoint too large or too "
              "deeply nested for this machine; see the --max-* options)"
              % (args.input, "out of memory" if isinstance(e, MemoryError)
                 else "nesting too deep"), file=sys.stderr)
        return 1
    if not args.quiet:
        summary(args, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
