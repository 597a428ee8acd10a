#!/usr/bin/env python3
"""Generates the image-decoding and letterbox test data of test/test_image.c.

Writes small PNG/JPEG files covering the cases where OpenCV's imread has
particular semantics (gray, alpha, palette + tRNS, 16-bit, 1/2/4-bit, Adam7,
progressive, CMYK, EXIF orientation, truncation, ...) and, as the independent
reference, what OpenCV 4.6 (Debian python3-opencv) makes of each one:
cv2.imread(IMREAD_COLOR) converted BGR->RGB, saved as uint8 [H,W,3] .npy.

It also writes letterbox expectations computed with cv2.resize(INTER_LINEAR)
and cv2.copyMakeBorder, following the official detect.py letterbox, for
sources made from an integer hash that test_image.c recomputes.

Usage (from the repository root; needs python3-opencv, python3-pil, numpy):
    /usr/bin/python3 tools/make_test_images.py [--out test/data]
"""
import argparse
import io
import math
import os
import struct
import zlib

import cv2
import numpy as np
from PIL import Image

# ---------------------------------------------------------------------------
# A small PNG writer, so that bit depths, interlacing and chunk order that PIL
# cannot produce are exactly what we ask for.

ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4),
         (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def chunk(kind, data, bad_crc=False):
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    if bad_crc:
        crc ^= 0x5A5A5A5A
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def pack_rows(px, depth):
    """px: [h, w, c] integer array -> list of serialized rows (no filter byte)."""
    h, w, c = px.shape
    rows = []
    for y in range(h):
        row = px[y].reshape(-1)
        if depth == 16:
            rows.append(row.astype(">u2").tobytes())
        elif depth == 8:
            rows.append(row.astype(np.uint8).tobytes())
        else:
            per = 8 // depth
            n = (row.size + per - 1) // per
            out = bytearray(n)
            for i, v in enumerate(row.tolist()):
                out[i // per] |= (int(v) << (8 - depth * (i % per + 1))) & 0xFF
            rows.append(bytes(out))
    return rows


def png_bytes(px, depth, ctype, interlace=False, plte=None, trns=None,
              extra_before_idat=(), bad_idat_crc=False):
    px = np.asarray(px)
    if px.ndim == 2:
        px = px[:, :, None]
    h, w, _ = px.shape
    raw = bytearray()
    if not interlace:
        for r in pack_rows(px, depth):
            raw.append(0)
            raw += r
    else:
        for (x0, y0, dx, dy) in ADAM7:
            sub = px[y0::dy, x0::dx]
            if sub.shape[0] == 0 or sub.shape[1] == 0:
                continue
            for r in pack_rows(sub, depth):
                raw.append(0)
                raw += r
    out = b"\x89PNG\r\n\x1a\n"
    out += chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 1 if interlace else 0))
    for c in extra_before_idat:
        out += c
    if plte is not None:
        out += chunk(b"PLTE", bytes(np.asarray(plte, np.uint8).reshape(-1)))
    if trns is not None:
        out += chunk(b"tRNS", trns)
    out += chunk(b"IDAT", zlib.compress(bytes(raw), 9), bad_crc=bad_idat_crc)
    out += chunk(b"IEND", b"")
    return out


# ---------------------------------------------------------------------------
# EXIF


def tiff_orientation(orientation, big_endian=True):
    """A minimal TIFF header + IFD0 holding only the Orientation tag."""
    e = ">" if big_endian else "<"
    head = (b"MM" if big_endian else b"II") + struct.pack(e + "HI", 42, 8)
    ifd = struct.pack(e + "H", 2)
    # An unrelated tag first (ImageDescription offset 0, count 0) so the
    # parser has to walk the entries.
    ifd += struct.pack(e + "HHI", 0x010E, 2, 0) + b"\0\0\0\0"
    ifd += struct.pack(e + "HHIH", 0x0112, 3, 1, orientation) + b"\0\0"
    ifd += struct.pack(e + "I", 0)
    return head + ifd


def jpeg_with_app1(jpeg, payload):
    """Inserts an APP1 segment after SOI (and after a JFIF APP0 if present)."""
    assert jpeg[:2] == b"\xff\xd8"
    pos = 2
    if jpeg[2:4] == b"\xff\xe0":
        pos = 4 + struct.unpack(">H", jpeg[4:6])[0]
    seg = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:pos] + seg + jpeg[pos:]


