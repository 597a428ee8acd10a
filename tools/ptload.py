"""Reads a PyTorch .pt checkpoint (the zip format of torch >= 1.6) without torch
and without running any code from the file.

The pickle inside the zip is read by a restricted Unpickler: it knows a fixed
list of global names (the ones YOLOv7 checkpoints use, see yolov7-facts.md
section 1) and refuses every other one, naming it. Tensors come back as numpy
arrays (fp16 stays fp16), nn.Module objects as `Module` stubs that keep the
pickled __dict__ (with `_parameters`, `_buffers`, `_modules`).

    ckpt = load(path)            # whatever the pickle holds (dict or model)
    model, where = select_model(ckpt)   # the Model: ema if truthy, else model

Errors are raised as PtLoadError with a message meant for the user.

A hostile file must not be able to make the loader hang or take unbounded
memory: `Limits` bounds the zip, the pickle (checked opcode by opcode by
`scan_pickle` before the C unpickler runs it), the storages and tensors, and
the module tree (`walk_modules`). Each refusal names the limit, so that a
caller with a real need can raise it.
"""

import collections
import io
import os
import pickle
import pickletools
import struct
import zipfile
import zlib

import numpy as np


class PtLoadError(Exception):
    """A checkpoint that cannot (or must not) be read."""


# ---- limits -------------------------------------------------------------------
# Each default is several times what the largest YOLOv7 needs, and far below
# what hurts a machine (docs/exporter.md gives the reasoning per limit). The
# largest official model, yolov7-e6e (151.7 M parameters), is a ~300 MB fp16
# file; a train.py checkpoint of it that keeps model, ema and SGD momentum holds
# ~1.2 GB of storages in ~3,600 tensors (~1.8 GB and ~4,400 with Adam). The
# synthetic yolov7 (tools/archs.py, 562 tensors) has 137 KB of pickle, 56,000
# opcodes, 11,500 memo entries, a stack of at most 384, modules 4 and tuples
# 2 deep.

GiB = 1 << 30

# (name, default, meaning) -- export.py turns each into a --max-... option.
LIMITS = (
    ("max_bytes", 2 * GiB,
     "bytes of the checkpoint file, of the storages it inflates to, of the tensors "
     "rebuilt from them and of the model built: each at most this"),
    ("max_tensors", 20000,
     "tensors rebuilt from the pickle (zip entries: this + 64)"),
    ("max_pickle_bytes", 16 << 20,
     "bytes of data.pkl, inflated"),
    ("max_pickle_ops", 2000000,
     "opcodes in data.pkl (each builds at most one object)"),
    ("max_memo", 1 << 20,
     "memo indices of the pickle are below this (the unpickler's memo is an array "
     "that large)"),
    ("max_stack", 100000,
     "items and marks on the unpickler's stack"),
    ("max_depth", 64,
     "nesting depth of modules in the module tree and of tuples in the pickle"),
)


class Limits:
    """The bounds a load works under; unnamed ones take their default."""

    def __init__(self, **given):
        for name, default, _ in LIMITS:
            value = given.pop(name, None)
            setattr(self, name, default if value is None else value)
        if given:
            raise TypeError("unknown limits: %s" % ", ".join(sorted(given)))


def option(name):
    """The command-line spelling of a limit: max_bytes -> --max-bytes."""
    return "--" + name.replace("_", "-")


def over(limit, what, value, bound):
    """The refusal for a limit that a checkpoint exceeds."""
    return PtLoadError("%s: %d, more than the limit of %d (%s)"
                       % (what, value, bound, option(limit)))


# ---- storages ---------------------------------------------------------------

# torch storage class name -> numpy dtype of its elements. BFloat16 has no
# numpy type; it is widened to float32 when read.
STORAGE_DTYPES = {
    "HalfStorage": np.float16,
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class StorageType:
    """Stands for a torch.*Storage class: only its element type matters."""

    def __init__(self, name):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]
        # bytes per element in the file, and in the array built (bfloat16 -> float32)
        self.itemsize = 2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize
        self.out_itemsize = 4 if self.dtype == "bfloat16" else self.itemsize

    def __repr__(self):
        return "torch.%s" % self.name


