#!/usr/bin/env python3
"""Make a synthetic YOLOv7 checkpoint in the official .pt format, with numpy only (no torch).

Real COCO weights cannot be downloaded here, so `make weights` builds a model with random but
calibrated weights and saves it exactly the way the official tools save a checkpoint, so that
tools/export.py reads it through the same path as a real release file:

  * a ZIP whose entries are all stored (uncompressed), payloads on 64-byte file offsets,
    written the way PyTorch's own zip writer lays them out (prefix `archive/`);
  * `data.pkl`: pickle protocol 2 of {model, optimizer, training_results, epoch} (release) or the
    train.py + strip_optimizer dict (training layout); the model is a tree of `models.yolo.Model`,
    `models.common.*` and `torch.nn.modules.*` objects (GLOBAL + NEWOBJ + BUILD of their
    __dict__), tensors are persistent storage references rebuilt by torch._utils functions;
  * float parameters and buffers in fp16, strides and grids in fp32, BN eps 0.001, yolov7's
    RepConv unfused, Detect/IDetect with anchors in grid units and anchor_grid in pixels.

Calibration: every Conv's BatchNorm running mean/var is set from the statistics of its input
on a fixed synthetic photo-like image (a float64 forward pass of the model built so far), so
activations neither explode nor vanish; filters are zero-sum and SiLU models get positive BN
shifts so that the statistics carry over from that image to real photos of other contrast; the
head convolutions are rescaled and given biases so that objectness and class logits have chosen
means and spreads (some tens of boxes above 0.25 on a photo).

Determinism: the same arguments give the same bytes on every machine.  Random numbers come from
our own counter-based splitmix64 in integer arithmetic (no numpy.random); everything stored
is rounded to fp16 through fp32, and statistics measured in float64 are only ever stored
rounded to fp16 (or used as a power-of-two exponent), so last-bit differences between BLAS
builds cannot reach the file.

Usage: synth.py --arch yolov7-tiny|yolov7 [--layout release|training] --out X.pt [--seed N]
"""

import argparse
import collections
import hashlib
import io
import os
import pickle
import struct
import sys
import types
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import archs  # noqa: E402

BN_EPS = 0.001
BN_MOMENTUM = 0.03
SILU_SHIFT = float(os.environ.get('SYNTH_SILU_SHIFT', '1.0'))
ZERO_SUM = True
# Mean of the BN shifts per activation.  SiLU is expansive for large inputs and contractive
# near 0, so a deep SiLU net turns a photo's higher contrast into ever larger activations; a
# positive shift keeps most units in SiLU's near-linear range, where the gain is about 1.
BETA_MEAN = {'leaky': 0.0, 'silu': SILU_SHIFT}
_current_act = ['leaky']
# Per architecture: side of the square calibration image and the objectness logit mean (the
# deep SiLU model needs a larger image so its 13x13 SPP pools see more than the whole map).
CALIB = {'yolov7-tiny': (256, -6.1), 'yolov7': (512, -4.4)}

# Targets for the detection-head logits (mean, std) per output kind.  With 80 classes the max
# class logit sits ~2.4 std above the mean, so obj and cls together put a few tens of rows per
# photo above conf 0.25 and thousands above 0.001.
HEAD_TARGETS = {'xy': (0.0, 1.0), 'wh': (0.0, 0.6), 'obj': (None, 1.4), 'cls': (-2.5, 1.3)}

# ---------------------------------------------------------------------------------------------
# Deterministic random numbers


