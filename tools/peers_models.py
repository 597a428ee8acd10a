"""A torch.nn.Module of a YOLOv7 checkpoint, for the peer benchmark (bench/peers).

The PyTorch and ONNX peers need a real nn.Module: torch.onnx.export traces one, and timing
PyTorch the way a user deploys it means registered parameters, not the reference's
functional walk over pickled stubs.  This module is built from the checkpoint that
tools/reference.py loads (its restricted unpickler; nothing from the YOLOv7 code base), and
is fused the way a deployment fuses it (as the official Model.fuse() does, and as libyolo's
exporter does): BatchNorm folded into its convolution, RepConv's three branches summed into
one 3x3 convolution, IDetect's implicit add/mul folded into the head convolutions.  So every
peer does the same arithmetic work as libyolo, and none pays for unfused training layers.

The forward pass returns the raw predictions [batch, rows, 5 + classes] after sigmoid and
decode (cx, cy, w, h in input pixels), rows level-major then anchor, y, x: the layout of
yolo_predictions() and of the reference.  bench/peers checks it against the reference's
unfused functional forward before timing anything.
"""

import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # noqa: E402  (tools/reference.py: the checkpoint loader and stub classes)


def kind(m):
    return reference.cls_name(m)


def _f64(t):
    return t.detach().to(torch.float64)


def fold_bn(weight, bias, bn):
    """Conv weight/bias (float64) with a BatchNorm after it -> one conv (float64)."""
    scale = _f64(bn.weight) / torch.sqrt(_f64(bn.running_var) + bn.eps)
    w = weight * scale.view(-1, 1, 1, 1)
    b = (bias if bias is not None else torch.zeros_like(scale)) - _f64(bn.running_mean)
    return w, b * scale + _f64(bn.bias)


def conv_params(c):
    """(weight, bias or None) of a pickled Conv2d stub, float64."""
    return _f64(c.weight), (None if c.bias is None else _f64(c.bias))


def make_conv(c, weight, bias):
    """An nn.Conv2d with the stub's geometry and the given float64 weight/bias (as float32)."""
    out_c, in_per_group, kh, kw = weight.shape
    conv = nn.Conv2d(in_per_group * c.groups, out_c, (kh, kw), c.stride, c.padding, c.dilation,
                     c.groups, bias=True)
    with torch.no_grad():
        conv.weight.copy_(weight.float())
        conv.bias.copy_(bias.float() if bias is not None else torch.zeros(out_c))
    return conv


def make_act(a):
    k = kind(a)
    if k == 'LeakyReLU':
        return nn.LeakyReLU(a.negative_slope)
    if k == 'SiLU':
        return nn.SiLU()
    if k == 'Identity':
        return nn.Identity()
    raise ValueError('activation ' + k)


