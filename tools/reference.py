#!/usr/bin/env python3
"""Independent PyTorch reference for YOLOv7 checkpoints; writes the committed goldens.

It shares no code with libyolo or tools/export.py.  It loads an official-format .pt with
its own ZIP reading and restricted unpickler (the equivalent of torch.load with a restricted
pickle_module: model classes become plain attribute holders, only known globals are allowed;
nothing from the YOLOv7 code base is imported or needed), and runs the UNFUSED parameters with
torch.nn.functional ops only: conv2d, batch_norm (eps from the file), leaky_relu / silu,
max_pool2d, cat, nearest interpolate, RepConv as the sum of its branches, IDetect's implicit
add/mul, and the Detect decode.  Preprocessing is OpenCV's imread + our own letterbox
(INTER_LINEAR resize, constant 114 border); NMS is our own greedy torch code following the
official non_max_suppression rules.

Usage:
  reference.py --out test/golden weights/yolov7-tiny.pt weights/yolov7.pt
      goldens for the cases listed in CASES (paths relative to the repo root, which must be
      the working directory);
  reference.py --validate-official ../shared/fixtures
      compare this reference with the official fixtures (inputs, pred.npy, det_*.json);
  reference.py --detect IMAGE CHECKPOINT [--conf 0.25]
      print the detections of one image.
"""

import argparse
import collections
import hashlib
import io
import json
import os
import pickle
import sys
import zipfile

import cv2
import numpy as np
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# Loading: torch.load with our own restricted unpickler


class Stub:
    """Stands for any pickled model/nn module: keeps its __dict__ and the class path."""
    path = ''

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else {'_state': state})

    def __getattr__(self, name):     # children, parameters and buffers as attributes
        for key in ('_modules', '_parameters', '_buffers'):
            d = self.__dict__.get(key)
            if d is not None and name in d:
                return d[name]
        raise AttributeError(name)


_STUBS = {}


def _stub(path):
    if path not in _STUBS:
        _STUBS[path] = type(path.rsplit('.', 1)[1], (Stub,), {'path': path})
    return _STUBS[path]


def _np_reconstruct(*args):
    return Stub()        # best_fitness (a numpy array) and its dtype: kept opaque, never used


STORAGE_DTYPES = {'HalfStorage': np.float16, 'FloatStorage': np.float32,
                  'DoubleStorage': np.float64, 'LongStorage': np.int64, 'IntStorage': np.int32,
                  'ByteStorage': np.uint8, 'BoolStorage': np.bool_}


def _rebuild_tensor(storage, offset, size, stride, *unused):
    return storage.as_strided(tuple(size), tuple(stride), offset)


def _rebuild_parameter(tensor, *unused):
    return tensor


class RestrictedUnpickler(pickle.Unpickler):
    """Only the globals a YOLOv7 checkpoint needs; storages are read from the ZIP entries.
    (Debian's torch 1.13 ignores torch.load's pickle_module, so we do the equivalent here.)"""
    ALLOWED = {
        ('collections', 'OrderedDict'): collections.OrderedDict,
        ('__builtin__', 'set'): set, ('builtins', 'set'): set,
        ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
        ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
        ('numpy.core.multiarray', '_reconstruct'): _np_reconstruct,
        ('numpy', 'ndarray'): object, ('numpy', 'dtype'): _np_reconstruct,
        ('_codecs', 'encode'): lambda s, enc='latin1': s.encode(enc),
    }

    def __init__(self, data, zf, prefix):
        super().__init__(data)
        self.zf, self.prefix, self.storages = zf, prefix, {}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)]
        if module == 'torch' and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        if module in ('models.yolo', 'models.common') or module.startswith('torch.nn.modules.'):
            return _stub(module + '.' + name)
        raise pickle.UnpicklingError('refusing global %s.%s' % (module, name))

    def persistent_load(self, pid):
        kind, dtype, key, _location, numel = pid
        if kind != 'storage':
            raise pickle.UnpicklingError('unknown persistent id ' + repr(kind))
        if key not in self.storages:
            raw = self.zf.read(self.prefix + 'data/' + key)
            arr = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder('<'), count=numel)
            self.storages[key] = torch.from_numpy(arr.astype(dtype))
        return self.storages[key]


