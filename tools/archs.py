"""The YOLOv7 architectures the synthetic-checkpoint generator (tools/synth.py) builds.

Each architecture is described here as data: the rows of the official model config
(`[from, n, module, args]`, the form `Model.yaml` keeps inside a checkpoint), the anchors in
pixels, the number of classes and the class names.  The rows are written with small builder
functions for the repeated blocks (ELAN, the stride-2 "MP" block) so the structure is easy to
read; `config(name)` expands them to exactly the dict a checkpoint stores, with the strings the
official parser evaluates ('None', 'nc', 'anchors', 'nn.LeakyReLU(0.1)', 'nn.Upsample').

Architectures:
  yolov7-tiny            deploy cfg, LeakyReLU(0.1), plain Detect head (release layout)
  yolov7-tiny/training   training cfg: the same rows with an IDetect head
  yolov7                 deploy cfg, SiLU, SPPCSPC, three RepConv, Detect head
"""

LEAKY = 'nn.LeakyReLU(0.1)'

COCO_NAMES = [
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat',
    'traffic light', 'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat', 'dog',
    'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella',
    'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball', 'kite',
    'baseball bat', 'baseball glove', 'skateboard', 'surfboard', 'tennis racket', 'bottle',
    'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple', 'sandwich', 'orange',
    'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch', 'potted plant',
    'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote', 'keyboard', 'cell phone',
    'microwave', 'oven', 'toaster', 'sink', 'refrigerator', 'book', 'clock', 'vase', 'scissors',
    'teddy bear', 'hair drier', 'toothbrush']


# ---- row builders ---------------------------------------------------------------------------
# A row is [from, repeats, module, args]; repeats is always 1 in these models.

def _conv(frm, c, k, s, act=None):
    """Conv(c_out, k, s): tiny passes padding 'None', groups 1 and its activation explicitly."""
    args = [c, k, s] if act is None else [c, k, s, 'None', 1, act]
    return [frm, 1, 'Conv', args]


def _concat(frm):
    return [frm, 1, 'Concat', [1]]


def _mp():
    return [-1, 1, 'MP', []]


def _sp(frm, k):
    return [frm, 1, 'SP', [k]]


def _upsample():
    return [-1, 1, 'nn.Upsample', ['None', 2, 'nearest']]


def _head(frm, kind):
    return [frm, 1, kind, ['nc', 'anchors']]


def _tiny_elan(c, act=LEAKY):
    """Tiny ELAN: two 1x1 branches, two 3x3 on the second, concat of all four, 1x1 to 2c."""
    return [_conv(-1, c, 1, 1, act), _conv(-2, c, 1, 1, act), _conv(-1, c, 3, 1, act),
            _conv(-1, c, 3, 1, act), _concat([-1, -2, -3, -4]), _conv(-1, 2 * c, 1, 1, act)]


def _elan(c, c_out):
    """yolov7 backbone ELAN: 1x1, 1x1, four 3x3; concat of every other output; 1x1."""
    return [_conv(-1, c, 1, 1), _conv(-2, c, 1, 1)] + [_conv(-1, c, 3, 1) for _ in range(4)] + \
        [_concat([-1, -3, -5, -6]), _conv(-1, c_out, 1, 1)]


def _elan_h(c, c_mid, c_out):
    """yolov7 head ELAN: like _elan but the concat takes all six branch outputs."""
    return [_conv(-1, c, 1, 1), _conv(-2, c, 1, 1)] + \
        [_conv(-1, c_mid, 3, 1) for _ in range(4)] + \
        [_concat([-1, -2, -3, -4, -5, -6]), _conv(-1, c_out, 1, 1)]


def _down(c, skip=None):
    """yolov7 stride-2 block: max-pool branch and 3x3 stride-2 branch, concatenated."""
    cat = [-1, -3] if skip is None else [-1, -3, skip]
    return [_mp(), _conv(-1, c, 1, 1), _conv(-3, c, 1, 1), _conv(-1, c, 3, 2), _concat(cat)]


# ---- architectures ----------------------------------------------------------------------------