def strip_segment(jpeg, marker):
    """Removes every segment with the given marker byte (e.g. 0xEE: Adobe)."""
    out = bytearray(jpeg[:2])
    pos = 2
    while pos < len(jpeg):
        assert jpeg[pos] == 0xFF
        m = jpeg[pos + 1]
        if m == 0xDA:  # start of scan: the rest is entropy data
            out += jpeg[pos:]
            break
        n = struct.unpack(">H", jpeg[pos + 2:pos + 4])[0]
        if m != marker:
            out += jpeg[pos:pos + 2 + n]
        pos += 2 + n
    return bytes(out)


def patch_sof_size(jpeg, w, h):
    """Rewrites the frame header's dimensions (to fake a huge image)."""
    b = bytearray(jpeg)
    pos = 2
    while pos < len(b):
        m = b[pos + 1]
        n = struct.unpack(">H", b[pos + 2:pos + 4])[0]
        if m in (0xC0, 0xC1, 0xC2):
            b[pos + 5:pos + 9] = struct.pack(">HH", h, w)
            return bytes(b)
        pos += 2 + n
    raise ValueError("no SOF")


# ---------------------------------------------------------------------------
# Test pictures


def noise(h, w, c, seed):
    rng = np.random.default_rng(seed)
    # Smooth gradient plus noise: compressible enough, still exercises every
    # code path (JPEG chroma upsampling likes some structure).
    yy, xx = np.mgrid[0:h, 0:w]
    base = (xx * 255 // max(w - 1, 1) + yy * 128 // max(h - 1, 1))[:, :, None]
    base = base + np.arange(c)[None, None, :] * 60
    return ((base + rng.integers(0, 64, (h, w, c))) % 256).astype(np.uint8)


def pil_jpeg(arr, mode, **kw):
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, "JPEG", **kw)
    return buf.getvalue()