def load_checkpoint(path):
    with zipfile.ZipFile(path) as zf:
        pkl = [n for n in zf.namelist() if n.endswith('data.pkl')]
        if len(pkl) != 1:
            raise ValueError('%s: no single data.pkl' % path)
        prefix = pkl[0][:-len('data.pkl')]
        ckpt = RestrictedUnpickler(io.BytesIO(zf.read(pkl[0])), zf, prefix).load()
    return ckpt.get('ema') or ckpt['model']


def cls_name(m):
    return m.path.rsplit('.', 1)[1]


# ---------------------------------------------------------------------------------------------
# Forward pass from unfused parameters


class Net:
    def __init__(self, model, dtype):
        self.dtype = dtype
        self.layers = list(model.model._modules.values())
        self.model = model

    def p(self, t):
        return t.to(self.dtype)

    def act(self, m, x):
        kind = cls_name(m)
        if kind == 'LeakyReLU':
            return F.leaky_relu(x, m.negative_slope)
        if kind == 'SiLU':
            return F.silu(x)
        if kind == 'Identity':
            return x
        raise ValueError('activation ' + kind)

    def conv2d(self, c, x, with_bias=False):
        b = c.bias
        return F.conv2d(x, self.p(c.weight), None if b is None else self.p(b), c.stride,
                        c.padding, c.dilation, c.groups)

    def bn(self, m, x):
        return F.batch_norm(x, self.p(m.running_mean), self.p(m.running_var), self.p(m.weight),
                            self.p(m.bias), False, 0.0, m.eps)

    def conv(self, m, x):
        return self.act(m.act, self.bn(m.bn, self.conv2d(m.conv, x)))

    def repconv(self, m, x):
        y = self.bn(m.rbr_dense._modules['1'], self.conv2d(m.rbr_dense._modules['0'], x))
        y = y + self.bn(m.rbr_1x1._modules['1'], self.conv2d(m.rbr_1x1._modules['0'], x))
        if m.rbr_identity is not None:
            y = y + self.bn(m.rbr_identity, x)
        return self.act(m.act, y)

    def pool(self, m, x):
        return F.max_pool2d(x, m.kernel_size, m.stride, m.padding)

    def sppcspc(self, m, x):
        x1 = self.conv(m.cv4, self.conv(m.cv3, self.conv(m.cv1, x)))
        pools = [self.pool(p, x1) for p in m.m._modules.values()]
        y1 = self.conv(m.cv6, self.conv(m.cv5, torch.cat([x1] + pools, 1)))
        y2 = self.conv(m.cv2, x)
        return self.conv(m.cv7, torch.cat([y1, y2], 1))

    def detect(self, m, xs):
        outs = []
        implicit = cls_name(m) == 'IDetect'
        convs = list(m.m._modules.values())
        for i, x in enumerate(xs):
            if implicit:
                x = x + self.p(m.ia._modules[str(i)].implicit)
            y = self.conv2d(convs[i], x)
            if implicit:
                y = y * self.p(m.im._modules[str(i)].implicit)
            bs, _, ny, nx = y.shape
            y = y.view(bs, m.na, m.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous().sigmoid()
            gy, gx = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing='ij')
            grid = torch.stack((gx, gy), 2).view(1, 1, ny, nx, 2).to(self.dtype)
            stride = float(m.stride[i])
            anchor = self.p(m.anchor_grid[i])
            xy = (y[..., 0:2] * 2. - 0.5 + grid) * stride
            wh = (y[..., 2:4] * 2) ** 2 * anchor
            y = torch.cat((xy, wh, y[..., 4:]), -1)
            outs.append(y.view(bs, -1, m.no))
        return torch.cat(outs, 1)

    def forward(self, x, record=None):
        """x: [1,3,H,W] in self.dtype. record(i, tensor) is called with every layer's output."""
        y = []
        for i, m in enumerate(self.layers):
            f = m.f
            if isinstance(f, int):
                inp = x if f == -1 else y[f]
            else:
                inp = [x if j == -1 else y[j] for j in f]
            kind = cls_name(m)
            if kind == 'Conv':
                x = self.conv(m, inp)
            elif kind == 'Concat':
                x = torch.cat(inp, m.d)
            elif kind in ('MP', 'SP'):
                x = self.pool(m.m, inp)
            elif kind == 'Upsample':
                x = F.interpolate(inp, scale_factor=m.scale_factor, mode='nearest')
            elif kind == 'SPPCSPC':
                x = self.sppcspc(m, inp)
            elif kind == 'RepConv':
                x = self.repconv(m, inp)
            elif kind in ('Detect', 'IDetect'):
                x = self.detect(m, inp)
            else:
                raise ValueError('unsupported layer %d: %s' % (i, kind))
            y.append(x)
            if record is not None:
                record(i, x)
        return x