class StorageRef:
    """A persistent id ('storage', type, key, location, numel) of the pickle."""

    def __init__(self, stype, key, numel):
        self.stype = stype
        self.key = key
        self.numel = numel


# ---- zip entries ------------------------------------------------------------------

CHUNK = 1 << 20     # bytes inflated per read: memory follows the data that really arrives


def _entry(zf, name, what):
    try:
        return zf.getinfo(name)
    except KeyError:
        raise PtLoadError("%s entry '%s' is missing from the zip" % (what, name)) from None


def _read_entry(zf, info):
    """An entry's bytes, inflated chunk by chunk and never past its declared size
    (which the caller has checked): a zip bomb stops where its header says."""
    buf = bytearray()
    with zf.open(info) as fh:
        while len(buf) < info.file_size:
            chunk = fh.read(min(CHUNK, info.file_size - len(buf)))
            if not chunk:
                raise PtLoadError("entry '%s' ends after %d of its %d bytes"
                                  % (info.filename, len(buf), info.file_size))
            buf += chunk
    return buf


def _directory_size(fh, file_size):
    """Bytes of the zip's central directory, from its end record (zip64 too), read
    before zipfile parses the directory: every entry listed there costs memory."""
    tail_len = min(file_size, 22 + 0xFFFF)   # end record + the longest comment
    fh.seek(file_size - tail_len)
    tail = fh.read(tail_len)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return 0    # no end record: zipfile refuses the file by itself
    size = struct.unpack_from("<I", tail, at + 12)[0]
    if at >= 20 and tail[at - 20:at - 16] == b"PK\x06\x07":   # zipfile then reads zip64
        fh.seek(struct.unpack_from("<Q", tail, at - 12)[0])
        rec = fh.read(56)
        if len(rec) == 56 and rec[:4] == b"PK\x06\x06":
            size = struct.unpack_from("<Q", rec, 40)[0]
    return min(size, file_size)


# A directory entry takes 46 bytes + its name; torch's names ("archive/data/123")
# make ~70. Allowing 256 bytes per entry bounds what zipfile builds before the
# entry count itself can be checked.
DIR_BYTES_PER_ENTRY = 256
EXTRA_ENTRIES = 64      # data.pkl, version, byteorder, ... besides the storages


def _open_zip(path, limits):
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            magic = fh.read(4)
            dir_size = _directory_size(fh, size) if magic == b"PK\x03\x04" else 0
    except OSError as e:
        raise PtLoadError("cannot read: %s" % e.strerror) from None
    if magic != b"PK\x03\x04":
        if magic[:2] == b"\x80\x02" or magic[:1] == b"\x80":
            raise PtLoadError("a legacy (pre-1.6, non-zip) torch file; re-save it with "
                              "torch >= 1.6 (torch.save(..., _use_new_zipfile_serialization"
                              "=True))")
        raise PtLoadError("not a PyTorch zip checkpoint (no zip signature)")
    if size > limits.max_bytes:
        raise over("max_bytes", "file size", size, limits.max_bytes)
    max_entries = limits.max_tensors + EXTRA_ENTRIES
    if dir_size > max_entries * DIR_BYTES_PER_ENTRY:
        raise over("max_tensors", "zip directory bytes (at most %d a tensor)"
                   % DIR_BYTES_PER_ENTRY, dir_size, max_entries * DIR_BYTES_PER_ENTRY)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise PtLoadError("broken zip: %s" % e) from None
    if len(zf.infolist()) > max_entries:
        zf.close()
        raise over("max_tensors", "zip entries (the limit + %d)" % EXTRA_ENTRIES,
                   len(zf.infolist()), max_entries)
    return zf


