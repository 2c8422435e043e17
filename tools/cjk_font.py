"""Subset the CJK font the site ships, so a reader without Chinese system fonts sees Chinese.

    python tools/cjk_font.py              # book/_static/fonts/book-cjk.woff2 + book/_static/cjk-font.css
    python tools/cjk_font.py --list       # print the characters it would keep, write nothing

`make book` runs it before jupyter-book builds (only when its inputs changed). It needs no
network: the glyphs come from Noto Sans CJK SC, which the `mplfonts` package ships (a
dependency of the book), and fontTools (+ brotli for WOFF2) subsets them.

The subset holds exactly the characters the site can show:
- every CJK character, CJK/full-width punctuation and the few symbols the demos print
  (the Unicode blocks in SOURCE_BLOCKS) found in the book's sources: the notebooks' cells
  *and* outputs (nbs/*.ipynb), book/*.md, book/*.bib, _toc.yml and the site's own JavaScript;
- every non-ASCII character of every token of the vocabularies of the models the site runs
  (book/_static/models/*.js), since the live demos can print any of them.
Characters the font lacks (an emoji, say) are listed and left to the reader's system fonts.

cjk-font.css declares the subset as the family "Book CJK" with a unicode-range, and appends
it as the *last* fallback of the theme's font stacks (pydata-sphinx-theme's CSS variables):
Latin text keeps the theme's fonts, and glyphs those fonts lack come from the subset. The
font's url() is relative to the CSS file, so it also loads when the site is opened from disk.

Both files are build outputs (git-ignored), written atomically; the same inputs give
byte-identical files.
"""

from __future__ import annotations

import argparse
import html
import io
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a source checkout

from course_utils.files import atomic_path  # noqa: E402  (stdlib only: no torch imported)

FONT_OUT = ROOT / "book" / "_static" / "fonts" / "book-cjk.woff2"
CSS_OUT = ROOT / "book" / "_static" / "cjk-font.css"
FAMILY = "Book CJK"
# The face to subset, first one found wins, from the `mplfonts` package's fonts/ folder.
SOURCE_FONTS = ("NotoSansCJKsc-Regular.otf", "NotoSansSC-Regular.otf", "NotoSansSC-Regular.ttf")

# Unicode blocks whose characters, found in the book's text, the subset keeps.
CJK_BLOCKS = [
    (0x2E80, 0x2EFF),    # CJK radicals supplement
    (0x2F00, 0x2FDF),    # Kangxi radicals
    (0x3000, 0x303F),    # CJK symbols and punctuation: 。、《》「」
    (0x3040, 0x30FF),    # hiragana, katakana
    (0x3100, 0x312F),    # bopomofo
    (0x3190, 0x31FF),    # kanbun, bopomofo extended, CJK strokes, katakana extension
    (0x3200, 0x33FF),    # enclosed CJK letters, CJK compatibility
    (0x3400, 0x4DBF),    # CJK unified ideographs extension A
    (0x4E00, 0x9FFF),    # CJK unified ideographs
    (0xF900, 0xFAFF),    # CJK compatibility ideographs
    (0xFE10, 0xFE1F),    # vertical forms
    (0xFE30, 0xFE4F),    # CJK compatibility forms
    (0xFF00, 0xFFEF),    # half-width and full-width forms: ，！？（）ＡＢＣ
    (0x20000, 0x3FFFF),  # CJK unified ideographs extensions B and later
]
# Symbols the text and the demos use (␣ ↵ ⇥ □ ✓ ✗ … ① ℃ ▲): kept when the font has them.
SYMBOL_BLOCKS = [
    (0x2010, 0x205E),  # general punctuation: — “ ” … ‰
    (0x2100, 0x218F),  # letterlike symbols, number forms: ℃ Ⅱ
    (0x2190, 0x21FF),  # arrows
    (0x2400, 0x243F),  # control pictures: ␣
    (0x2460, 0x24FF),  # enclosed alphanumerics: ① ⑵
    (0x2500, 0x25FF),  # box drawing, block elements, geometric shapes: □ ▲ ○
    (0x2600, 0x27BF),  # miscellaneous symbols, dingbats: ✓ ✗
]
SOURCE_BLOCKS = CJK_BLOCKS + SYMBOL_BLOCKS

# OpenType features the site never needs: language variants for Japanese/Korean/traditional
# Chinese (the pages are not tagged with those languages) and vertical writing.
DROP_FEATURES = {"locl", "vert", "vrt2", "vkrn", "valt", "vpal", "vhal", "vkna"}
DROP_TABLES = ["VORG", "vhea", "vmtx"]
# name table entries kept: family, style, version, ... plus the licence (13) and its URL (14).
NAME_IDS = [0, 1, 2, 3, 4, 5, 6, 13, 14]

MODEL_HEADER = re.compile(r'\(window\.GPT_MODELS = window\.GPT_MODELS \|\| \{\}\)\["([^"]+)"\] = ')
IMAGE_KEYS = ("image/", "application/pdf")