_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix(z):
    """splitmix64 finaliser on a uint64 array (wrap-around arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class Rng:
    """Counter-based generator: value n of a stream is splitmix64(key + n * golden)."""

    def __init__(self, seed):
        self.key = _splitmix(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
        self.count = 0

    def uniform(self, shape):
        """Floats in [0, 1) with 53 random bits, exact conversions only."""
        n = int(np.prod(shape, dtype=np.int64))
        idx = np.arange(self.count, self.count + n, dtype=np.uint64)
        self.count += n
        with np.errstate(over='ignore'):
            z = _splitmix(self.key + idx * np.uint64(0x9E3779B97F4A7C15))
        return ((z >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)).reshape(shape)

    def centred(self, shape, std, mean=0.0):
        """Uniform values with the given mean and standard deviation."""
        return mean + (self.uniform(shape) * 2.0 - 1.0) * (std * 3.0 ** 0.5)


def f16(x):
    """Round to fp16 through fp32 (two correctly rounded casts: the same on every machine)."""
    return np.asarray(x, dtype=np.float64).astype(np.float32).astype(np.float16)


# ---------------------------------------------------------------------------------------------
# float64 reference ops for calibration (C, H, W arrays, one image)


def conv2d(x, w, stride, pad):
    c, h, wd = x.shape
    o, _, k, _ = w.shape
    if k == 1 and stride == 1:
        return (w.reshape(o, c) @ x.reshape(c, -1)).reshape(o, h, wd)
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    ho = (h + 2 * pad - k) // stride + 1
    wo = (wd + 2 * pad - k) // stride + 1
    s0, s1, s2 = xp.strides
    cols = np.lib.stride_tricks.as_strided(
        xp, shape=(c, k, k, ho, wo), strides=(s0, s1, s2, s1 * stride, s2 * stride))
    return (w.reshape(o, -1) @ cols.reshape(c * k * k, ho * wo)).reshape(o, ho, wo)


def maxpool(x, k, stride, pad):
    c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
    ho = (h + 2 * pad - k) // stride + 1
    wo = (wd + 2 * pad - k) // stride + 1
    s0, s1, s2 = xp.strides
    win = np.lib.stride_tricks.as_strided(
        xp, shape=(c, ho, wo, k, k), strides=(s0, s1 * stride, s2 * stride, s1, s2))
    return win.max(axis=(3, 4))


def upsample2(x):
    return x.repeat(2, axis=1).repeat(2, axis=2)


def activate(x, act):
    if act == 'leaky':
        return np.where(x >= 0, x, 0.1 * x)
    return x / (1.0 + np.exp(-x))


def calib_image(rng, size):
    """A photo-like image: value noise at every octave (about the 1/f spectrum of photographs),
    half of the octaves blocky for sharp edges, contrast stretched, on 8-bit levels."""
    img = np.zeros((3, size, size))
    cells = 2
    while cells <= size // 2:
        g = rng.uniform((3, cells + 1, cells + 1))
        t = np.arange(size) * (cells / size)
        i0 = np.floor(t).astype(np.int64)
        fr = t - i0
        if (cells.bit_length() % 2) == 0:
            fr = np.zeros_like(fr)            # nearest: piecewise constant blocks, hard edges
        rows = g[:, i0, :] * (1 - fr)[None, :, None] + g[:, i0 + 1, :] * fr[None, :, None]
        img += rows[:, :, i0] * (1 - fr) + rows[:, :, i0 + 1] * fr
        cells *= 2
    lo = img.min(axis=(1, 2), keepdims=True)
    hi = img.max(axis=(1, 2), keepdims=True)
    img = (img - lo) / (hi - lo)
    return np.floor(img * 255 + 0.5) / 255.0


# ---------------------------------------------------------------------------------------------
# Weights and calibration


class ConvBN:
    """A bias-free convolution followed by BatchNorm, all parameters as fp16 arrays."""

    def __init__(self, rng, x, c_out, k, s, gamma_scale=1.0):
        c_in = x.shape[0]
        self.k, self.s, self.p = k, s, k // 2
        w = rng.centred((c_out, c_in, k, k), (c_in * k * k) ** -0.5)
        if ZERO_SUM:
            # zero-sum filters: an offset common to all input channels (a brighter photo, the
            # positive mean after an activation) does not move the output, so the statistics
            # measured on the calibration image also hold on real photos
            w -= w.mean(axis=(1, 2, 3), keepdims=True)
        self.w = f16(w)
        self.gamma = f16(rng.centred((c_out,), 0.25, 1.0) * gamma_scale)
        self.beta = f16(rng.centred((c_out,), 0.3, BETA_MEAN[_current_act[0]]))
        y = conv2d(x, self.w.astype(np.float64), s, self.p)
        flat = y.reshape(c_out, -1)
        self.mean = f16(flat.mean(axis=1))
        self.var = f16(np.maximum(flat.var(axis=1), 1e-4))
        self.out = self._bn(y)

    def _bn(self, y):
        m = self.mean.astype(np.float64)[:, None, None]
        v = self.var.astype(np.float64)[:, None, None]
        g = self.gamma.astype(np.float64)[:, None, None]
        b = self.beta.astype(np.float64)[:, None, None]
        return (y - m) / np.sqrt(v + BN_EPS) * g + b

    def n_params(self):
        return self.w.size + self.gamma.size + self.beta.size


class Layer:
    """One entry of model.model: its row, its parameters and its calibration output."""

    def __init__(self, index, frm, kind, args):
        self.i, self.f, self.kind, self.args = index, frm, kind, args
        self.convs = {}       # name -> ConvBN (Conv: 'conv'; SPPCSPC: cv1..cv7; RepConv: dense/1x1)
        self.head = None      # Detect parameters
        self.c_out = 0


def _inputs(layer, outs):
    f = layer.f
    if isinstance(f, int):
        return outs[f] if f < 0 else outs[f]
    return [outs[j] for j in f]


def _resolve(f, i):
    """Official indexing: -1 is the previous output, other negatives count back from i."""
    if isinstance(f, int):
        return i + f if f < 0 else f
    return [i + j if j < 0 else j for j in f]


def _sppcspc(rng, layer, x, act):
    c = layer.args[0]
    cv = layer.convs
    cv['cv1'] = ConvBN(rng, x, c, 1, 1)
    cv['cv3'] = ConvBN(rng, activate(cv['cv1'].out, act), c, 3, 1)
    cv['cv4'] = ConvBN(rng, activate(cv['cv3'].out, act), c, 1, 1)
    x1 = activate(cv['cv4'].out, act)
    cat = np.concatenate([x1] + [maxpool(x1, k, 1, k // 2) for k in (5, 9, 13)])
    cv['cv5'] = ConvBN(rng, cat, c, 1, 1)
    cv['cv6'] = ConvBN(rng, activate(cv['cv5'].out, act), c, 3, 1)
    y1 = activate(cv['cv6'].out, act)
    cv['cv2'] = ConvBN(rng, x, c, 1, 1)
    y2 = activate(cv['cv2'].out, act)
    cv['cv7'] = ConvBN(rng, np.concatenate([y1, y2]), c, 1, 1)
    return activate(cv['cv7'].out, act)


def _repconv(rng, layer, x, act):
    c = layer.args[0]
    layer.convs['rbr_dense'] = ConvBN(rng, x, c, 3, 1, gamma_scale=0.7071)
    layer.convs['rbr_1x1'] = ConvBN(rng, x, c, 1, 1, gamma_scale=0.7071)
    return activate(layer.convs['rbr_dense'].out + layer.convs['rbr_1x1'].out, act)


def _head_kind(k):
    return 'xy' if k < 2 else 'wh' if k < 4 else 'obj' if k == 4 else 'cls'


def _detect(rng, layer, xs, implicit):
    """Head 1x1 convs scaled by powers of two and biased to the target logit statistics."""
    na, no = 3, archs.NC + 5
    head = {'w': [], 'b': [], 'ia': [], 'im': []}
    for x in xs:
        c_in = x.shape[0]
        w = rng.centred((na * no, c_in, 1, 1), c_in ** -0.5)
        ia = f16(rng.centred((c_in,), 0.02)) if implicit else np.zeros(c_in, np.float16)
        im = f16(rng.centred((na * no,), 0.02, 1.0)) if implicit else np.ones(na * no, np.float16)
        xa = x + ia.astype(np.float64)[:, None, None]
        z = (f16(w).astype(np.float64).reshape(na * no, c_in) @ xa.reshape(c_in, -1))
        mu, sd = z.mean(axis=1), np.maximum(z.std(axis=1), 1e-6)
        tgt = np.array([HEAD_TARGETS[_head_kind(ch % no)] for ch in range(na * no)])
        imf = im.astype(np.float64)
        # out = im * (W' (x + ia) + b): W' = k W with k (an fp16 number) chosen so that
        # im * k * sd is the target std; k * f16(W) is exact in float64, so W' does not depend on
        # the last bits of the measured sd unless they move k across an fp16 rounding boundary.
        k = f16(tgt[:, 1] / (sd * imf)).astype(np.float64)
        w2 = f16(f16(w).astype(np.float64) * k[:, None, None, None])
        # ... and b so that im * (k mu + b) = target mean.
        b = f16(tgt[:, 0] / imf - k * mu)
        for key, val in (('w', w2), ('b', b), ('ia', ia), ('im', im)):
            head[key].append(val)
    layer.head = head


def build(arch, layout, seed):
    """Create and calibrate every layer; returns the list of Layer objects."""
    rng = Rng(seed)
    act = archs.activation(arch)
    _current_act[0] = act
    size, obj_mean = CALIB[arch]
    HEAD_TARGETS['obj'] = (obj_mean, HEAD_TARGETS['obj'][1])
    x = calib_image(rng, size)
    outs, layers = [], []
    for i, frm, kind, args in archs.layers(arch, layout):
        layer = Layer(i, frm, kind, args)
        src = _resolve(frm, i)
        inp = x if i == 0 else (outs[src] if isinstance(src, int) else [outs[j] for j in src])
        if kind == 'Conv':
            layer.convs['conv'] = ConvBN(rng, inp, args[0], args[1], args[2])
            y = activate(layer.convs['conv'].out, act)
        elif kind == 'Concat':
            y = np.concatenate(inp)
        elif kind == 'MP':
            y = maxpool(inp, 2, 2, 0)
        elif kind == 'SP':
            y = maxpool(inp, args[0], 1, args[0] // 2)
        elif kind == 'nn.Upsample':
            y = upsample2(inp)
        elif kind == 'SPPCSPC':
            y = _sppcspc(rng, layer, inp, act)
        elif kind == 'RepConv':
            y = _repconv(rng, layer, inp, act)
        elif kind in ('Detect', 'IDetect'):
            _detect(rng, layer, inp, kind == 'IDetect')
            y = None
        else:
            raise ValueError('unknown module ' + kind)
        layer.c_out = 0 if y is None else y.shape[0]
        outs.append(y)
        layers.append(layer)
    return layers


# ---------------------------------------------------------------------------------------------
# The object tree the official code pickles, built from stand-in classes with the real names


_FAKE_MODULES = {}


def _global(module, name, kind='class'):
    """A class (or function) that pickles as GLOBAL `module name`."""
    mod = _FAKE_MODULES.get(module)
    if mod is None:
        parts = module.split('.')
        for n in range(1, len(parts) + 1):
            sub = '.'.join(parts[:n])
            if sub not in sys.modules:
                sys.modules[sub] = types.ModuleType(sub)
        mod = _FAKE_MODULES[module] = sys.modules[module]
    if not hasattr(mod, name):
        if kind == 'class':
            obj = type(name, (object,), {'__module__': module})
        else:
            obj = types.FunctionType((lambda *a: None).__code__, {}, name)
            obj.__module__ = module
        obj.__qualname__ = name
        setattr(mod, name, obj)
    return getattr(mod, name)


class Storage:
    def __init__(self, array, kind):
        self.array, self.kind = np.ascontiguousarray(array), kind


STORAGE_TYPES = {np.dtype(np.float16): 'HalfStorage', np.dtype(np.float32): 'FloatStorage',
                 np.dtype(np.int64): 'LongStorage'}


class Tensor:
    """Pickles like torch.Tensor: _rebuild_tensor_v2(storage, 0, size, stride, False, {})."""

    def __init__(self, array):
        self.array = np.asarray(array)
        le = self.array.dtype.newbyteorder('<')
        self.storage = Storage(self.array.astype(le), STORAGE_TYPES[self.array.dtype])

    def __reduce_ex__(self, proto):
        shape = tuple(int(d) for d in self.array.shape)
        stride, acc = [], 1
        for d in reversed(shape):
            stride.insert(0, acc)
            acc *= d
        fn = _global('torch._utils', '_rebuild_tensor_v2', 'function')
        return fn, (self.storage, 0, shape, tuple(stride), False, collections.OrderedDict())


class Parameter:
    def __init__(self, array, requires_grad):
        self.tensor, self.requires_grad = Tensor(array), requires_grad

    def __reduce_ex__(self, proto):
        fn = _global('torch._utils', '_rebuild_parameter', 'function')
        return fn, (self.tensor, self.requires_grad, collections.OrderedDict())


class Ctx:
    """What every module of one checkpoint shares: training flag and requires_grad."""

    def __init__(self, training, requires_grad):
        self.training, self.requires_grad = training, requires_grad


def module(ctx, path, params=(), buffers=(), children=(), attrs=()):
    """A torch.nn.Module as pickled: fixed base __dict__ keys then the class's own attributes."""
    mod, name = path.rsplit('.', 1)
    obj = _global(mod, name).__new__(_global(mod, name))
    od = collections.OrderedDict
    state = {
        'training': ctx.training,
        '_parameters': od((k, None if v is None else Parameter(v, ctx.requires_grad))
                          for k, v in params),
        '_buffers': od((k, Tensor(v)) for k, v in buffers),
        '_non_persistent_buffers_set': set(),
        '_backward_hooks': od(), '_is_full_backward_hook': None, '_forward_hooks': od(),
        '_forward_pre_hooks': od(), '_state_dict_hooks': od(),
        '_load_state_dict_pre_hooks': od(), '_load_state_dict_post_hooks': od(),
        '_modules': od(children),
    }
    state.update(attrs)
    obj.__dict__.update(state)
    return obj