# ---- storages and tensors ------------------------------------------------------------

class _Storages:
    """The storage entries of one checkpoint, each read once (tensors share them),
    their size checked against the pickle's before a byte is inflated."""

    def __init__(self, zf, prefix, byteorder, limits):
        self.zf, self.prefix, self.byteorder, self.limits = zf, prefix, byteorder, limits
        self.cache = {}
        self.total = 0

    def array(self, ref):
        """One storage as a 1-D native-order array."""
        if ref.key in self.cache:
            return self.cache[ref.key]
        name = "%sdata/%s" % (self.prefix, ref.key)
        info = _entry(self.zf, name, "storage")
        nbytes = ref.numel * ref.stype.itemsize
        if info.file_size != nbytes:
            raise PtLoadError("storage '%s': the zip declares %d bytes, the pickle %d x %d"
                              % (name, info.file_size, ref.numel, ref.stype.itemsize))
        self.total += nbytes
        if self.total > self.limits.max_bytes:
            raise over("max_bytes", "bytes of storages (at '%s')" % name, self.total,
                       self.limits.max_bytes)
        raw = _read_entry(self.zf, info)
        dtype = ref.stype.dtype
        if dtype == "bfloat16":
            half = np.frombuffer(raw, dtype=self.byteorder + "u2").astype(np.uint32)
            arr = (half << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder(self.byteorder))
            arr = arr.astype(np.dtype(dtype).newbyteorder("="), copy=False)
        self.cache[ref.key] = arr
        return arr


def _view(offset, size, stride):
    """Validated (offset, size, stride, numel, last element) of a tensor view."""
    offset = int(offset)
    size = tuple(int(s) for s in size)
    stride = tuple(int(s) for s in stride)
    if len(size) != len(stride):
        raise PtLoadError("tensor has size %s but stride %s" % (size, stride))
    if any(s < 0 for s in size) or any(s < 0 for s in stride) or offset < 0:
        raise PtLoadError("tensor has a negative size, stride or offset")
    numel = 1
    for s in size:
        numel *= s
    last = offset + sum((n - 1) * st for n, st in zip(size, stride))
    return offset, size, stride, numel, last


def _as_tensor(storage, offset, size, stride, numel, last):
    """numpy copy of a validated view of a 1-D storage array."""
    if numel == 0:
        return np.zeros(size, dtype=storage.dtype)
    if last >= storage.shape[0]:
        raise PtLoadError("tensor (offset %d, size %s, stride %s) runs past its storage "
                          "of %d elements" % (offset, size, stride, storage.shape[0]))
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=tuple(st * item for st in stride),
        writeable=False)
    return np.array(view, copy=True)


# ---- module stubs -------------------------------------------------------------

class Module:
    """Stub for a pickled torch.nn.Module (or YOLOv7 class): keeps its dict.

    `cls` is the dotted class path from the pickle, e.g. 'models.common.Conv';
    `kind` is its last component ('Conv')."""

    cls = "?"
    kind = "?"

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise PtLoadError("%s: module state is a %s, not a dict"
                              % (self.cls, type(state).__name__))
        # Taken, not copied: a pickle that gives one big state to many modules
        # would otherwise make a copy of it per module.
        self.__dict__ = state

    def table(self, name):
        """_modules, _parameters or _buffers: a dict, empty if absent."""
        t = self.__dict__.get(name)
        if t is None:
            return {}
        if not isinstance(t, dict):
            raise PtLoadError("%s: '%s' is a %s, not a dict"
                              % (self.cls, name, type(t).__name__))
        return t

    def child(self, name):
        return self.table("_modules").get(name)

    def children(self):
        """(name, module) pairs of _modules, skipping None values."""
        return [(k, v) for k, v in self.table("_modules").items() if v is not None]

    def tensor(self, name):
        """A parameter or buffer (numpy array), or None if absent."""
        for table in ("_parameters", "_buffers"):
            t = self.table(table).get(name)
            if t is not None:
                return t
        return None

    def attr(self, name, default=None):
        return self.__dict__.get(name, default)

    def __repr__(self):
        return "<%s>" % self.cls