# ---------------------------------------------------------------------------------------------
# Preprocessing


def letterbox(img, size=640, stride=32, auto=True, color=(114, 114, 114)):
    """detect.py's letterbox: scale to fit, pad to a stride multiple (auto) or the full square."""
    h, w = img.shape[:2]
    r = min(size / h, size / w)
    new_w, new_h = int(round(w * r)), int(round(h * r))
    dw, dh = size - new_w, size - new_h
    if auto:
        dw, dh = dw % stride, dh % stride
    dw, dh = dw / 2, dh / 2
    if (w, h) != (new_w, new_h):
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    return cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)


def load_input(path, size=640, stride=32, auto=True):
    """Returns (uint8 [3,H,W] RGB letterboxed, original (h, w))."""
    img = cv2.imread(path)
    if img is None:
        raise FileNotFoundError(path)
    lb = letterbox(img, size, stride, auto)
    return np.ascontiguousarray(lb[:, :, ::-1].transpose(2, 0, 1)), img.shape[:2]


def to_tensor(u8, dtype):
    t = torch.from_numpy(u8.astype(np.float32)) / 255.0      # true fp32 division, like detect.py
    return t.to(dtype)[None]


# ---------------------------------------------------------------------------------------------
# Post-processing


def greedy_nms(boxes, scores, iou_thres, max_keep):
    """Descending score (stable for ties), suppress IoU > thres; first max_keep survivors."""
    order = torch.sort(scores, descending=True, stable=True).indices
    boxes = boxes[order]
    x1, y1, x2, y2 = boxes.unbind(1)
    area = (x2 - x1) * (y2 - y1)
    alive = torch.ones(len(order), dtype=torch.bool)
    keep = []
    for k in range(len(order)):
        if not alive[k]:
            continue
        keep.append(k)
        if len(keep) == max_keep:
            break
        xx1 = torch.maximum(x1[k], x1[k + 1:])
        yy1 = torch.maximum(y1[k], y1[k + 1:])
        xx2 = torch.minimum(x2[k], x2[k + 1:])
        yy2 = torch.minimum(y2[k], y2[k + 1:])
        inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
        iou = inter / (area[k] + area[k + 1:] - inter)
        alive[k + 1:] &= ~(iou > iou_thres)
    return order[torch.tensor(keep, dtype=torch.long)]