def _pair(v):
    """A fresh tuple per module, as torch creates them (a shared one would be memoised)."""
    return tuple([v, v])


def conv2d_module(ctx, w, stride, bias=None):
    o, c, k, _ = w.shape
    p = k // 2
    return module(ctx, 'torch.nn.modules.conv.Conv2d', params=[('weight', w), ('bias', bias)],
                  attrs=[('in_channels', c), ('out_channels', o), ('kernel_size', _pair(k)),
                         ('stride', _pair(stride)), ('padding', _pair(p)), ('dilation', _pair(1)),
                         ('transposed', False), ('output_padding', _pair(0)), ('groups', 1),
                         ('padding_mode', 'zeros'), ('_reversed_padding_repeated_twice', (p,) * 4)])


def bn_module(ctx, cb):
    return module(ctx, 'torch.nn.modules.batchnorm.BatchNorm2d',
                  params=[('weight', cb.gamma), ('bias', cb.beta)],
                  buffers=[('running_mean', cb.mean), ('running_var', cb.var),
                           ('num_batches_tracked', np.array(0, dtype=np.int64))],
                  attrs=[('num_features', cb.gamma.size), ('eps', BN_EPS),
                         ('momentum', BN_MOMENTUM), ('affine', True), ('track_running_stats', True)])