_STUB_CACHE = {}


def _stub_class(path):
    if path not in _STUB_CACHE:
        kind = path.rsplit(".", 1)[1]
        _STUB_CACHE[path] = type(kind, (Module,), {"cls": path, "kind": kind})
    return _STUB_CACHE[path]


def _show_path(path):
    return path or "(the model itself)"


def walk_modules(root, max_depth):
    """Every module under root once, parents first, as (path, module) with
    state_dict-style paths ('model.3.conv'). A module tree that loops or nests
    deeper than max_depth is refused: code that walks it would never end."""
    order = [("", root)]
    on_path = {id(root): ""}        # the modules from the root to the current one
    done = set()
    stack = [(root, "", iter(root.children()))]
    while stack:
        mod, path, todo = stack[-1]
        nxt = next(todo, None)
        if nxt is None:
            stack.pop()
            del on_path[id(mod)]
            done.add(id(mod))
            continue
        name, sub = nxt
        if not isinstance(sub, Module) or id(sub) in done:
            continue
        sub_path = "%s.%s" % (path, name) if path else str(name)
        if id(sub) in on_path:
            raise PtLoadError("the module tree loops: '%s' is '%s', one of its own parents"
                              % (sub_path, _show_path(on_path[id(sub)])))
        if len(stack) > max_depth:      # sub is len(stack) levels below the root
            raise over("max_depth", "module nesting at '%s'" % sub_path[:200], len(stack),
                       max_depth)
        on_path[id(sub)] = sub_path
        order.append((sub_path, sub))
        stack.append((sub, sub_path, iter(sub.children())))
    return order


# Module classes a YOLOv7 checkpoint may contain (module path -> class names).
MODULE_CLASSES = {
    "models.yolo": {"Model", "Detect", "IDetect", "IAuxDetect", "IBin", "IKeypoint"},
    "models.common": {"Conv", "Concat", "MP", "SP", "SPPCSPC", "RepConv", "ReOrg", "DownC",
                      "Shortcut", "ImplicitA", "ImplicitM", "SPP", "SPPF", "Focus",
                      "Bottleneck", "Chuncat", "Foldcut", "Merge", "RobustConv",
                      "RobustConv2", "GhostConv", "Stem", "DWConv"},
    "torch.nn.modules.conv": {"Conv2d"},
    "torch.nn.modules.batchnorm": {"BatchNorm2d"},
    "torch.nn.modules.activation": {"SiLU", "LeakyReLU", "ReLU", "Sigmoid", "Hardswish",
                                     "Mish"},
    "torch.nn.modules.linear": {"Identity"},
    "torch.nn.modules.pooling": {"MaxPool2d"},
    "torch.nn.modules.upsampling": {"Upsample"},
    "torch.nn.modules.container": {"Sequential", "ModuleList"},
}


# ---- numpy scalars/arrays (best_fitness) ----------------------------------

class _NdarrayName:
    """Stands for the global numpy.ndarray, which numpy's pickles only pass to
    _reconstruct: the real class would let the pickle allocate any shape."""


def _np_dtype(name, align=False, copy=False):
    if not isinstance(name, str):
        raise PtLoadError("numpy.dtype of a %s, not a type code" % type(name).__name__)
    dt = np.dtype(name, align, copy)
    if dt.hasobject:
        raise PtLoadError("numpy object arrays are refused")
    return dt


def _np_reconstruct(subtype, shape, dtype_code):
    # numpy pickles an array as _reconstruct(ndarray, (0,), b'b') + its state;
    # the state's data comes from the pickle itself, so nothing else is needed.
    if not isinstance(subtype, _NdarrayName):
        raise PtLoadError("numpy.core.multiarray._reconstruct of a non-ndarray")
    if not isinstance(shape, tuple) or shape != (0,):
        raise PtLoadError("numpy.core.multiarray._reconstruct with shape %.40r, not (0,)"
                          % (shape,))
    return np.ndarray.__new__(np.ndarray, (0,), np.dtype(dtype_code))


