"""Plain image-caption folders (`type="image_folder"`, `paths=[folder]`).

Two layouts, told apart by a `captions.tsv` at the folder's top:

  .txt beside each image   <folder>/**/<stem>.<jpg|jpeg|png|webp|bmp|gif|tif|tiff> and
                           <stem>.txt holding its caption (UTF-8), in any subfolder. This is
                           img2dataset's `output_format="files"` (github.com/rom1504/img2dataset
                           README: <output>/00000/000000000.jpg, .txt with the caption and
                           .json metadata per sample, a parquet and _stats.json per shard;
                           files of other suffixes are ignored) and the caption-folder layout
                           of most diffusion/captioner trainers.
  captions.tsv             one line per caption: the image's path relative to the folder, a
                           TAB, the caption (split at the first TAB; no quoting, so write it
                           with csv.QUOTE_NONE; a header line "file_name<TAB>..." /
                           "filename<TAB>..." is skipped). One image may have several lines
                           (COCO's five captions each): each is a record. With a
                           captions.tsv, .txt files are not read. (Hugging Face's imagefolder
                           metadata.csv/jsonl is neither: load it with `datasets` and save
                           parquet for the parquet source.)

Record: {"kind": "caption", "text": "<image_placeholder>" + caption (stripped),
"images": [absolute path]}; one record per (image, caption), and one per orphan, in a
sorted, stable order: by the image's path relative to the folder ('/'-separated, Python
string order; an orphan caption file by its own path), an image's TSV lines in file order.

Skip reasons (common.FormatError): "missing_caption" for an image without a caption (no
.txt, an empty one, or no TSV line), "missing_image" for a caption without its image (a
.txt with no image of its stem, a TSV line naming no file), "malformed" for a TSV line
without a TAB or a caption that is not UTF-8. Hidden files and folders (".name") are
ignored. Image files are found once, at open; they are decoded by the encoder (an
unreadable one is "bad_image"). Captions are read on demand. The index is the paths packed
in one byte buffer plus offsets (the TSV's captions as byte spans of the file), so the
reader pickles small. A folder has images only: its source must be multimodal.
"""

from __future__ import annotations

import os
import pathlib
import posixpath
from typing import Any, Iterable

import numpy as np

from dsvl_jax.data.formats.common import FormatError
from dsvl_jax.data.mixing import MULTIMODAL
from dsvl_jax.processor.tokenizer import IMAGE_TOKEN

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
CAPTIONS_TSV = "captions.tsv"
_HEADER_NAMES = ("file_name", "filename")  # a first TSV field that names a header line
_OK, _MISSING_CAPTION, _MISSING_IMAGE, _NO_TAB = 0, 1, 2, 3


def open_source(src) -> "ImageFolderSource":
  """The reader of a `type="image_folder"` source (data.config.SourceConfig)."""
  if src.modality != MULTIMODAL:
    raise ValueError(
        f"an image_folder source holds captioned images: modality must be "
        f"{MULTIMODAL!r}, got {src.modality!r}"
    )
  return ImageFolderSource(src.paths[0])


class _Strings:
  """A list of strings packed as UTF-8 in one uint8 array plus offsets: pickles as two
  buffers instead of one Python object per string."""

  def __init__(self, strings: Iterable[str]):
    encoded = [s.encode("utf-8", "surrogateescape") for s in strings]
    self.offsets = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum([len(b) for b in encoded], out=self.offsets[1:])
    self.data = np.frombuffer(b"".join(encoded), np.uint8)

  def __len__(self) -> int:
    return len(self.offsets) - 1

  def __getitem__(self, k: int) -> str:
    raw = self.data[self.offsets[k] : self.offsets[k + 1]].tobytes()
    return raw.decode("utf-8", "surrogateescape")


def _walk(root: pathlib.Path) -> list[str]:
  """Every non-hidden file under root, as sorted '/'-separated relative paths."""
  out = []
  for folder, dirs, files in os.walk(root):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    rel = pathlib.Path(folder).relative_to(root).as_posix()
    prefix = "" if rel == "." else rel + "/"
    out += [prefix + f for f in files if not f.startswith(".")]
  return sorted(out)


def _is_image(rel: str) -> bool:
  return rel.lower().endswith(IMAGE_SUFFIXES)


