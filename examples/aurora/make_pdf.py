#!/usr/bin/env python3
"""Generate handbook/07-maintenance.pdf for the Aurora H7 example domain.

Writes a minimal, valid PDF 1.4 by hand (no third-party libraries):
Helvetica / Helvetica-Bold Type1 fonts, one content stream per page,
text drawn line by line with BT/ET and Tj, correct xref byte offsets.

Usage: python3 examples/aurora/make_pdf.py
"""
import os
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "handbook", "07-maintenance.pdf")

# ("h1" | "h2" | "p", text). ASCII only (Helvetica StandardEncoding).
CONTENT = [
    ("h1", "Aurora H7 Maintenance Guide"),
    ("p", "Regular maintenance keeps the Aurora H7 hub and the SkyPod S3 outdoor sensor "
          "accurate for many years. This guide lists the cleaning intervals, the filter "
          "replacement schedule and the battery care rules recommended by Lumenfield Instruments. "
          "Always unplug the hub before cleaning it."),
    ("h2", "Cleaning the hub"),
    ("p", "Clean the air intake grille on the top of the hub every 4 weeks with a soft, dry brush. "
          "Dust on the grille slows the airflow to the particle sensor and the CO2 sensor. Never "
          "use compressed air, water or cleaning sprays on the hub, because liquid can damage "
          "the sensors. Wipe the e-ink display with a dry microfibre cloth only."),
    ("h2", "Replacing the dust pre-filter"),
    ("p", "The laser particle sensor is protected by a PF-3 dust pre-filter behind the bottom cover. "
          "Replace the pre-filter every 12 months, or every 6 months in homes with pets, smokers "
          "or building work. Open the bottom cover by turning the locking tab a quarter turn "
          "anticlockwise, pull the old filter out by its blue tab and push the new filter in until "
          "it clicks. A pack of PF-3 filters contains three filters. After the replacement, reset "
          "the filter reminder in the app under Settings > Maintenance > Filter."),
    ("h2", "Cleaning the SkyPod S3"),
    ("p", "Wash the white radiation shield of the SkyPod every 3 months with lukewarm water and a "
          "drop of mild soap. Do not use solvents, because they make the plastic yellow and cause "
          "high temperature readings in sunshine. Inspect the anemometer cups and bearings every "
          "6 months; they should spin freely when you blow on them. Remove spider webs from the "
          "shield louvres, because they trap moisture."),
    ("p", "If you use the RainCup R2 rain gauge, clean its funnel and the debris mesh every 2 months, "
          "and more often in autumn when leaves fall. Check with a spirit level that the gauge is "
          "still horizontal after storms."),
    ("h2", "SkyPod batteries"),
    ("p", "The SkyPod S3 needs two AA lithium batteries. A fresh pair lasts about 18 months at the "
          "default sampling interval. Do not use alkaline batteries: they lose most of their "
          "capacity below -10 degrees Celsius and may leak, and leak damage is not covered by the "
          "warranty. Rechargeable NiMH cells are not recommended, because their lower voltage "
          "triggers the low battery warning early. Always replace both batteries at the same time."),
    ("p", "When the battery voltage falls below 2.4 V, the hub shows error E02 and the battery "
          "icon on the outdoor half of the display starts flashing."),
    ("h2", "The hub backup battery"),
    ("p", "The 2000 mAh backup battery inside the hub is a wear part. Replace it every 4 years with "
          "the original BB-2000 battery. The app warns you when the battery can no longer power "
          "the hub for at least 12 hours. Only use the original BB-2000 battery; other batteries "
          "cause error E13."),
    ("h2", "Storage and winter care"),
    ("p", "If you store the hub or the SkyPod for a long period, keep them in a dry place between "
          "-20 and 45 degrees Celsius and remove the SkyPod batteries. Before storage, charge the hub "
          "backup battery to about half capacity by running the hub on the adapter for 2 hours. "
          "In winter, check the SkyPod after heavy snowfall: snow on the shield blocks the "
          "ventilation louvres and must be brushed off by hand."),
    ("h2", "Maintenance schedule at a glance"),
    ("p", "Intake grille: every 4 weeks. Radiation shield: every 3 months. Rain gauge funnel: "
          "every 2 months. Anemometer check: every 6 months. CO2 calibration: every 6 months. "
          "PF-3 pre-filter: every 12 months. SkyPod batteries: about every 18 months. "
          "BB-2000 backup battery: every 4 years."),
]

PAGE_W, PAGE_H = 612, 792  # US Letter
MARGIN_X, TOP, BOTTOM = 72, 720, 72
STYLES = {"h1": ("F2", 18, 28), "h2": ("F2", 13, 20), "p": ("F1", 11, 15)}
WRAP = 86  # characters per body line (Helvetica 11 pt, 468 pt text width)


def esc(s):
    return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def layout():
    """Return a list of pages; each page is a list of (font, size, x, y, text)."""
    pages, cur, y = [], [], TOP
    for kind, text in CONTENT:
        font, size, lead = STYLES[kind]
        lines = [text] if kind != "p" else textwrap.wrap(text, WRAP, break_on_hyphens=False)
        if kind != "p":
            y -= 6  # extra space above headings
        needed = lead * (len(lines) + (1 if kind == "h2" else 0))
        if y - needed < BOTTOM and cur:
            pages.append(cur)
            cur, y = [], TOP
        for line in lines:
            cur.append((font, size, MARGIN_X, y, line))
            y -= lead
        if kind == "p":
            y -= 6  # paragraph spacing
    if cur:
        pages.append(cur)
    return pages


def build():
    pages = layout()
    objs = {}  # number -> bytes
    # 1 catalog, 2 pages, 3 F1, 4 F2, then page/content pairs
    objs[3] = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
    objs[4] = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>"
    kids = []
    n = 5
    for i, page in enumerate(pages):
        ops = []
        for font, size, x, y, text in page:
            ops.append("BT /%s %d Tf %d %d Td (%s) Tj ET" % (font, size, x, y, esc(text)))
        footer = "Aurora H7 Maintenance Guide - page %d of %d" % (i + 1, len(pages))
        ops.append("BT /F1 9 Tf %d %d Td (%s) Tj ET" % (MARGIN_X, 40, esc(footer)))
        stream = ("\n".join(ops) + "\n").encode("latin-1")
        page_no, content_no = n, n + 1
        n += 2
        objs[content_no] = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"endstream"
        objs[page_no] = (
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] "
            "/Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> /Contents %d 0 R >>"
            % (PAGE_W, PAGE_H, content_no)
        ).encode()
        kids.append(page_no)
    objs[2] = ("<< /Type /Pages /Kids [%s] /Count %d >>"
               % (" ".join("%d 0 R" % k for k in kids), len(kids))).encode()
    objs[1] = b"<< /Type /Catalog /Pages 2 0 R >>"

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for num in sorted(objs):
        offsets[num] = len(out)
        out += b"%d 0 obj\n" % num + objs[num] + b"\nendobj\n"
    xref_pos = len(out)
    size = max(objs) + 1
    out += b"xref\n0 %d\n" % size
    out += b"0000000000 65535 f \n"
    for num in range(1, size):
        out += b"%010d 00000 n \n" % offsets[num]
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref_pos)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "wb") as f:
        f.write(out)
    print("wrote %s (%d pages, %d bytes)" % (OUT, len(pages), len(out)))


if __name__ == "__main__":
    build()