# ---- checking the pickle before it runs -----------------------------------------

def _effects():
    """opcode -> (what it does to the stack, items it takes below a mark, items it
    pops, items it pushes), from pickletools' description of every opcode."""
    mark = pickletools.markobject
    special = {"PUT": "put", "BINPUT": "put", "LONG_BINPUT": "put", "MEMOIZE": "put",
               "GET": "get", "BINGET": "get", "LONG_BINGET": "get", "FRAME": "frame",
               "POP": "pop", "DUP": "dup", "MARK": "mark", "EMPTY_TUPLE": "tuple",
               "TUPLE1": "tuple", "TUPLE2": "tuple", "TUPLE3": "tuple"}
    table = {}
    for op in pickletools.opcodes:
        before = op.stack_before
        if mark in before:      # pops down to the last MARK, then the items below it
            kind = "marked_tuple" if op.name in ("TUPLE", "FROZENSET") else "marked"
            table[op] = (kind, before.index(mark), 0, len(op.stack_after))
        else:
            table[op] = (special.get(op.name, "plain"), 0, len(before), len(op.stack_after))
    return table


EFFECTS = _effects()


class _Scan:
    """A dry run of the unpickler's stack and memo, opcode by opcode.

    The C unpickler grows its memo array to whatever index a PUT names, pushes
    without bound and hashes nested tuples recursively (a deep enough tuple used
    as a dict key crashes the interpreter). Tracking the stack as the nesting
    depth of each item (0 unless it is a tuple: lists and dicts cannot be
    hashed, and a tuple never changes) bounds all three before anything runs."""

    def __init__(self, data, limits):
        self.data, self.limits = data, limits
        self.stack = []     # per item: how deep tuples nest in it
        self.marks = [0]    # stack heights at each MARK (0: the bottom)
        self.memo = {}      # memo index -> the depth of the item stored there
        self.ops = 0
        self.pos = 0

    def refuse(self, msg):
        return PtLoadError("data.pkl, byte %d: %s" % (self.pos, msg))

    def pop(self, n):
        """The top n items, which must lie above the last MARK."""
        if len(self.stack) - self.marks[-1] < n:
            raise self.refuse("pops more than the stack holds")
        items = self.stack[len(self.stack) - n:]
        del self.stack[len(self.stack) - n:]
        return items

    def push(self, depth):
        if depth > self.limits.max_depth:
            raise over("max_depth", "data.pkl, byte %d: tuples nested" % self.pos, depth,
                       self.limits.max_depth)
        self.stack.append(depth)

    def memo_index(self, op, arg):
        idx = len(self.memo) if op.name == "MEMOIZE" else arg
        if not isinstance(idx, int) or not 0 <= idx < self.limits.max_memo:
            raise over("max_memo", "data.pkl, byte %d: memo index" % self.pos, idx,
                       self.limits.max_memo - 1)
        return idx

    def step(self, op, arg, pos):
        self.pos = pos
        self.ops += 1
        if self.ops > self.limits.max_pickle_ops:
            raise over("max_pickle_ops", "data.pkl: opcodes", self.ops,
                       self.limits.max_pickle_ops)
        kind, below, pops, pushes = EFFECTS[op]
        if kind == "plain":
            self.pop(pops)
            self.stack.extend([0] * pushes)
        elif kind == "put":
            if len(self.stack) <= self.marks[-1]:
                raise self.refuse("%s with nothing on the stack" % op.name)
            self.memo[self.memo_index(op, arg)] = self.stack[-1]
        elif kind == "get":
            if self.memo_index(op, arg) not in self.memo:
                raise self.refuse("%s of memo entry %d, which was never stored"
                                  % (op.name, arg))
            self.push(self.memo[arg])
        elif kind == "tuple":
            self.push(1 + max(self.pop(pops), default=0))
        elif kind == "mark":
            self.marks.append(len(self.stack))
        else:
            self.rare(op, arg, kind, below, pushes)
        if len(self.stack) + len(self.marks) > self.limits.max_stack:
            raise over("max_stack", "data.pkl, byte %d: stack items and marks" % pos,
                       len(self.stack) + len(self.marks), self.limits.max_stack)

    def rare(self, op, arg, kind, below, pushes):
        if kind in ("marked", "marked_tuple"):
            if len(self.marks) == 1:
                raise self.refuse("%s without a MARK" % op.name)
            items = self.stack[self.marks.pop():]
            del self.stack[len(self.stack) - len(items):]
            self.pop(below)                     # the list, dict or set below the mark
            for _ in range(pushes):             # POP_MARK pushes nothing
                self.push(1 + max(items, default=0) if kind == "marked_tuple" else 0)
        elif kind == "dup":
            self.push(self.pop(1)[0])
            self.push(self.stack[-1])
        elif kind == "pop":
            if len(self.marks) > 1 and self.marks[-1] == len(self.stack):
                self.marks.pop()    # the C unpickler's POP right after a MARK drops the MARK
            else:
                self.pop(1)
        elif kind == "frame":
            if arg > len(self.data) - self.pos:
                raise self.refuse("a frame of %d bytes, only %d remain"
                                  % (arg, len(self.data) - self.pos))
        else:
            raise AssertionError("opcode %s: no rule" % op.name)