def act_module(ctx, act):
    if act == 'leaky':
        return module(ctx, 'torch.nn.modules.activation.LeakyReLU',
                      attrs=[('negative_slope', 0.1), ('inplace', True)])
    return module(ctx, 'torch.nn.modules.activation.SiLU', attrs=[('inplace', False)])


def conv_module(ctx, cb, act, tail=()):
    kids = [('conv', conv2d_module(ctx, cb.w, cb.s)), ('bn', bn_module(ctx, cb)),
            ('act', act_module(ctx, act))]
    return module(ctx, 'models.common.Conv', children=kids, attrs=tail)


def maxpool_module(ctx, k, s, p):
    return module(ctx, 'torch.nn.modules.pooling.MaxPool2d',
                  attrs=[('kernel_size', k), ('stride', s), ('padding', p), ('dilation', 1),
                         ('return_indices', False), ('ceil_mode', False)])


def seq(ctx, path, items):
    return module(ctx, path, children=[(str(j), m) for j, m in enumerate(items)])


def _layer_tail(layer, n_params):
    path = 'torch.nn.modules.upsampling.Upsample' if layer.kind == 'nn.Upsample' else \
        ('models.yolo.' if layer.kind.endswith('Detect') else 'models.common.') + layer.kind
    return path, [('i', layer.i), ('f', layer.f), ('type', path), ('np', n_params)]