def make_images():
    """Returns [(filename, bytes, expectation)] where expectation is 'decode'
    (compare with OpenCV) or ('refuse', status, substring)."""
    items = []

    def add(name, data, expect="decode"):
        items.append((name, data, expect))

    rgb = noise(23, 37, 3, 1)
    add("rgb.png", png_bytes(rgb, 8, 2))
    add("rgba.png", png_bytes(noise(23, 37, 4, 2), 8, 6))
    add("gray.png", png_bytes(noise(19, 29, 1, 3), 8, 0))
    add("gray_alpha.png", png_bytes(noise(19, 29, 2, 4), 8, 4))
    pal = noise(16, 1, 3, 5).reshape(16, 3)
    idx = np.random.default_rng(6).integers(0, 16, (21, 33)).astype(np.uint8)
    add("palette.png", png_bytes(idx, 8, 3, plte=pal))
    add("palette_trns.png", png_bytes(idx, 8, 3, plte=pal, trns=bytes([0, 128, 255, 7])))
    idx4 = np.random.default_rng(7).integers(0, 16, (21, 33)).astype(np.uint8)
    add("palette_4bit_interlaced.png", png_bytes(idx4, 4, 3, interlace=True, plte=pal,
                                                  trns=bytes([10])))
    add("gray_trns.png", png_bytes(noise(19, 29, 1, 8), 8, 0, trns=struct.pack(">H", 100)))
    add("rgb_trns.png", png_bytes(rgb, 8, 2, trns=struct.pack(">HHH", 10, 20, 30)))
    r16 = np.random.default_rng(9).integers(0, 65536, (17, 27, 3)).astype(np.uint16)
    r16[0, 0] = [511, 0x80FF, 0xFFFF]
    add("rgb16.png", png_bytes(r16, 16, 2))
    g16 = np.random.default_rng(10).integers(0, 65536, (17, 27)).astype(np.uint16)
    g16[0, :3] = [511, 0x80FF, 0xFF00]
    add("gray16.png", png_bytes(g16, 16, 0))
    add("rgba16_interlaced.png",
        png_bytes(np.random.default_rng(11).integers(0, 65536, (13, 19, 4)).astype(np.uint16),
                  16, 6, interlace=True))
    for depth in (1, 2, 4):
        g = np.random.default_rng(20 + depth).integers(0, 1 << depth, (15, 31))
        add(f"gray{depth}.png", png_bytes(g, depth, 0))
    add("gray2_interlaced.png",
        png_bytes(np.random.default_rng(30).integers(0, 4, (15, 31)), 2, 0, interlace=True))
    add("interlaced.png", png_bytes(noise(29, 35, 3, 12), 8, 2, interlace=True))
    add("interlaced_tiny.png", png_bytes(noise(3, 2, 3, 13), 8, 2, interlace=True))

    # PNG with an eXIf chunk (before IDAT), orientation 6 on a wide image.
    wide = noise(20, 40, 3, 14)
    add("exif6.png", png_bytes(wide, 8, 2, extra_before_idat=[chunk(b"eXIf", tiff_orientation(6))]))
    # A bad CRC in an ancillary chunk only warns.
    add("bad_text_crc.png", png_bytes(rgb, 8, 2,
                                      extra_before_idat=[chunk(b"tEXt", b"k\0v", bad_crc=True)]))

    # JPEG
    jrgb = noise(24, 40, 3, 15)
    base = pil_jpeg(jrgb, "RGB", quality=90)
    add("baseline.jpg", base)
    add("baseline_444.jpg", pil_jpeg(jrgb, "RGB", quality=75, subsampling=0))
    add("progressive.jpg", pil_jpeg(noise(33, 47, 3, 16), "RGB", quality=85, progressive=True))
    add("gray.jpg", pil_jpeg(noise(21, 35, 1, 17)[:, :, 0], "L", quality=90))
    cmyk = noise(22, 30, 4, 18)
    cmyk_jpeg = pil_jpeg(cmyk, "CMYK", quality=90)
    add("cmyk.jpg", cmyk_jpeg)
    add("cmyk_noadobe.jpg", strip_segment(cmyk_jpeg, 0xEE))
    ok, rst = cv2.imencode(".jpg", cv2.cvtColor(noise(40, 56, 3, 19), cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 80, cv2.IMWRITE_JPEG_RST_INTERVAL, 2])
    assert ok
    add("restart.jpg", rst.tobytes())
    for o in range(1, 9):
        add(f"exif{o}.jpg", jpeg_with_app1(base, b"Exif\0\0" + tiff_orientation(o, big_endian=o % 2 == 0)))

    # Format from content, not name.
    add("png_named.jpg", png_bytes(rgb, 8, 2))

    # Refusals.
    add("truncated.jpg", base[: len(base) * 6 // 10], ("refuse", "YOLO_ERR_IMAGE", "truncated"))
    prog = pil_jpeg(noise(33, 47, 3, 16), "RGB", quality=85, progressive=True)
    add("truncated_progressive.jpg", prog[: len(prog) // 2], ("refuse", "YOLO_ERR_IMAGE", "truncated"))
    add("no_eoi.jpg", base[:-2], ("refuse", "YOLO_ERR_IMAGE", "truncated"))
    big_png = png_bytes(noise(40, 40, 3, 20), 8, 2)
    add("truncated.png", big_png[: len(big_png) * 6 // 10], ("refuse", "YOLO_ERR_IMAGE", "truncated.png"))
    add("no_iend.png", big_png[:-12], ("refuse", "YOLO_ERR_IMAGE", "no_iend.png"))
    add("bad_idat_crc.png", png_bytes(rgb, 8, 2, bad_idat_crc=True), ("refuse", "YOLO_ERR_IMAGE", "CRC"))
    add("empty.png", b"", ("refuse", "YOLO_ERR_IMAGE", "empty"))
    add("garbage.bin", bytes(np.random.default_rng(21).integers(0, 256, 200, dtype=np.uint8)),
        ("refuse", "YOLO_ERR_IMAGE", "not a PNG or JPEG"))
    # Header says 70000 x 4 / 20000 x 20000: refused before any big allocation.
    wide_hdr = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 70000, 4, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")
    add("huge_width.png", wide_hdr, ("refuse", "YOLO_ERR_IMAGE", "too large"))
    huge_hdr = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")
    add("huge_area.png", huge_hdr, ("refuse", "YOLO_ERR_IMAGE", "too large"))
    add("huge.jpg", patch_sof_size(base, 60000, 60000), ("refuse", "YOLO_ERR_IMAGE", "too large"))
    return items


# ---------------------------------------------------------------------------
# Letterbox reference (the official detect.py algorithm, written from the
# facts, with cv2 doing the resize and the border).


def hash_image(w, h):
    """Pseudo-random RGB source; test_image.c computes the same formula."""
    y, x, c = np.meshgrid(np.arange(h, dtype=np.uint64), np.arange(w, dtype=np.uint64),
                          np.arange(3, dtype=np.uint64), indexing="ij")
    v = (x * np.uint64(2654435761) + y * np.uint64(40503) + c * np.uint64(2246822519)) & np.uint64(0xFFFFFFFF)
    v = (v ^ (v >> np.uint64(15))) * np.uint64(2246822519) & np.uint64(0xFFFFFFFF)
    return ((v >> np.uint64(13)) & np.uint64(255)).astype(np.uint8)


def letterbox_ref(img, img_size, stride, auto, scale_up, canvas_w, canvas_h):
    s = int(math.ceil(img_size / stride) * stride)
    h, w = img.shape[:2]
    new_shape = (s, s) if auto else (canvas_h or s, canvas_w or s)
    r = min(new_shape[0] / h, new_shape[1] / w)
    if not scale_up:
        r = min(r, 1.0)
    new_w, new_h = int(round(w * r)), int(round(h * r))
    dw, dh = new_shape[1] - new_w, new_shape[0] - new_h
    if auto:
        dw, dh = np.mod(dw, stride), np.mod(dh, stride)
    dw /= 2
    dh /= 2
    if (w, h) != (new_w, new_h):
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    out = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    return out, dict(new_w=new_w, new_h=new_h, left=left, top=top, r=r)


# name, src w, src h, img_size, stride, auto, scale_up, canvas w, canvas h
LETTERBOX_CASES = [
    ("w451x300_640", 451, 300, 640, 32, 1, 1, 0, 0),
    ("w300x451_320", 300, 451, 320, 32, 1, 1, 0, 0),
    ("w1920x1080_320", 1920, 1080, 320, 32, 1, 1, 0, 0),
    ("w13x7_64_up", 13, 7, 64, 32, 1, 1, 0, 0),
    ("w1280x5_640", 1280, 5, 640, 32, 1, 1, 0, 0),
    ("w2000x3_640", 2000, 3, 640, 32, 1, 1, 0, 0),
    ("w448x336_224_halving", 448, 336, 224, 32, 1, 1, 0, 0),
    ("w224x168_224_noresize", 224, 168, 224, 32, 1, 1, 0, 0),
    ("w451x300_224_square", 451, 300, 224, 32, 0, 1, 0, 0),
    ("w451x300_canvas256x192", 451, 300, 224, 32, 0, 1, 256, 192),
    ("w100x50_160_noscaleup", 100, 50, 160, 32, 0, 0, 0, 0),
    ("w451x300_100_stride64", 451, 300, 100, 64, 1, 1, 0, 0),
    ("w997x13_64", 997, 13, 64, 32, 1, 1, 0, 0),
    ("w641x481_160", 641, 481, 160, 32, 1, 1, 0, 0),
    ("w80x60_160_up2", 80, 60, 160, 32, 1, 1, 0, 0),
    ("w37x200_96", 37, 200, 96, 32, 1, 1, 0, 0),
    ("w5x3_96_up", 5, 3, 96, 32, 1, 1, 0, 0),
    ("w1x1_32_up", 1, 1, 32, 32, 1, 1, 0, 0),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="test/data")
    args = ap.parse_args()

    img_dir = os.path.join(args.out, "images")
    dec_dir = os.path.join(img_dir, "decoded")
    lb_dir = os.path.join(args.out, "letterbox")
    for d in (img_dir, dec_dir, lb_dir):
        os.makedirs(d, exist_ok=True)

    lines = ["# file expectation [status substring]  (written by tools/make_test_images.py)"]
    for name, data, expect in make_images():
        path = os.path.join(img_dir, name)
        with open(path, "wb") as f:
            f.write(data)
        try:
            cv = cv2.imread(path, cv2.IMREAD_COLOR)
        except cv2.error:  # e.g. its own size limit
            cv = None
        if expect == "decode":
            assert cv is not None, f"OpenCV cannot read {name}"
            np.save(os.path.join(dec_dir, name + ".npy"), np.ascontiguousarray(cv[:, :, ::-1]))
            lines.append(f"{name} decode")
        else:
            _, status, sub = expect
            lines.append(f"{name} refuse {status} {sub}")
            # Our policy differs from OpenCV only for truncated JPEGs (it
            # returns a gray-filled image; libyolo refuses).
            print(f"{name}: OpenCV {'returns ' + str(cv.shape) if cv is not None else 'returns None'}"
                  f", libyolo refuses")
    with open(os.path.join(img_dir, "manifest.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")

    lines = ["# name src_w src_h img_size stride auto scale_up canvas_w canvas_h"
             " out_w out_h new_w new_h pad_left pad_top ratio"]
    for (name, w, h, size, stride, auto, up, cw, ch) in LETTERBOX_CASES:
        out, info = letterbox_ref(hash_image(w, h)[:, :, ::-1].copy(), size, stride, auto, up, cw, ch)
        rgb = np.ascontiguousarray(out[:, :, ::-1])
        np.save(os.path.join(lb_dir, name + ".npy"), rgb)
        lines.append(f"{name} {w} {h} {size} {stride} {auto} {up} {cw} {ch} {out.shape[1]} {out.shape[0]} "
                     f"{info['new_w']} {info['new_h']} {info['left']} {info['top']} {info['r']!r}")
    with open(os.path.join(lb_dir, "cases.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