OPCODES = {op.code.encode("latin-1")[0]: op for op in pickletools.opcodes}
# argument kinds that start with their length: (bytes of the length, signed)
COUNTED = {pickletools.TAKEN_FROM_ARGUMENT1: (1, False),
           pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
           pickletools.TAKEN_FROM_ARGUMENT4U: (4, False),
           pickletools.TAKEN_FROM_ARGUMENT8U: (8, False)}
INDEXED = {"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET", "FRAME"}


def _arg_end(data, op, start):
    """Where op's argument ends: checked against the end of the data, so that no
    length it declares is trusted before the bytes are known to be there."""
    n = op.arg.n
    if n >= 0:
        end = start + n
    elif n == pickletools.UP_TO_NEWLINE:
        end = start
        for _ in range(2 if op.arg.name == "stringnl_noescape_pair" else 1):
            end = data.find(b"\n", end) + 1
            if end == 0:
                raise PtLoadError("no end of line after %s" % op.name)
    else:
        width, signed = COUNTED[n]
        length = int.from_bytes(data[start:start + width], "little", signed=signed)
        if length < 0:
            raise PtLoadError("%s of length %d" % (op.name, length))
        end = start + width + length
    if end > len(data):
        raise PtLoadError("%s needs %d bytes, only %d remain"
                          % (op.name, end - start, len(data) - start))
    return end


def _opcodes(data):
    """(opcode, its integer argument if a memo index or frame size, position) up to
    STOP, without decoding the rest."""
    pos = 0
    while pos < len(data):
        op = OPCODES.get(data[pos])
        try:
            if op is None:
                raise PtLoadError("unknown opcode 0x%02x" % data[pos])
            end = pos + 1 if op.arg is None else _arg_end(data, op, pos + 1)
            value = None
            if op.name in INDEXED:
                raw = data[pos + 1:end]
                text = op.arg.n == pickletools.UP_TO_NEWLINE
                value = int(raw) if text else int.from_bytes(raw, "little")
        except (PtLoadError, ValueError) as e:
            raise PtLoadError("data.pkl, byte %d: %s" % (pos, e)) from None
        yield op, value, pos
        if op.name == "STOP":
            return
        pos = end
    raise PtLoadError("data.pkl ends without STOP (truncated)")