def non_max_suppression(pred, conf_thres, iou_thres, multi_label=False, max_det=300,
                        max_nms=30000, max_wh=4096):
    """pred [R, no] of one image -> [N, 6] (x1, y1, x2, y2, conf, cls) in NMS order."""
    x = pred[pred[:, 4] > conf_thres].clone()
    if x.shape[0] == 0:
        return x.new_zeros((0, 6))
    nc = x.shape[1] - 5
    if nc == 1:
        x[:, 5:] = x[:, 4:5]
    else:
        x[:, 5:] *= x[:, 4:5]
    box = torch.empty_like(x[:, :4])
    box[:, 0] = x[:, 0] - x[:, 2] / 2
    box[:, 1] = x[:, 1] - x[:, 3] / 2
    box[:, 2] = x[:, 0] + x[:, 2] / 2
    box[:, 3] = x[:, 1] + x[:, 3] / 2
    if multi_label:
        i, j = (x[:, 5:] > conf_thres).nonzero(as_tuple=False).T
        x = torch.cat((box[i], x[i, j + 5, None], j[:, None].to(x.dtype)), 1)
    else:
        conf, j = x[:, 5:].max(1, keepdim=True)
        x = torch.cat((box, conf, j.to(x.dtype)), 1)[conf.view(-1) > conf_thres]
    if x.shape[0] == 0:
        return x
    if x.shape[0] > max_nms:
        x = x[torch.sort(x[:, 4], descending=True, stable=True).indices[:max_nms]]
    offset = x[:, 5:6] * max_wh
    keep = greedy_nms(x[:, :4] + offset, x[:, 4], iou_thres, max_det)
    return x[keep]


def scale_coords(net_hw, boxes, orig_hw):
    """Back to original-image pixels (detect.py's scale_coords without the final rounding)."""
    gain = min(net_hw[0] / orig_hw[0], net_hw[1] / orig_hw[1])
    pad_x = (net_hw[1] - orig_hw[1] * gain) / 2
    pad_y = (net_hw[0] - orig_hw[0] * gain) / 2
    b = boxes.clone()
    b[:, [0, 2]] -= pad_x
    b[:, [1, 3]] -= pad_y
    b[:, :4] /= gain
    b[:, 0].clamp_(0, orig_hw[1])
    b[:, 1].clamp_(0, orig_hw[0])
    b[:, 2].clamp_(0, orig_hw[1])
    b[:, 3].clamp_(0, orig_hw[0])
    return b


DET_SETTINGS = {'0.25': (0.25, 0.45, False), '0.001': (0.001, 0.65, False),
                '0.001_ml': (0.001, 0.65, True)}


def detections(pred, net_hw, orig_hw, setting):
    """[N, 10]: x1,y1,x2,y2 (original px, clipped), conf, cls, x1,y1,x2,y2 (network px)."""
    conf, iou, ml = DET_SETTINGS[setting]
    d = non_max_suppression(pred, conf, iou, multi_label=ml)
    orig = scale_coords(net_hw, d[:, :4], orig_hw)
    return torch.cat((orig, d[:, 4:6], d[:, :4]), 1)


# ---------------------------------------------------------------------------------------------
# Running a case


def run(model, u8, dtype, record=None):
    with torch.no_grad():
        return Net(model, dtype).forward(to_tensor(u8, dtype), record)[0]


def sample_indices(numel):
    return [int((k + 0.5) * numel / 256) for k in range(256)]


def layer_rows(model, u8):
    """Per layer: shape, sum, abs-sum, min, max, max|f32-f64| at the samples, 256 f32 samples."""
    outs = {torch.float32: [], torch.float64: []}
    for dt in outs:
        def rec(i, t, dt=dt):
            t = t[0]
            if t.dim() == 2:                    # Detect: {n, 1, rows, no}
                shape = (1, 1) + tuple(t.shape)
            else:
                shape = (1,) + tuple(t.shape)
            flat = t.reshape(-1)
            idx = torch.tensor(sample_indices(flat.numel()))
            outs[dt].append((shape, flat.double().sum().item(), flat.double().abs().sum().item(),
                             flat.min().item(), flat.max().item(), flat[idx].double().numpy()))
        run(model, u8, dt, rec)
    rows = []
    for a, b in zip(outs[torch.float32], outs[torch.float64]):
        diff = float(np.abs(a[5] - b[5]).max())
        rows.append(list(a[0]) + [a[1], a[2], a[3], a[4], diff] + list(a[5]))
    return np.array(rows, dtype=np.float32)


def margins(p32, p64):
    d = (p32.double() - p64).abs()
    return {'margin_box_px': d[:, :4].max().item(), 'margin_obj': d[:, 4].max().item(),
            'margin_cls': d[:, 5:].max().item()}