def layer_module(ctx, layer, act, stride_t, grids):
    n = sum(cb.n_params() for cb in layer.convs.values())
    if layer.head is not None:
        n = sum(a.size for k in ('w', 'b') for a in layer.head[k])
        if layer.kind == 'IDetect':
            n += sum(a.size for k in ('ia', 'im') for a in layer.head[k])
    path, tail = _layer_tail(layer, n)
    k = layer.kind
    if k == 'Conv':
        return conv_module(ctx, layer.convs['conv'], act, tail)
    if k == 'Concat':
        return module(ctx, path, attrs=[('d', 1)] + tail)
    if k in ('MP', 'SP'):
        size = 2 if k == 'MP' else layer.args[0]
        pool = maxpool_module(ctx, size, 2 if k == 'MP' else 1, 0 if k == 'MP' else size // 2)
        return module(ctx, path, children=[('m', pool)], attrs=tail)
    if k == 'nn.Upsample':
        return module(ctx, path, attrs=[('name', 'Upsample'), ('size', None),
                                        ('scale_factor', 2.0), ('mode', 'nearest'),
                                        ('align_corners', None),
                                        ('recompute_scale_factor', None)] + tail)
    if k == 'SPPCSPC':
        cv = layer.convs
        kids = [(n_, conv_module(ctx, cv[n_], act)) for n_ in ('cv1', 'cv2', 'cv3', 'cv4')]
        pools = [maxpool_module(ctx, s, 1, s // 2) for s in (5, 9, 13)]
        kids.append(('m', seq(ctx, 'torch.nn.modules.container.ModuleList', pools)))
        kids += [(n_, conv_module(ctx, cv[n_], act)) for n_ in ('cv5', 'cv6', 'cv7')]
        return module(ctx, path, children=kids, attrs=tail)
    if k == 'RepConv':
        d, o = layer.convs['rbr_dense'], layer.convs['rbr_1x1']
        branch = [seq(ctx, 'torch.nn.modules.container.Sequential',
                      [conv2d_module(ctx, cb.w, 1), bn_module(ctx, cb)]) for cb in (d, o)]
        kids = [('act', act_module(ctx, act)), ('rbr_dense', branch[0]), ('rbr_1x1', branch[1])]
        return module(ctx, path, children=kids,
                      attrs=[('deploy', False), ('groups', 1), ('in_channels', d.w.shape[1]),
                             ('out_channels', d.w.shape[0]), ('rbr_identity', None)] + tail)
    return detect_module(ctx, layer, path, tail, stride_t, grids)


def detect_module(ctx, layer, path, tail, stride_t, grids):
    h = layer.head
    anchors = np.array(archs.anchors_px(layer_arch[0]), dtype=np.float64)    # [nl, na, 2]
    strides = np.array(archs.STRIDES, dtype=np.float64)
    convs = [conv2d_module(ctx, w, 1, bias=b) for w, b in zip(h['w'], h['b'])]
    kids = [('m', seq(ctx, 'torch.nn.modules.container.ModuleList', convs))]
    if layer.kind == 'IDetect':
        ia = [module(ctx, 'models.common.ImplicitA', params=[('implicit', a.reshape(1, -1, 1, 1))],
                     attrs=[('channel', a.size), ('mean', 0.0), ('std', 0.02)]) for a in h['ia']]
        im = [module(ctx, 'models.common.ImplicitM', params=[('implicit', m.reshape(1, -1, 1, 1))],
                     attrs=[('channel', m.size), ('mean', 1.0), ('std', 0.02)]) for m in h['im']]
        kids += [('ia', seq(ctx, 'torch.nn.modules.container.ModuleList', ia)),
                 ('im', seq(ctx, 'torch.nn.modules.container.ModuleList', im))]
    buffers = [('anchors', f16(anchors / strides[:, None, None])),
               ('anchor_grid', f16(anchors.reshape(3, 1, 3, 1, 1, 2)))]
    attrs = [('nc', archs.NC), ('no', archs.NC + 5), ('nl', 3), ('na', 3), ('grid', grids)]
    return module(ctx, path, buffers=buffers, children=kids,
                  attrs=attrs + tail + [('stride', stride_t)])


layer_arch = ['']   # the architecture being written (anchors for the head)


def _save_list(cfg_layers):
    """Model.save: every non -1 'from' index, made absolute, sorted (as the parser keeps it)."""
    save = []
    for i, frm, _, _ in cfg_layers:
        for f in ([frm] if isinstance(frm, int) else frm):
            if f != -1:
                save.append(f % i)
    return sorted(save)


def _grid_tensors(layout):
    if layout == 'release':
        t = Tensor(np.zeros(1, dtype=np.float32))     # [torch.zeros(1)] * nl: one shared tensor
        return [t, t, t]
    grids = []
    for s in archs.STRIDES:
        n = 640 // s
        yv, xv = np.meshgrid(np.arange(n), np.arange(n), indexing='ij')
        grids.append(Tensor(np.stack((xv, yv), 2).reshape(1, 1, n, n, 2).astype(np.float32)))
    return grids


HYP = [('lr0', 0.01), ('lrf', 0.01), ('momentum', 0.937), ('weight_decay', 0.0005),
       ('warmup_epochs', 3.0), ('warmup_momentum', 0.8), ('warmup_bias_lr', 0.1),
       ('box', 0.05), ('cls', 0.5), ('cls_pw', 1.0), ('obj', 1.0), ('obj_pw', 1.0),
       ('iou_t', 0.2), ('anchor_t', 4.0), ('fl_gamma', 0.0), ('hsv_h', 0.015), ('hsv_s', 0.7),
       ('hsv_v', 0.4), ('degrees', 0.0), ('translate', 0.1), ('scale', 0.5), ('shear', 0.0),
       ('perspective', 0.0), ('flipud', 0.0), ('fliplr', 0.5), ('mosaic', 1.0), ('mixup', 0.05),
       ('copy_paste', 0.0), ('paste_in', 0.05), ('loss_ota', 1), ('label_smoothing', 0.0)]


class NumpyScalarArray:
    """Pickles like numpy's protocol-2 pickle of a float64 array of shape (1,) (best_fitness),
    without depending on the numpy version installed here."""

    def __init__(self, value):
        self.value = value

    def __reduce_ex__(self, proto):
        recon = _global('numpy.core.multiarray', '_reconstruct', 'function')
        ndarray = _global('numpy', 'ndarray')
        dtype = NumpyDtype()
        raw = struct.pack('<d', self.value)
        return recon, (ndarray, (0,), b'b'), (1, (1,), dtype, False, raw)


class NumpyDtype:
    def __reduce_ex__(self, proto):
        return _global('numpy', 'dtype'), ('f8', False, True), (3, '<', None, None, None, -1, -1, 0)


def model_tree(arch, layout, layers):
    training = layout == 'training'
    ctx = Ctx(training=not training, requires_grad=not training)
    act = archs.activation(arch)
    layer_arch[0] = arch
    stride_t = Tensor(np.array(archs.STRIDES, dtype=np.float32))
    grids = _grid_tensors(layout)
    mods = [layer_module(ctx, ly, act, stride_t, grids) for ly in layers]
    body = seq(ctx, 'torch.nn.modules.container.Sequential', mods)
    attrs = [('traced', False), ('yaml_file', archs.yaml_file(arch)),
             ('yaml', archs.config(arch, layout)), ('save', _save_list(archs.layers(arch, layout))),
             ('names', list(archs.COCO_NAMES)), ('stride', stride_t), ('nc', archs.NC)]
    if training:
        attrs += [('hyp', dict(HYP)), ('gr', 1.0),
                  ('class_weights', Tensor(np.full(archs.NC, 1.0 / archs.NC, dtype=np.float32)))]
    model = module(ctx, 'models.yolo.Model', children=[('model', body)], attrs=attrs)
    if training:     # train.py checkpoint after strip_optimizer
        return {'epoch': -1, 'best_fitness': NumpyScalarArray(0.0), 'training_results': None,
                'model': model, 'ema': None, 'updates': None, 'optimizer': None,
                'wandb_id': None}
    return {'model': model, 'optimizer': None, 'training_results': None, 'epoch': -1}


# ---------------------------------------------------------------------------------------------
# Serialisation: pickle + PyTorch-style stored ZIP


class _Pickler(pickle.Pickler):
    def __init__(self, f):
        super().__init__(f, protocol=2)
        self.keys = {}       # id(storage) -> key
        self.storages = []   # (key, Storage) in first-use order

    def persistent_id(self, obj):
        if not isinstance(obj, Storage):
            return None
        key = self.keys.get(id(obj))
        if key is None:
            key = self.keys[id(obj)] = str(len(self.storages))
            self.storages.append((key, obj))
        return ('storage', _global('torch', obj.kind), key, 'cpu', int(obj.array.size))


def serialise(obj):
    buf = io.BytesIO()
    p = _Pickler(buf)
    p.dump(obj)
    return buf.getvalue(), p.storages


class ZipWriter:
    """Stored ZIP laid out like PyTorch's writer: zeroed sizes in the local header plus a data
    descriptor, an 'FB' extra field padding each payload to a 64-byte offset, zip64 end records."""

    def __init__(self, f):
        self.f, self.pos, self.entries = f, 0, []

    def _write(self, b):
        self.f.write(b)
        self.pos += len(b)

    def add(self, name, data):
        name_b = name.encode()
        offset = self.pos
        pad = (-(offset + 30 + len(name_b) + 4)) % 64
        extra = b'FB' + struct.pack('<H', pad) + b'Z' * pad
        self._write(struct.pack('<IHHHHHIIIHH', 0x04034b50, 0, 0x0808, 0, 0, 0, 0, 0, 0,
                                len(name_b), len(extra)) + name_b + extra)
        self._write(data)
        crc = zlib.crc32(data) & 0xFFFFFFFF
        self._write(struct.pack('<IIII', 0x08074b50, crc, len(data), len(data)))
        self.entries.append((name_b, crc, len(data), offset))

    def close(self):
        cd_start = self.pos
        for name_b, crc, size, offset in self.entries:
            self._write(struct.pack('<IHHHHHHIIIHHHHHII', 0x02014b50, 0, 0, 0x0808, 0, 0, 0,
                                    crc, size, size, len(name_b), 0, 0, 0, 0, 0, offset) + name_b)
        cd_size = self.pos - cd_start
        z64 = self.pos
        n = len(self.entries)
        self._write(struct.pack('<IQHHIIQQQQ', 0x06064b50, 44, 0x031e, 0x002d, 0, 0, n, n,
                                cd_size, cd_start))
        self._write(struct.pack('<IIQI', 0x07064b50, 0, z64, 1))
        self._write(struct.pack('<IHHHHIIH', 0x06054b50, 0, 0, n, n, cd_size, cd_start, 0))


def write_checkpoint(path, tree, prefix='archive'):
    pkl, storages = serialise(tree)
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
        z = ZipWriter(f)
        z.add(prefix + '/data.pkl', pkl)
        for key, st in sorted(storages, key=lambda ks: ks[0]):
            z.add(prefix + '/data/' + key, st.array.tobytes())
        z.add(prefix + '/version', b'3\n')
        z.close()
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--arch', required=True, choices=sorted(archs.ARCHS))
    ap.add_argument('--layout', default='release', choices=sorted(archs.LAYOUTS))
    ap.add_argument('--out', required=True)
    ap.add_argument('--seed', type=int, default=0)
    a = ap.parse_args(argv)
    layers = build(a.arch, a.layout, a.seed)
    tree = model_tree(a.arch, a.layout, layers)
    d = os.path.dirname(a.out)
    if d:
        os.makedirs(d, exist_ok=True)
    write_checkpoint(a.out, tree)
    with open(a.out, 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    print('%s  %s (arch %s, layout %s, seed %d)' % (digest, a.out, a.arch, a.layout, a.seed))
    return 0


if __name__ == '__main__':
    sys.exit(main())