def scan_pickle(data, limits):
    """Checks data.pkl before the C unpickler runs it: opcodes known and complete
    (every length within what remains: nothing is allocated for bytes that are
    not there), memo, stack, tuple depth and opcode count within the limits.
    Returns the number of opcodes."""
    scan = _Scan(data, limits)
    for op, arg, pos in _opcodes(data):
        scan.step(op, arg, pos)
    return scan.ops


# ---- the restricted unpickler -------------------------------------------------

class _Unpickler(pickle.Unpickler):
    """Builds the checkpoint from a scanned pickle. The few callables it hands
    out are wrapped so that nothing they build can outgrow the pickle itself:
    tensors count against max_tensors and max_bytes, copies of containers
    against the opcode count, encoded bytes against the pickle's length."""

    def __init__(self, data, storages, limits, ops):
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self._storages = storages
        self._limits = limits
        self._tensors = 0
        self._tensor_bytes = 0
        self._copies_left = ops             # a pickle copies each container once
        self._encode_left = len(data)       # encoded text comes from the pickle

    def _rebuild_tensor_v2(self, storage, offset, size, stride, requires_grad=False,
                           hooks=None, metadata=None):
        if not isinstance(storage, StorageRef):
            raise PtLoadError("_rebuild_tensor_v2 called without a storage")
        lim = self._limits
        self._tensors += 1
        if self._tensors > lim.max_tensors:
            raise over("max_tensors", "tensors", self._tensors, lim.max_tensors)
        offset, size, stride, numel, last = _view(offset, size, stride)
        # Checked before the storage is read and before the copy is made (a
        # stride of 0 lets a small storage claim any number of elements).
        self._tensor_bytes += numel * storage.stype.out_itemsize
        if self._tensor_bytes > lim.max_bytes:
            raise over("max_bytes", "bytes of tensors", self._tensor_bytes, lim.max_bytes)
        if numel and last >= storage.numel:
            raise PtLoadError("tensor (offset %d, size %s, stride %s) runs past its storage "
                              "of %d elements" % (offset, size, stride, storage.numel))
        arr = self._storages.array(storage)
        return _as_tensor(arr, offset, size, stride, numel, last)

    @staticmethod
    def _rebuild_parameter(tensor, requires_grad=False, hooks=None):
        if not isinstance(tensor, np.ndarray):
            raise PtLoadError("_rebuild_parameter called without a tensor")
        return tensor

    def _copying(self, cls):
        """cls(items), as a pickle calls set or OrderedDict, with the copy charged."""
        def build(items=()):
            self._copies_left -= len(items)
            if self._copies_left < 0:
                raise PtLoadError("data.pkl copies more elements into %s than it has "
                                  "opcodes (a container rebuilt over and over)" % cls.__name__)
            return cls(items)
        return build

    def _codecs_encode(self, text, encoding="utf-8"):
        if not isinstance(encoding, str) or encoding not in ("latin1", "latin-1", "utf-8",
                                                             "utf8"):
            raise PtLoadError("_codecs.encode with encoding %r is refused" % encoding)
        if not isinstance(text, str):
            raise PtLoadError("_codecs.encode of a %s" % type(text).__name__)
        self._encode_left -= len(text)
        if self._encode_left < 0:
            raise PtLoadError("data.pkl encodes more text than it holds (a string "
                              "encoded over and over)")
        return text.encode(encoding)

    def find_class(self, module, name):
        if module in ("torch._utils",) and name == "_rebuild_tensor_v2":
            return self._rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_parameter":
            return self._rebuild_parameter
        if module == "torch" and name in STORAGE_DTYPES:
            return StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return self._copying(collections.OrderedDict)
        if module in ("__builtin__", "builtins") and name == "set":
            return self._copying(set)
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") \
                and name == "_reconstruct":
            return _np_reconstruct
        if module == "numpy" and name == "ndarray":
            return _NdarrayName()
        if module == "numpy" and name == "dtype":
            return _np_dtype
        if module == "_codecs" and name == "encode":
            return self._codecs_encode
        if name in MODULE_CLASSES.get(module, ()):
            return _stub_class(module + "." + name)
        raise PtLoadError("refusing the global '%s.%s' in the checkpoint's pickle "
                          "(not a known YOLOv7/torch class; the file may run code)"
                          % (module, name))

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and isinstance(pid[0], str)
                and pid[0] == "storage"):
            raise PtLoadError("unexpected persistent id %.200r" % (pid,))
        _, stype, key, _location, numel = pid
        if not isinstance(stype, StorageType):
            raise PtLoadError("persistent id names %.200r, not a torch storage type" % (stype,))
        if not isinstance(numel, int) or numel < 0:
            raise PtLoadError("storage %.200r has a bad element count %.200r" % (key, numel))
        return StorageRef(stype, str(key), numel)