def _tiny_rows(head_kind):
    a = LEAKY
    backbone = [_conv(-1, 32, 3, 2, a), _conv(-1, 64, 3, 2, a)] + _tiny_elan(32) + [_mp()] + \
        _tiny_elan(64) + [_mp()] + _tiny_elan(128) + [_mp()] + _tiny_elan(256)
    head = [_conv(-1, 256, 1, 1, a), _conv(-2, 256, 1, 1, a),
            _sp(-1, 5), _sp(-2, 9), _sp(-3, 13), _concat([-1, -2, -3, -4]),
            _conv(-1, 256, 1, 1, a), _concat([-1, -7]), _conv(-1, 256, 1, 1, a),     # 37
            _conv(-1, 128, 1, 1, a), _upsample(), _conv(21, 128, 1, 1, a), _concat([-1, -2])] + \
        _tiny_elan(64) + \
        [_conv(-1, 64, 1, 1, a), _upsample(), _conv(14, 64, 1, 1, a), _concat([-1, -2])] + \
        _tiny_elan(32) + \
        [_conv(-1, 128, 3, 2, a), _concat([-1, 47])] + _tiny_elan(64) + \
        [_conv(-1, 256, 3, 2, a), _concat([-1, 37])] + _tiny_elan(128) + \
        [_conv(57, 128, 3, 1, a), _conv(65, 256, 3, 1, a), _conv(73, 512, 3, 1, a),
         _head([74, 75, 76], head_kind)]
    return backbone, head


def _yolov7_rows(head_kind):
    backbone = [_conv(-1, 32, 3, 1), _conv(-1, 64, 3, 2), _conv(-1, 64, 3, 1),
                _conv(-1, 128, 3, 2)] + _elan(64, 256) + \
        _down(128) + _elan(128, 512) + _down(256) + _elan(256, 1024) + \
        _down(512) + _elan(256, 1024)
    head = [[-1, 1, 'SPPCSPC', [512]], _conv(-1, 256, 1, 1), _upsample(),
            _conv(37, 256, 1, 1), _concat([-1, -2])] + _elan_h(256, 128, 256) + \
        [_conv(-1, 128, 1, 1), _upsample(), _conv(24, 128, 1, 1), _concat([-1, -2])] + \
        _elan_h(128, 64, 128) + \
        _down(128, 63) + _elan_h(256, 128, 256) + _down(256, 51) + _elan_h(512, 256, 512) + \
        [[75, 1, 'RepConv', [256, 3, 1]], [88, 1, 'RepConv', [512, 3, 1]],
         [101, 1, 'RepConv', [1024, 3, 1]], _head([102, 103, 104], head_kind)]
    return backbone, head


TINY_ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
V7_ANCHORS = [[12, 16, 19, 36, 40, 28], [36, 75, 76, 55, 72, 146], [142, 110, 192, 243, 459, 401]]

# name -> (rows builder, anchors, yaml file name the official code records, activation)
ARCHS = {
    'yolov7-tiny': (_tiny_rows, TINY_ANCHORS, 'yolov7-tiny.yaml', 'leaky'),
    'yolov7': (_yolov7_rows, V7_ANCHORS, 'yolov7.yaml', 'silu'),
}
LAYOUTS = {'release': 'Detect', 'training': 'IDetect'}
STRIDES = [8, 16, 32]
NC = 80


def config(arch, layout='release'):
    """The cfg dict exactly as Model.yaml holds it in an official checkpoint."""
    rows, anchors, _, _ = ARCHS[arch]
    backbone, head = rows(LAYOUTS[layout])
    return {'nc': NC, 'depth_multiple': 1.0, 'width_multiple': 1.0,
            'anchors': [list(a) for a in anchors], 'backbone': backbone, 'head': head, 'ch': 3}


def layers(arch, layout='release'):
    """All rows, backbone then head, as (index, from, module, args)."""
    cfg = config(arch, layout)
    return [(i, r[0], r[2], r[3]) for i, r in enumerate(cfg['backbone'] + cfg['head'])]


def activation(arch):
    return ARCHS[arch][3]


def yaml_file(arch):
    return ARCHS[arch][2]


def anchors_px(arch):
    """Anchors as [level][anchor] = (w, h) in pixels."""
    a = ARCHS[arch][1]
    return [[(lvl[2 * k], lvl[2 * k + 1]) for k in range(len(lvl) // 2)] for lvl in a]
