"""MMC4 interleaved documents, read as released (`type="mmc4"`).

Release layout (github.com/allenai/mmc4 README, v1.1): jsonl shards, one document a line,
named docs_shard_{i}_v2.jsonl (mmc4; fewer-faces sets: docs_no_face_shard_{i}_v2.jsonl,
core: ..._v3.jsonl; distributed zipped: unzip them, a .zip has no random access):

  {"text_list": [str, ...],                    the document's sentences
   "image_info": [{"image_name": "b9040a0dbb22.jpg",  the file the image is downloaded to
                   "raw_url": "http://...",
                   "matched_text_index": 2,    the sentence the image is assigned to
                   "matched_sim": 0.2769,      CLIP ViT-L/14 similarity to that sentence
                   "face_detections": null}, ...],
   "similarity_matrix": [[...]],               len(image_info) x len(text_list)
   "url": "http://...", "could_have_url_duplicate": 0}

The images are not in the release: mmc4's scripts/download_images.py saves each as
<output_image_dir>/<image_name> (one flat folder), which is `src.image_folder` here
(default: each shard's own folder). Assignments come from scripts/compute_assignments.py
(a linear assignment on the similarity matrix; with more images than sentences the extra
images go to their best sentence, so one sentence can hold several images).

Mapping (OpenFlamingo's, mlfoundations/open_flamingo open_flamingo/train/data.py
`preprocess_interleaved`: "<image>" + sentence for each kept image's sentence, sentences
joined with " "): each kept image's `<image_placeholder>` goes right before its matched
sentence, several images on one sentence in image_info order, sentences joined with " "
(OpenFlamingo also drops the space before an image and adds its <|endofchunk|>; we have
no such token). Record: {"kind": "interleaved", "text", "images": [absolute paths in
placeholder order]}. Left out of a document (silently: a document is one record):
  - images whose matched_sim is below `src.min_similarity` (OpenFlamingo trains with
    --mmc4_textsim_threshold 0.24: its README and scripts/run_train.sh; our default 0
    keeps every matched image; a missing similarity fails any threshold above 0);
  - images whose matched_text_index is not a sentence of the document (unmatched).
A document with no image left is skipped as "no_matched_image" by a multimodal source.
A text source (`modality="text"`) reads each document as plain text, {"kind": "text",
"text": sentences joined with " "}, images ignored.

Skip reasons (common.FormatError): "no_matched_image" (above); "malformed" for a line that
is not a JSON object, text_list not a list of strings, image_info not a list of objects
with a non-empty string image_name. Each shard is indexed by sources.LineIndex (byte
offsets of lines), so the reader pickles small; documents are parsed on demand.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Sequence

import numpy as np

from dsvl_jax.data.formats.common import FormatError, expand_paths
from dsvl_jax.data.mixing import MULTIMODAL, TEXT
from dsvl_jax.data.sources import LineIndex
from dsvl_jax.processor.tokenizer import IMAGE_TOKEN


def open_source(src) -> "Mmc4Source":
  """The reader of a `type="mmc4"` source (data.config.SourceConfig); a folder in
  `paths` stands for its .jsonl shards."""
  return Mmc4Source(
      expand_paths(src.paths, (".jsonl",)), src.image_folder, src.min_similarity, src.modality
  )


def _is_number(x: Any) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)


class Mmc4Source:
  """Random access to the documents of MMC4 jsonl shards (module docstring)."""

  base_dir = None  # image paths come out absolute

  def __init__(
      self,
      shards: Sequence[str | os.PathLike],
      image_folder: str = "",
      min_similarity: float = 0.0,
      modality: str = MULTIMODAL,
  ):
    if modality not in (MULTIMODAL, TEXT):
      raise ValueError(f"modality must be {MULTIMODAL!r} or {TEXT!r}, got {modality!r}")
    if not shards:
      raise ValueError("an mmc4 source needs shard files")
    self._shards = [LineIndex(pathlib.Path(p).absolute()) for p in shards]
    self._ends = np.cumsum([len(s) for s in self._shards]).astype(np.int64)
    self._folders = [
        pathlib.Path(image_folder).absolute() if image_folder else s.path.parent
        for s in self._shards
    ]
    self.min_similarity, self.modality = float(min_similarity), modality

  def __len__(self) -> int:
    return int(self._ends[-1])

  def _locate(self, index: int) -> tuple[int, int]:
    if not 0 <= index < len(self):
      raise IndexError(f"document {index} of {len(self)}")
    shard = int(np.searchsorted(self._ends, index, side="right"))
    return shard, index - (int(self._ends[shard - 1]) if shard else 0)

  def __getitem__(self, index: int) -> dict[str, Any]:
    shard, k = self._locate(index)
    try:
      doc = json.loads(self._shards[shard][k])
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise FormatError("malformed", f"not valid JSON: {e}") from e
    return self._record(doc, self._folders[shard])

  def _record(self, doc: Any, folder: pathlib.Path) -> dict[str, Any]:
    if not isinstance(doc, dict):
      raise FormatError("malformed", f"a document must be a JSON object, got {type(doc).__name__}")
    sentences, infos = doc.get("text_list"), doc.get("image_info")
    if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
      raise FormatError("malformed", "'text_list' must be a list of strings")
    if self.modality == TEXT:
      return {"kind": "text", "text": " ".join(sentences)}
    if not isinstance(infos, list):
      raise FormatError("malformed", "'image_info' must be a list")
    kept = []  # (sentence, image_info position, file name)
    for j, info in enumerate(infos):
      if not isinstance(info, dict) or not isinstance(info.get("image_name"), str):
        raise FormatError("malformed", f"image_info[{j}] needs a string 'image_name'")
      if not info["image_name"]:
        raise FormatError("malformed", f"image_info[{j}] has an empty 'image_name'")
      t, sim = info.get("matched_text_index"), info.get("matched_sim")
      if not (isinstance(t, int) and not isinstance(t, bool) and 0 <= t < len(sentences)):
        continue  # matched to no sentence of this document
      if self.min_similarity > 0 and not (_is_number(sim) and sim >= self.min_similarity):
        continue
      kept.append((t, j, info["image_name"]))
    if not kept:
      raise FormatError(
          "no_matched_image",
          f"none of its {len(infos)} image(s) is matched to one of its {len(sentences)} "
          f"sentence(s) with similarity >= {self.min_similarity}",
      )
    kept.sort()  # by sentence, then image_info order
    per_sentence = [0] * len(sentences)
    for t, _, _ in kept:
      per_sentence[t] += 1
    text = " ".join(IMAGE_TOKEN * n + s for n, s in zip(per_sentence, sentences))
    return {"kind": "interleaved", "text": text, "images": [str(folder / n) for _, _, n in kept]}

  def describe(self, index: int) -> str:
    shard, k = self._locate(index)
    return self._shards[shard].describe(k)