def load(path, limits=None):
    """Unpickles a .pt file safely within the limits; returns the saved object.
    Every error names the file."""
    try:
        return _load(path, limits or Limits())
    except PtLoadError as e:
        raise PtLoadError("%s: %s" % (path, e)) from None


def _load(path, limits):
    with _open_zip(path, limits) as zf:
        names = zf.namelist()
        pkls = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if not pkls:
            raise PtLoadError("no data.pkl in the zip (not a torch checkpoint)")
        pkls.sort(key=len)
        prefix = pkls[0][: -len("data.pkl")]
        try:
            byteorder = _byteorder(zf, prefix, names)
            info = _entry(zf, pkls[0], "pickle")
            if info.file_size > limits.max_pickle_bytes:
                raise over("max_pickle_bytes", "bytes of data.pkl", info.file_size,
                           limits.max_pickle_bytes)
            data = bytes(_read_entry(zf, info))
            ops = scan_pickle(data, limits)
            storages = _Storages(zf, prefix, byteorder, limits)
            unpickler = _Unpickler(data, storages, limits, ops)
            try:
                return unpickler.load()
            finally:
                # The memo holds the unpickler's own methods, and the cycle
                # collector does not look into the C unpickler's memo: without
                # this, every checkpoint read stays in memory for good.
                unpickler.memo.clear()
        except PtLoadError:
            raise
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError,
                IndexError, KeyError, OverflowError, zipfile.BadZipFile, zlib.error) as e:
            raise PtLoadError("cannot unpickle data.pkl: %s: %.300s"
                              % (type(e).__name__, e)) from None


def _byteorder(zf, prefix, names):
    """'<' or '>' from the optional 'byteorder' entry (a few bytes at most)."""
    name = prefix + "byteorder"
    if name not in names:
        return "<"
    info = _entry(zf, name, "byteorder")
    if info.file_size > 16:
        raise PtLoadError("the byteorder entry declares %d bytes" % info.file_size)
    bo = bytes(_read_entry(zf, info)).strip()
    if bo == b"big":
        return ">"
    if bo != b"little":
        raise PtLoadError("unknown byteorder %r" % bo)
    return "<"


def _present(value):
    """Truthiness, without asking an array (whose truth value raises)."""
    return value.size > 0 if isinstance(value, np.ndarray) else bool(value)


def select_model(obj):
    """The model a loader would use: `ema` if truthy, else `model`, or the
    object itself if the file is a bare pickled model. Returns (model, where)."""
    if isinstance(obj, Module):
        return obj, "bare model"
    if not isinstance(obj, dict):
        raise PtLoadError("checkpoint holds a %s, expected a dict or a model"
                          % type(obj).__name__)
    for key in ("ema", "model"):
        m = obj.get(key)
        if _present(m):
            if not isinstance(m, Module):
                raise PtLoadError("checkpoint['%s'] is a %s, not a model"
                                  % (key, type(m).__name__))
            return m, "checkpoint['%s']" % key
    raise PtLoadError("checkpoint dict has no 'ema' or 'model' (keys: %s)"
                      % ", ".join(sorted(str(k) for k in obj)))