class ImageFolderSource:
  """Random access to the (image, caption) records of one folder (module docstring)."""

  base_dir = None  # image paths come out absolute

  def __init__(self, folder: str | os.PathLike):
    root = pathlib.Path(folder).absolute()
    if root.is_file() and root.name == CAPTIONS_TSV:
      root = root.parent
    if not root.is_dir():
      raise FileNotFoundError(f"image folder not found: {str(folder)!r}")
    self.root = root
    files = _walk(root)
    self.tsv = root / CAPTIONS_TSV if CAPTIONS_TSV in files else None
    rows = self._tsv_rows(files) if self.tsv else self._txt_rows(files)
    if not rows:
      raise FileNotFoundError(f"no images or captions in {root}")
    rows.sort(key=lambda r: (r[0], r[1]))  # (sort path, TSV line or 0): stable, sorted
    self._images = _Strings(r[2] for r in rows)  # the image's relative path ("" = none)
    self._captions = _Strings(r[3] for r in rows)  # .txt layout: the caption file's path
    self._status = np.asarray([r[4] for r in rows], np.int8)
    self._lines = np.asarray([r[1] for r in rows], np.int32)  # TSV: 1-based line numbers
    self._spans = np.asarray([r[5] for r in rows], np.int64).reshape(-1, 2)  # TSV caption
    self._file, self._pid = None, None

  # rows: (sort path, TSV line, image path, caption file, status, (caption start, end))

  def _txt_rows(self, files: list[str]) -> list[tuple]:
    stem = lambda rel: posixpath.splitext(rel)[0]
    captions = {stem(f): f for f in files if f.endswith(".txt")}
    images = [f for f in files if _is_image(f)]
    rows = []
    for img in images:
      cap = captions.get(stem(img), "")
      rows.append((img, 0, img, cap, _OK if cap else _MISSING_CAPTION, (0, 0)))
    image_stems = {stem(img) for img in images}
    for key, cap in captions.items():
      if key not in image_stems:
        rows.append((cap, 0, "", cap, _MISSING_IMAGE, (0, 0)))
    return rows

  def _tsv_rows(self, files: list[str]) -> list[tuple]:
    present, captioned, rows = set(files), set(), []
    at = 0
    with open(self.tsv, "rb") as f:
      for number, line in enumerate(f, start=1):
        start, at = at, at + len(line)
        if not line.strip():
          continue
        name, tab, _ = line.partition(b"\t")
        rel = posixpath.normpath(name.decode("utf-8", "surrogateescape").strip())
        if not tab:
          rows.append((rel, number, "", "", _NO_TAB, (start, at)))
          continue
        if number == 1 and rel.lower() in _HEADER_NAMES and rel not in present:
          continue
        found = os.path.isfile(rel) if os.path.isabs(rel) else rel in present
        captioned.add(rel)
        span = (start + len(name) + 1, at)
        rows.append((rel, number, rel, "", _OK if found else _MISSING_IMAGE, span))
    for img in files:
      if _is_image(img) and img not in captioned:
        rows.append((img, 0, img, "", _MISSING_CAPTION, (0, 0)))
    return rows

  def __len__(self) -> int:
    return len(self._status)

  def __getstate__(self):
    return {**self.__dict__, "_file": None, "_pid": None}

  def _caption(self, index: int) -> bytes:
    if self.tsv is None:
      return (self.root / self._captions[index]).read_bytes()
    if self._file is None or self._pid != os.getpid():  # reopen after fork/spawn
      self._file, self._pid = open(self.tsv, "rb"), os.getpid()
    start, end = (int(x) for x in self._spans[index])
    return os.pread(self._file.fileno(), end - start, start)

  def __getitem__(self, index: int) -> dict[str, Any]:
    status = int(self._status[index])
    if status == _MISSING_CAPTION:
      raise FormatError("missing_caption", f"no caption for {self._images[index]}")
    if status == _MISSING_IMAGE:
      named = self._images[index] or self._captions[index]
      raise FormatError("missing_image", f"no image file for the caption of {named}")
    if status == _NO_TAB:
      raise FormatError("malformed", f"{CAPTIONS_TSV} line {self._lines[index]} has no TAB")
    try:
      caption = self._caption(index).decode("utf-8").strip()
    except UnicodeDecodeError as e:
      raise FormatError("malformed", f"caption is not UTF-8: {e}") from e
    except OSError as e:  # a .txt removed since the folder was indexed
      raise FormatError("missing_caption", str(e)) from e
    if not caption:
      raise FormatError("missing_caption", f"empty caption for {self._images[index]}")
    return {
        "kind": "caption",
        "text": IMAGE_TOKEN + caption,
        "images": [str(self.root / self._images[index])],
    }

  def describe(self, index: int) -> str:
    if self.tsv is not None and self._lines[index]:
      return f"{CAPTIONS_TSV} line {int(self._lines[index])}"
    return self._images[index] or self._captions[index]