class FontError(RuntimeError):
    pass


def in_blocks(cp: int, blocks: Iterable[tuple[int, int]]) -> bool:
    return any(lo <= cp <= hi for lo, hi in blocks)


# ---------------------------------------------------------------------------- the inputs


def source_font(explicit: str | None = None) -> Path:
    """The Noto Sans CJK SC file that `mplfonts` installs (or the one named with --font)."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise FontError(f"--font {path}: no such file")
        return path
    try:
        import mplfonts
    except ImportError:
        raise FontError("the Python package `mplfonts` is not installed: it ships the Noto Sans "
                        "CJK font the site's Chinese is drawn with (pip install mplfonts)") from None
    folder = Path(mplfonts.__file__).parent / "fonts"
    for name in SOURCE_FONTS:
        if (folder / name).is_file():
            return folder / name
    raise FontError(f"none of {', '.join(SOURCE_FONTS)} in {folder} (mplfonts {folder.parent})")


def input_files(root: Path = ROOT) -> list[Path]:
    """Every file whose text the site shows, in a fixed order."""
    files = sorted((root / "nbs").glob("*.ipynb"))
    files += sorted((root / "book").glob("*.md")) + sorted((root / "book").glob("*.bib"))
    files += [root / "_toc.yml"] + sorted((root / "book" / "_static").glob("*.js"))
    return [f for f in files if f.is_file()]


def _strings(node, skip_images: bool = True) -> Iterator[str]:
    """Every string inside a notebook output (its mime bundle, stream text, traceback, ...)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item, skip_images)
    elif isinstance(node, dict):
        for key, value in node.items():
            if not (skip_images and key.startswith(IMAGE_KEYS)):
                yield from _strings(value, skip_images)


def file_text(path: Path) -> Iterator[str]:
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".ipynb":
        yield text
        return
    for cell in json.loads(text).get("cells", []):
        source = cell.get("source", "")
        yield "".join(source) if isinstance(source, list) else source
        for output in cell.get("outputs", []):
            for s in _strings(output):
                yield html.unescape(s) if "&" in s else s  # &#x8bcd; in HTML outputs


def model_files(root: Path = ROOT) -> list[Path]:
    return sorted((root / "book" / "_static" / "models").glob("*.js"))


def model_vocab(path: Path) -> list[str]:
    """The vocab list of a model file written by course_utils.export.to_browser (second line:
    `(window.GPT_MODELS = window.GPT_MODELS || {})["NAME"] = {JSON};`), read without torch."""
    lines = path.read_text(encoding="utf-8").splitlines()
    body = lines[1] if len(lines) >= 2 else ""
    match = MODEL_HEADER.match(body)
    if not match or not body.endswith(";"):
        raise FontError(f"{path} is not a model file written by course_utils.export")
    try:
        vocab = json.loads(body[match.end():-1])["vocab"]
    except (json.JSONDecodeError, KeyError) as err:
        raise FontError(f"{path}: no vocab list in the model file ({err})") from None
    return vocab


def wanted_characters(root: Path = ROOT) -> tuple[set[int], dict[str, int]]:
    """(code points to keep, how many came from each kind of input) before checking the font."""
    text_chars: set[int] = set()
    for path in input_files(root):
        for s in file_text(path):
            text_chars.update(ord(c) for c in s if ord(c) > 0x7F)
    from_text = {cp for cp in text_chars if in_blocks(cp, SOURCE_BLOCKS)}
    from_vocab: set[int] = set()
    for path in model_files(root):
        for token in model_vocab(path):
            from_vocab.update(ord(c) for c in token if ord(c) > 0x7F)
    counts = {"text": len(from_text), "vocab": len(from_vocab),
              "vocab only": len(from_vocab - from_text)}
    return from_text | from_vocab, counts


# ---------------------------------------------------------------------------- the outputs


def subset_font(source: Path, codepoints: set[int], hinting: bool = True) -> tuple[bytes, set[int]]:
    """WOFF2 bytes of `source` cut down to `codepoints` (those it has), and the kept ones."""
    from fontTools import subset
    from fontTools.ttLib import TTFont

    try:
        import brotli  # noqa: F401
    except ImportError:
        raise FontError("WOFF2 needs the Python package `brotli` (pip install brotli)") from None
    # recalcTimestamp=False: the head table keeps the source's date, so the output is the same
    # bytes every time.
    font = TTFont(str(source), lazy=True, recalcTimestamp=False)
    keep = set(codepoints) & set(font.getBestCmap())
    options = subset.Options()
    options.flavor = "woff2"
    options.hinting = hinting
    options.desubroutinize = True  # brotli compresses flat charstrings better (~5%)
    options.layout_features = [f for f in options.layout_features if f not in DROP_FEATURES]
    options.drop_tables = list(options.drop_tables) + DROP_TABLES
    options.name_IDs = NAME_IDS
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=sorted(keep))
    subsetter.subset(font)
    out = io.BytesIO()
    font.flavor = "woff2"
    font.save(out, reorderTables=True)
    return out.getvalue(), keep