# pred_sample.npy keeps every SAMPLE_EVERY-th row and every row with obj > SAMPLE_OBJ (all rows
# that can reach conf 0.25), which keeps test/golden under 10 MB with the inputs included.
SAMPLE_EVERY = 64
SAMPLE_OBJ = 0.1

# Cases: name -> (image, letterbox auto)
CASES = {
    'yolov7-tiny': [('astronaut', 'images/astronaut.png', True),
                    ('coffee', 'images/coffee.png', True),
                    ('chelsea', 'images/chelsea.png', True),
                    ('rocket', 'images/rocket.jpg', True),
                    ('chelsea_square', 'images/chelsea.png', False)],
    'yolov7': [('astronaut', 'images/astronaut.png', True),
               ('coffee', 'images/coffee.png', True)],
}


def write_case(model, out_dir, image, auto, size=640):
    os.makedirs(out_dir, exist_ok=True)
    u8, orig_hw = load_input(image, size, 32, auto)
    p32 = run(model, u8, torch.float32)
    p64 = run(model, u8, torch.float64)
    m = margins(p32, p64)
    net_hw = u8.shape[1:]
    np.save(os.path.join(out_dir, 'input.u8.npy'), u8)
    rows = np.arange(p32.shape[0])
    pick = (rows % SAMPLE_EVERY == 0) | (p32[:, 4].numpy() > SAMPLE_OBJ)
    sample = np.concatenate([rows[pick, None].astype(np.float32), p32.numpy()[pick]], 1)
    np.save(os.path.join(out_dir, 'pred_sample.npy'), sample.astype(np.float32))
    np.save(os.path.join(out_dir, 'layers.npy'), layer_rows(model, u8))
    counts = {}
    for setting in DET_SETTINGS:
        d = detections(p32, net_hw, orig_hw, setting).numpy().astype(np.float32)
        np.save(os.path.join(out_dir, 'det_%s.npy' % setting), d)
        counts[setting] = len(d)
    with open(os.path.join(out_dir, 'case.txt'), 'w') as f:
        f.write('image %s\nimg_size %d\nauto %d\nrows %d\ncols %d\n'
                % (image, size, int(auto), p32.shape[0], p32.shape[1]))
        for k, v in m.items():
            f.write('%s %.9g\n' % (k, v))
    return counts, m


def model_name(path):
    return os.path.splitext(os.path.basename(path))[0]


def synth_args_of(path):
    """The synth.py arguments recorded for the golden (the model name is the arch)."""
    return '--arch %s --layout release --seed 0' % model_name(path)


def make_goldens(out_root, checkpoints, only_case=None):
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    for ck in checkpoints:
        name = model_name(ck)
        model = load_checkpoint(ck)
        with open(ck, 'rb') as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        mdir = os.path.join(out_root, name)
        os.makedirs(mdir, exist_ok=True)
        with open(os.path.join(mdir, 'model.txt'), 'w') as f:
            f.write('checkpoint %s\ncheckpoint_sha256 %s\nsynth_args %s\n'
                    % (ck, sha, synth_args_of(ck)))
        for case, image, auto in CASES[name]:
            if only_case and case != only_case:
                continue
            counts, m = write_case(model, os.path.join(mdir, case), image, auto)
            print('%s/%s: det %s  margins %s' % (name, case, counts,
                                                 ' '.join('%s=%.3g' % kv for kv in m.items())))


# ---------------------------------------------------------------------------------------------
# Validation against the official fixtures


def _match(ours, theirs, tol_box, tol_conf):
    """Rows in the same order: same class, boxes and conf within tolerance."""
    if len(ours) != len(theirs):
        return False, float('inf'), float('inf')
    if len(ours) == 0:
        return True, 0.0, 0.0
    same_cls = bool((ours[:, 5] == theirs[:, 5]).all())
    db = float(np.abs(ours[:, :4] - theirs[:, :4]).max())
    dc = float(np.abs(ours[:, 4] - theirs[:, 4]).max())
    return same_cls and db <= tol_box and dc <= tol_conf, db, dc


