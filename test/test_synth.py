#!/usr/bin/env python3
"""Tests for tools/synth.py and tools/archs.py (numpy only; run from the repo root:
`python3 test/test_synth.py`).  Expected numbers come from independent sources: a plain-integer
splitmix64, the parameter counts of the official configs (yolov7-facts §7), the ZIP spec."""

import io
import os
import pickle
import struct
import sys
import tempfile
import unittest
import zipfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tools'))
import archs  # noqa: E402
import synth  # noqa: E402


def splitmix64_scalar(x):
    """Textbook splitmix64 output function on Python ints."""
    m = (1 << 64) - 1
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    return x ^ (x >> 31)


class Holder:
    def __setstate__(self, st):
        self.__dict__['state'] = st


class GenericUnpickler(pickle.Unpickler):
    """Reads a checkpoint without torch: every global becomes a record-keeping stand-in."""

    def find_class(self, module, name):
        if (module, name) == ('collections', 'OrderedDict'):
            import collections
            return collections.OrderedDict
        if name == 'set':
            return set
        if name == '_rebuild_tensor_v2':
            return lambda st, off, size, stride, *a: ('tensor', st, tuple(size))
        if name == '_rebuild_parameter':
            return lambda t, rg, hooks: t
        if name.endswith('Storage'):
            return name
        return type(name, (Holder,), {'path': module + '.' + name})

    def persistent_load(self, pid):
        return tuple(pid)


def params_of(obj, acc):
    st = obj.state
    for t in st.get('_parameters', {}).values():
        if t is not None:
            acc.append(t)
    for c in st.get('_modules', {}).values():
        if c is not None:
            params_of(c, acc)
    return acc


class SynthTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp()
        cls.path = os.path.join(cls.tmp, 'tiny.pt')
        synth.main(['--arch', 'yolov7-tiny', '--out', cls.path])
        with open(cls.path, 'rb') as f:
            cls.data = f.read()

    def test_prng_matches_textbook_splitmix64(self):
        rng = synth.Rng(7)
        got = rng.uniform((5,))
        key = splitmix64_scalar(7)
        want = [(splitmix64_scalar((key + n * 0x9E3779B97F4A7C15) & ((1 << 64) - 1)) >> 11)
                * 2.0 ** -53 for n in range(5)]
        self.assertEqual(list(got), want)
        self.assertEqual(list(rng.uniform((2,))), [
            (splitmix64_scalar((key + n * 0x9E3779B97F4A7C15) & ((1 << 64) - 1)) >> 11)
            * 2.0 ** -53 for n in (5, 6)])

    def test_same_bytes_twice(self):
        other = os.path.join(self.tmp, 'again.pt')
        synth.main(['--arch', 'yolov7-tiny', '--out', other])
        with open(other, 'rb') as f:
            self.assertEqual(f.read(), self.data)

    def test_seed_changes_weights(self):
        other = os.path.join(self.tmp, 'seed1.pt')
        synth.main(['--arch', 'yolov7-tiny', '--out', other, '--seed', '1'])
        with open(other, 'rb') as f:
            self.assertNotEqual(f.read(), self.data)

    def test_zip_stored_and_aligned(self):
        z = zipfile.ZipFile(io.BytesIO(self.data))
        self.assertIsNone(z.testzip())
        names = z.namelist()
        self.assertEqual(names[0], 'archive/data.pkl')
        self.assertEqual(names[-1], 'archive/version')
        self.assertEqual(z.read('archive/version'), b'3\n')
        for info in z.infolist():
            self.assertEqual(info.compress_type, zipfile.ZIP_STORED)
            o = info.header_offset
            nl, el = struct.unpack('<HH', self.data[o + 26:o + 30])
            self.assertEqual((o + 30 + nl + el) % 64, 0, info.filename)

    def test_pickle_structure(self):
        z = zipfile.ZipFile(io.BytesIO(self.data))
        raw = z.read('archive/data.pkl')
        self.assertEqual(raw[:2], b'\x80\x02')                  # protocol 2
        ck = GenericUnpickler(io.BytesIO(raw)).load()
        self.assertEqual(sorted(ck), ['epoch', 'model', 'optimizer', 'training_results'])
        self.assertEqual(ck['epoch'], -1)
        model = ck['model']
        self.assertEqual(model.path, 'models.yolo.Model')
        layers = list(model.state['_modules']['model'].state['_modules'].values())
        self.assertEqual(len(layers), 78)
        params = params_of(model, [])
        # official deploy cfg of yolov7-tiny: 6,227,101 parameters, all fp16
        self.assertEqual(sum(int(np.prod(t[2])) for t in params), 6227101)
        self.assertTrue(all(t[1][1] == 'HalfStorage' for t in params))
        det = layers[-1].state
        self.assertEqual(layers[-1].path, 'models.yolo.Detect')
        self.assertEqual((det['nc'], det['no'], det['nl'], det['na']), (80, 85, 3, 3))
        self.assertEqual(det['f'], [74, 75, 76])
        bn = layers[0].state['_modules']['bn'].state
        self.assertEqual(bn['eps'], 0.001)
        self.assertEqual(model.state['yaml'], archs.config('yolov7-tiny'))

    def test_anchor_buffers(self):
        z = zipfile.ZipFile(io.BytesIO(self.data))
        ck = GenericUnpickler(io.BytesIO(z.read('archive/data.pkl'))).load()
        det = list(ck['model'].state['_modules']['model'].state['_modules'].values())[-1]
        bufs = det.state['_buffers']

        def values(t):
            return np.frombuffer(z.read('archive/data/' + t[1][2]), '<f2').reshape(t[2])
        grid_units = values(bufs['anchors']).astype(np.float64)
        pixels = values(bufs['anchor_grid']).reshape(3, 3, 2).astype(np.float64)
        want = np.array(archs.anchors_px('yolov7-tiny'), dtype=np.float64)
        np.testing.assert_array_equal(pixels, want)
        np.testing.assert_array_equal(grid_units * np.array([8, 16, 32])[:, None, None], want)

    def test_archs_layer_counts(self):
        self.assertEqual(len(archs.layers('yolov7-tiny')), 78)
        self.assertEqual(len(archs.layers('yolov7')), 106)
        self.assertEqual(archs.layers('yolov7-tiny', 'training')[-1][2], 'IDetect')
        kinds = {k for _, _, k, _ in archs.layers('yolov7')}
        self.assertEqual(kinds, {'Conv', 'Concat', 'MP', 'SPPCSPC', 'nn.Upsample', 'RepConv',
                                 'Detect'})

    def test_fp16_rounding_goes_through_fp32(self):
        x = np.array([1.0 + 2.0 ** -11 + 2.0 ** -40, 65504.0, 1e-8])
        self.assertEqual(synth.f16(x).dtype, np.float16)
        # 1 + 2^-11 + tiny: fp32 drops the tiny part, then ties to even -> 1.0
        self.assertEqual(float(synth.f16(x)[0]), 1.0)


if __name__ == '__main__':
    unittest.main(verbosity=1)