def ranges(codepoints: Iterable[int]) -> list[tuple[int, int]]:
    """Consecutive runs: [1, 2, 3, 7] -> [(1, 3), (7, 7)]."""
    runs: list[tuple[int, int]] = []
    for cp in sorted(set(codepoints)):
        if runs and cp == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], cp)
        else:
            runs.append((cp, cp))
    return runs


def unicode_range(codepoints: set[int]) -> str:
    """The @font-face unicode-range: each CJK block the subset uses, whole, plus the exact
    other code points (symbols). It only tells the browser when to fetch the font."""
    blocks = [(lo, hi) for lo, hi in CJK_BLOCKS if any(lo <= cp <= hi for cp in codepoints)]
    others = [cp for cp in codepoints if not in_blocks(cp, CJK_BLOCKS)]
    spans = sorted(blocks + ranges(others))
    return ", ".join(f"U+{lo:04X}" if lo == hi else f"U+{lo:04X}-{hi:04X}" for lo, hi in spans)


def css_text(font_url: str, codepoints: set[int], source: Path) -> str:
    urange = unicode_range(codepoints)
    wrapped = "\n    ".join(_wrap(urange, 88))
    return f"""\
/* Generated by tools/cjk_font.py (make book): do not edit.
   "{FAMILY}": {len(codepoints)} characters of {source.name} (SIL Open Font License), the
   Chinese the book and its demos can show. It comes LAST in the theme's font stacks: Latin
   text keeps the theme's fonts, and glyphs those fonts lack (CJK) come from this subset. */
@font-face {{
  font-family: "{FAMILY}";
  src: url("{font_url}") format("woff2");
  font-style: normal;
  font-weight: 400;
  font-display: swap;
  unicode-range: {wrapped};
}}

/* pydata-sphinx-theme's stacks (body and navigation, headings, code) and Bootstrap's. */
html:root {{
  --pst-font-family-base: var(--pst-font-family-base-system), "{FAMILY}";
  --pst-font-family-heading: var(--pst-font-family-base-system), "{FAMILY}";
  --pst-font-family-monospace: var(--pst-font-family-monospace-system), "{FAMILY}";
  --bs-font-sans-serif: var(--pst-font-family-base);
  --bs-font-monospace: var(--pst-font-family-monospace);
}}
"""


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for part in text.split(", "):
        piece = part if not line else f"{line}, {part}"
        if len(piece) > width and line:
            lines.append(line + ",")
            line = part
        else:
            line = piece
    return lines + [line]


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file next to `path`, then rename it over `path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def build(font_out: Path = FONT_OUT, css_out: Path = CSS_OUT, font: str | None = None,
          hinting: bool = True, root: Path = ROOT, quiet: bool = False) -> dict:
    t0 = time.perf_counter()
    source = source_font(font)
    wanted, counts = wanted_characters(root)
    data, kept = subset_font(source, wanted, hinting=hinting)
    missing = sorted(wanted - kept)
    url = os.path.relpath(font_out, css_out.parent).replace(os.sep, "/")
    atomic_write(font_out, data)
    atomic_write(css_out, css_text(url, kept, source).encode("utf-8"))
    seconds = time.perf_counter() - t0
    if not quiet:
        shown = "".join(chr(cp) for cp in missing[:20]) + ("..." if len(missing) > 20 else "")
        print(f"cjk_font: {len(kept)} characters ({counts['text']} in the book's text, "
              f"{counts['vocab']} in the models' vocabularies) from {source.name} -> "
              f"{font_out.relative_to(root) if font_out.is_relative_to(root) else font_out} "
              f"({len(data) / 1e6:.2f} MB) in {seconds:.1f} s"
              + (f"; not in the font, left to system fonts: {shown}" if missing else ""))
    return {"characters": len(kept), "bytes": len(data), "missing": missing, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--font", help="the OpenType font to subset (default: mplfonts' "
                        "Noto Sans CJK SC)")
    parser.add_argument("--out", default=str(FONT_OUT), help="the WOFF2 file to write")
    parser.add_argument("--css", default=str(CSS_OUT), help="the CSS file to write")
    parser.add_argument("--no-hinting", action="store_true",
                        help="drop the glyphs' hints (about 15%% smaller, coarser on Windows)")
    parser.add_argument("--list", action="store_true",
                        help="print the characters the subset would keep and exit")
    args = parser.parse_args(argv)
    try:
        if args.list:
            wanted, counts = wanted_characters()
            print("".join(chr(cp) for cp in sorted(wanted)))
            print(f"{len(wanted)} characters: {counts}", file=sys.stderr)
            return 0
        build(Path(args.out).resolve(), Path(args.css).resolve(), font=args.font,
              hinting=not args.no_hinting)
    except FontError as err:
        print(f"cjk_font: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