def _unmatched(rows, pool, tol_box, tol_conf):
    """How many of `rows` have no row in `pool` with the same class and box/conf within tol
    (order-free: near-equal confidences may swap places)."""
    missing = 0
    for r in rows:
        ok = (pool[:, 5] == r[5]) & (np.abs(pool[:, :4] - r[:4]).max(1) <= tol_box) & \
            (np.abs(pool[:, 4] - r[4]) <= tol_conf)
        missing += not ok.any()
    return missing


def validate_official(root):
    man = json.load(open(os.path.join(root, 'manifest.json')))
    ok_all = True
    for mname, minfo in man['models'].items():
        model = load_checkpoint(os.path.join(root, minfo['checkpoint']))
        for case, c in minfo['cases'].items():
            image = os.path.join(root, c['image'])
            u8, orig_hw = load_input(image, minfo['img_size'], minfo['stride'],
                                     c['letterbox_auto'])
            ref_u8 = np.load(os.path.join(root, c['input']))
            exact = ref_u8.shape == u8.shape and bool((ref_u8 == u8).all())
            p32 = run(model, u8, torch.float32)
            line = '%s/%s: input %s' % (mname, case, 'bit-exact' if exact else 'DIFFERS')
            ok_all &= exact
            if c.get('pred'):
                ref = torch.from_numpy(np.load(os.path.join(root, c['pred'])))
                m = margins(p32, ref.double())
                line += ' pred max|d| box %.3g obj %.3g cls %.3g' % tuple(m.values())
            for key, fname in c['detections'].items():
                setting = '0.001_ml' if key == '0.001_multilabel' else key
                theirs = json.load(open(os.path.join(root, fname)))
                t = np.array([[d['x1'], d['y1'], d['x2'], d['y2'], d['conf'], d['cls']]
                              for d in theirs], dtype=np.float64).reshape(-1, 6)
                ours = detections(p32, u8.shape[1:], orig_hw, setting).double().numpy()[:, :6]
                if key == '0.25':
                    good, db, dc = _match(ours, t, 1.0, 2e-3)
                    ok_all &= good
                    line += ' | det0.25 n %d/%d %s box %.3g conf %.3g' % (
                        len(ours), len(t), 'ok' if good else 'MISMATCH', db, dc)
                else:
                    # the tail of a 300-box list is unstable; compare rows clearly above it
                    floor = t[-1, 4] + 2e-3 if len(t) else 0
                    head = t[t[:, 4] > floor]
                    miss = _unmatched(head, ours, 1.0, 2e-3) if len(ours) else len(head)
                    good = miss == 0 and len(ours) == len(t)
                    ok_all &= good
                    line += ' | det%s n %d/%d, %d above the tail: %s' % (
                        key, len(ours), len(t), len(head),
                        'all found' if miss == 0 else '%d MISSING' % miss)
            print(line)
    print('official validation:', 'PASS' if ok_all else 'FAIL')
    return ok_all


def main(argv=None):
    ap = argparse.ArgumentParser(description='YOLOv7 PyTorch reference and golden writer')
    ap.add_argument('checkpoints', nargs='*')
    ap.add_argument('--out', help='golden root, e.g. test/golden')
    ap.add_argument('--case', help='only this case name')
    ap.add_argument('--validate-official', metavar='FIXTURES')
    ap.add_argument('--detect', metavar='IMAGE')
    ap.add_argument('--conf', default='0.25', choices=sorted(DET_SETTINGS))
    a = ap.parse_args(argv)
    if a.validate_official:
        return 0 if validate_official(a.validate_official) else 1
    if a.detect:
        for ck in a.checkpoints:
            u8, orig_hw = load_input(a.detect)
            p = run(load_checkpoint(ck), u8, torch.float32)
            d = detections(p, u8.shape[1:], orig_hw, a.conf)
            print('%s: %d detections at %s' % (ck, len(d), a.conf))
        return 0
    if not a.out or not a.checkpoints:
        ap.error('need --out and checkpoints')
    make_goldens(a.out, a.checkpoints, a.case)
    return 0


if __name__ == '__main__':
    sys.exit(main())
