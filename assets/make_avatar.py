#!/usr/bin/env python3
"""Draws the bot's avatar, a thermometer on a round blue badge, as a 96x96 PNG.

Run once (`python3 make_avatar.py > avatar.png`); the PNG is committed. Only the standard
library: the image is computed pixel by pixel and written with zlib and struct.
"""
import math
import struct
import sys
import zlib

SIZE = 96


def pixel(x, y):
    cx = cy = SIZE / 2
    px, py = x + 0.5, y + 0.5
    # Background badge: a blue disc with a soft edge; transparent outside.
    d = math.hypot(px - cx, py - cy)
    alpha = max(0.0, min(1.0, (SIZE / 2 - d)))
    colour = (38, 110, 180)
    # Thermometer: a tube from y=16 to y=62 (half width 7), a bulb at y=68 (radius 13).
    tube_x = cx
    bulb_y, bulb_r = 68, 13
    in_tube = abs(px - tube_x) <= 7 and 16 <= py <= bulb_y
    in_cap = math.hypot(px - tube_x, py - 16) <= 7
    in_bulb = math.hypot(px - tube_x, py - bulb_y) <= bulb_r
    if in_tube or in_cap or in_bulb:
        colour = (245, 245, 245)
        # The mercury: a red column in the lower part and the bulb.
        in_column = abs(px - tube_x) <= 3.5 and 34 <= py <= bulb_y
        in_red_bulb = math.hypot(px - tube_x, py - bulb_y) <= bulb_r - 4
        if in_column or in_red_bulb:
            colour = (214, 40, 40)
    # Scale marks on the right of the tube.
    if tube_x + 10 <= px <= tube_x + 17 and int(py) in (22, 30, 38, 46, 54) and alpha > 0:
        colour = (245, 245, 245)
    return colour + (round(alpha * 255),)


def chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def main():
    raw = b"".join(
        b"\x00" + b"".join(bytes(pixel(x, y)) for x in range(SIZE)) for y in range(SIZE)
    )
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", SIZE, SIZE, 8, 6, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )
    sys.stdout.buffer.write(png)


if __name__ == "__main__":
    main()