class ConvAct(nn.Sequential):
    """Conv (BN folded) + activation: the official Conv block, fused."""

    @classmethod
    def from_conv(cls, m):
        w, b = conv_params(m.conv)
        w, b = fold_bn(w, b, m.bn)
        return cls(make_conv(m.conv, w, b), make_act(m.act))

    @classmethod
    def from_repconv(cls, m):
        """Sum of the 3x3+BN, 1x1+BN (padded to 3x3) and identity-BN branches."""
        if getattr(m, 'rbr_reparam', None) is not None:         # a deploy-mode RepConv
            w, b = conv_params(m.rbr_reparam)
            return cls(make_conv(m.rbr_reparam, w, b), make_act(m.act))
        dense, one = m.rbr_dense._modules['0'], m.rbr_1x1._modules['0']
        w3, b3 = fold_bn(*conv_params(dense), m.rbr_dense._modules['1'])
        w1, b1 = fold_bn(*conv_params(one), m.rbr_1x1._modules['1'])
        kh, kw = w3.shape[2:]
        w = w3.clone()
        w[:, :, kh // 2, kw // 2] += w1[:, :, 0, 0]
        b = b3 + b1
        if m.rbr_identity is not None:
            if dense.groups != 1 or w.shape[0] != w.shape[1]:
                raise ValueError('RepConv identity branch needs groups 1 and c_in == c_out')
            eye = torch.zeros_like(w)
            idx = torch.arange(w.shape[0])
            eye[idx, idx, kh // 2, kw // 2] = 1.0
            wi, bi = fold_bn(eye, None, m.rbr_identity)
            w, b = w + wi, b + bi
        return cls(make_conv(dense, w, b), make_act(m.act))


class Pool(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.k, self.s, self.p = p.kernel_size, p.stride, p.padding

    def forward(self, x):
        return F.max_pool2d(x, self.k, self.s, self.p)


class Upsample(nn.Module):
    def __init__(self, m):
        super().__init__()
        if m.mode != 'nearest':
            raise ValueError('upsample mode ' + str(m.mode))
        self.scale = float(m.scale_factor)

    def forward(self, x):
        return F.interpolate(x, scale_factor=self.scale, mode='nearest')


class Concat(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.d = d

    def forward(self, xs):
        return torch.cat(xs, self.d)


class SPPCSPC(nn.Module):
    def __init__(self, m):
        super().__init__()
        for name in ('cv1', 'cv2', 'cv3', 'cv4', 'cv5', 'cv6', 'cv7'):
            setattr(self, name, ConvAct.from_conv(getattr(m, name)))
        self.pools = nn.ModuleList(Pool(p) for p in m.m._modules.values())

    def forward(self, x):
        x1 = self.cv4(self.cv3(self.cv1(x)))
        y1 = self.cv6(self.cv5(torch.cat([x1] + [p(x1) for p in self.pools], 1)))
        return self.cv7(torch.cat([y1, self.cv2(x)], 1))


class Detect(nn.Module):
    """Detect / IDetect head, implicit layers folded: 1x1 conv per level, sigmoid, decode."""

    def __init__(self, m):
        super().__init__()
        self.na, self.no = int(m.na), int(m.no)
        self.strides = [float(s) for s in m.stride]
        implicit = kind(m) == 'IDetect'
        convs = []
        for i, c in enumerate(m.m._modules.values()):
            w, b = conv_params(c)
            if b is None:
                b = torch.zeros(w.shape[0], dtype=torch.float64)
            if implicit:     # conv(x + a) * m == (W m) x + (b + W a) m
                a = _f64(m.ia._modules[str(i)].implicit).reshape(-1)
                mul = _f64(m.im._modules[str(i)].implicit).reshape(-1)
                b = (b + w[:, :, 0, 0] @ a) * mul
                w = w * mul.view(-1, 1, 1, 1)
            convs.append(make_conv(c, w, b))
        self.convs = nn.ModuleList(convs)
        for i in range(len(convs)):
            self.register_buffer('anchor%d' % i, m.anchor_grid[i].detach().float().clone()
                                 .view(1, self.na, 1, 1, 2))

    def forward(self, xs):
        outs = []
        for i, (conv, x) in enumerate(zip(self.convs, xs)):
            y = conv(x)
            bs, _, ny, nx = y.shape
            y = y.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).sigmoid()
            gy, gx = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing='ij')
            grid = torch.stack((gx, gy), 2).view(1, 1, ny, nx, 2).float()
            xy = (y[..., 0:2] * 2.0 - 0.5 + grid) * self.strides[i]
            wh = (y[..., 2:4] * 2.0) ** 2 * getattr(self, 'anchor%d' % i)
            outs.append(torch.cat((xy, wh, y[..., 4:]), -1).reshape(bs, -1, self.no))
        return torch.cat(outs, 1)


def make_layer(m):
    k = kind(m)
    if k == 'Conv':
        return ConvAct.from_conv(m)
    if k == 'RepConv':
        return ConvAct.from_repconv(m)
    if k in ('MP', 'SP'):
        return Pool(m.m)
    if k == 'Concat':
        return Concat(m.d)
    if k == 'Upsample':
        return Upsample(m)
    if k == 'SPPCSPC':
        return SPPCSPC(m)
    if k in ('Detect', 'IDetect'):
        return Detect(m)
    raise ValueError('unsupported layer ' + k)


class YoloNet(nn.Module):
    """The whole network.  Layer i reads the outputs named by the checkpoint's `f` (negative:
    relative to i, as in the official list of outputs; -1 on layer 0: the network input);
    only outputs some later layer reads are kept."""

    def __init__(self, ckpt_model):
        super().__init__()
        stubs = list(ckpt_model.model._modules.values())
        self.layers = nn.ModuleList(make_layer(m) for m in stubs)
        self.froms = []
        for i, m in enumerate(stubs):
            srcs = [m.f] if isinstance(m.f, int) else list(m.f)
            srcs = [i + j if j < 0 else j for j in srcs]          # absolute; -1: the input
            self.froms.append(srcs[0] if isinstance(m.f, int) else srcs)
        self.keep = {j for f in self.froms for j in ([f] if isinstance(f, int) else f)}

    def forward(self, x):
        saved = {-1: x}
        for i, (layer, f) in enumerate(zip(self.layers, self.froms)):
            x = layer(saved[f] if isinstance(f, int) else [saved[j] for j in f])
            if i in self.keep:
                saved[i] = x
        return x


def build(checkpoint_path):
    """The fused, eval-mode float32 nn.Module of an official-format checkpoint."""
    net = YoloNet(reference.load_checkpoint(checkpoint_path))
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def reference_forward(checkpoint_path, x):
    """tools/reference.py's unfused functional forward on x [B,3,H,W] float32 (a torch
    tensor), one image at a time as the reference runs: [B, rows, cols]."""
    model = reference.load_checkpoint(checkpoint_path)
    with torch.no_grad():
        net = reference.Net(model, torch.float32)
        return torch.stack([net.forward(x[b:b + 1])[0] for b in range(x.shape[0])])


def export_onnx(checkpoint_path, out_path, batch, height, width, opset=13):
    """Traces the fused module at a fixed input shape and writes an ONNX file (atomically)."""
    net = build(checkpoint_path)
    dummy = torch.zeros(batch, 3, height, width)
    tmp = out_path + '.tmp'
    with torch.no_grad():
        torch.onnx.export(net, dummy, tmp, opset_version=opset, input_names=['images'],
                          output_names=['pred'], do_constant_folding=True)
    os.replace(tmp, out_path)
    return out_path
