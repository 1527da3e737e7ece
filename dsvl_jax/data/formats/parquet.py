"""Hugging Face `datasets` parquet shards, read by row group.

The release layout (what `Dataset.to_parquet`, `push_to_hub` and the Hub's
refs/convert/parquet write): one table a file, one row a record, the `datasets` features
in the schema metadata ("huggingface"). Checked in huggingface/datasets
src/datasets/features/image.py (`Image.pa_type = pa.struct({"bytes": pa.binary(), "path":
pa.string()})`; `encode_example` keeps `{"bytes": None, "path": p}` for a local file,
`embed_storage` fills in the bytes for the Hub) and src/datasets/io/parquet.py +
config.py (row groups of 100 rows for image data, PARQUET_ROW_GROUP_SIZE_FOR_IMAGE_DATASETS,
"since accessing 1 row requires to read its entire row group"). Layouts seen in releases:

  HuggingFaceH4/llava-instruct-mix-vsft (TRL's VSFT format; its README's dataset_info):
    messages: list<{content: list<{index: int64, text: string, type: "text"|"image"}>,
                    role: string}>,   images: Sequence(Image) = list<{bytes, path}>
  lmms-lab/LLaVA-NeXT-Data (its README's dataset_info):
    id, conversations: list<{from: "human"|"gpt", value: "<image>\\n..."}>, data_source,
    image: Image = {bytes, path} (null on text-only conversations)
  img2dataset --output_format parquet (rom1504/img2dataset img2dataset/writer.py):
    key, txt (the caption), jpg: binary (null when the download failed), url, width, ...

Columns are configured (SourceConfig.messages_column / text_column / images_column); a
file needs the messages or the text column, and a multimodal source the images column.
A missing column or one of another type fails at open time, naming the file and column.

Mapping to our record schema, per row:
  messages (when non-null) -> a chat ("chat", or "text_chat" without images):
    LLaVA turns {"from", "value"}: common.llava_messages ("<image>" -> our placeholder;
      the markers must number the images);
    {"role": "user"|"assistant", "content"}: content a string (in a row with images,
      LLaVA's "<image>" markers, as LLaMA-Factory's data/mllm_demo.json "messages" have
      them, become our placeholder) or a list of parts {"type": "text", "text"} /
      {"type": "image", "index"}: text parts verbatim, image parts our placeholder,
      concatenated without separator as the Hugging Face chat templates render them.
      Image parts with indices take images[index] in the order they appear; "system" and
      other roles are malformed (the system prompt is data.system_prompt).
  else text -> a document ("caption", "interleaved" with several images, or "text"): in
    a row with images, "<image>" markers become our placeholder, and a text with no
    placeholder gets one per image in front of it (a caption, as our jsonl captions
    are); a text without images is kept as it is.
  images: a struct's bytes when not null (exactly as stored; the Hub's basename in
    "path" is then not used), else its path (absolute, or relative to `image_folder`
    when set, else to the parquet file's folder); plain binary as bytes; a string as a
    path; a list of any of these in order; null: no image.

Skip reasons raised here (common.FormatError): "malformed" (messages of another shape, a
role we do not train, an image count that disagrees with the markers, bad part indices,
a text that is not a string), "missing_image" (an image entry with neither bytes nor a
path), "empty" (neither messages nor text, as img2dataset's failed downloads). A path
that is not a file is the encoder's "bad_image".

Modality: which rows have images is known only by reading them, and a whole-dataset scan
would read every image byte, so the reader filters nothing: a multimodal source's rows
without images and a text source's rows with images reach the encoder, which skips them
as "modality" (counted). One file can so feed a text and a multimodal source, each
skipping (and counting) the other's rows.

Random access and its cost: the index is, per file, the row counts of its row groups from
the parquet footer (no data is read at open). Record i -> (file, row group, row); the
row group's needed columns are read once and the last one kept per process, so a
sequential read decodes each group once and makes Python objects of one row at a time.
A shuffled run reads a whole row group (100 rows as `datasets` writes image data) for
most records: on this host 0.6 ms a record for groups of 100 38-KB JPEGs (page cache
warm) against 0.03 ms in order, about what decoding that JPEG costs. Over slow storage
or with large row groups, convert to ArrayRecord (`convert_dataset`).
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dsvl_jax.data.formats.common import (
    FormatError,
    OpenFiles,
    caption_text,
    chat_messages,
    expand_paths,
)
from dsvl_jax.data.mixing import MULTIMODAL


def record_from_row(
    messages: Any, text: Any, images: Sequence[Any], where: str = ""
) -> dict[str, Any]:
  """A row's messages (or None), text (or None) and image references -> our record."""
  if messages is not None:
    out, order = chat_messages(messages, len(images), where)
    if order is not None:
      images = [images[k] for k in order]
    return {"kind": "chat" if images else "text_chat", "messages": out, "images": list(images)}
  if text is None:  # img2dataset's failed downloads: no image, no caption
    raise FormatError("empty", f"{where}neither messages nor a text")
  if not isinstance(text, str):
    raise FormatError("malformed", f"{where}the text is {type(text).__name__}, not a string")
  kind = "text" if not images else "caption" if len(images) == 1 else "interleaved"
  return {"kind": kind, "text": caption_text(text, len(images)), "images": list(images)}


# ------------------------------------------------------------------ column types


def _is_image_type(t: pa.DataType) -> bool:
  if pa.types.is_struct(t):
    names = {t.field(k).name for k in range(t.num_fields)}
    return bool(names & {"bytes", "path"})
  return pa.types.is_binary(t) or pa.types.is_large_binary(t) or _is_string(t)


def _is_string(t: pa.DataType) -> bool:
  return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_list(t: pa.DataType) -> bool:
  return pa.types.is_list(t) or pa.types.is_large_list(t)


def _check_columns(path: pathlib.Path, schema: pa.Schema, cols: dict[str, str], multimodal: bool):
  """The columns this file is read by, checked at open time (errors name file and column)."""

  def type_of(name):
    return schema.field(name).type if name in schema.names else None

  msg_t, text_t, img_t = (type_of(cols[k]) for k in ("messages", "text", "images"))
  if msg_t is None and text_t is None:
    raise ValueError(
        f"{path}: no column {cols['messages']!r} (messages_column) or {cols['text']!r} "
        f"(text_column); its columns are {schema.names}"
    )
  if msg_t is not None and not (_is_list(msg_t) and pa.types.is_struct(msg_t.value_type)):
    raise ValueError(f"{path}: column {cols['messages']!r} is {msg_t}, not a list of turns")
  if text_t is not None and not _is_string(text_t):
    raise ValueError(f"{path}: column {cols['text']!r} is {text_t}, not a string")
  if img_t is None:
    if multimodal:
      raise ValueError(
          f"{path}: no column {cols['images']!r} (images_column) for a multimodal source; "
          f"its columns are {schema.names}"
      )
  elif not (_is_image_type(img_t) or (_is_list(img_t) and _is_image_type(img_t.value_type))):
    raise ValueError(
        f"{path}: column {cols['images']!r} is {img_t}: not an image ({{bytes, path}} struct, "
        f"binary or a path string) or a list of them"
    )
  return [cols[k] for k, t in (("messages", msg_t), ("text", text_t), ("images", img_t)) if t]


# ---------------------------------------------------------------------- the source


class ParquetSource:
  """Random access to the rows of parquet shards (module docstring); holds paths and the
  row-group index, opens files lazily in each process."""

  base_dir = None  # images come back as bytes or absolute paths

  def __init__(
      self,
      paths: Sequence[str | os.PathLike],
      messages_column: str = "messages",
      text_column: str = "text",
      images_column: str = "images",
      image_folder: str = "",
      modality: str = MULTIMODAL,
  ):
    self.cols = {"messages": messages_column, "text": text_column, "images": images_column}
    self.image_folder = image_folder
    self.paths, self.columns = [], []
    starts, group_file, group_rg = [], [], []
    total = 0
    for f, path in enumerate(map(pathlib.Path, paths)):
      try:
        meta = pq.ParquetFile(path)
      except pa.ArrowException as e:
        raise ValueError(f"{path}: not a parquet file ({e})") from e
      try:
        self.columns.append(
            _check_columns(path, meta.schema_arrow, self.cols, modality == MULTIMODAL)
        )
        for rg in range(meta.metadata.num_row_groups):
          rows = meta.metadata.row_group(rg).num_rows
          if rows:
            starts.append(total)
            group_file.append(f)
            group_rg.append(rg)
            total += rows
      finally:
        meta.close()
      self.paths.append(str(path))
    self._starts = np.asarray(starts + [total], np.int64)
    self._group_file = np.asarray(group_file, np.int32)
    self._group_rg = np.asarray(group_rg, np.int32)
    self._files = OpenFiles(self.paths, pq.ParquetFile)
    self._cached: tuple[int, pa.Table] | None = None  # the last row group read

  def __getstate__(self):
    return {**self.__dict__, "_cached": None}  # rows stay behind (and handles: OpenFiles)

  def __len__(self) -> int:
    return int(self._starts[-1])

  def _locate(self, index: int) -> tuple[int, int]:
    if not 0 <= index < len(self):
      raise IndexError(f"record {index} of {len(self)}")
    g = int(np.searchsorted(self._starts, index, side="right")) - 1
    return g, index - int(self._starts[g])

  def describe(self, index: int) -> str:
    g, row = self._locate(index)
    name = pathlib.Path(self.paths[self._group_file[g]]).name
    return f"{name} row group {int(self._group_rg[g])} row {row}"

  def _group(self, g: int) -> pa.Table:
    """Row group g's columns, read once and kept until another group is read."""
    if self._cached is not None and self._cached[0] == g:
      return self._cached[1]
    f = int(self._group_file[g])
    pf = self._files.get(f)
    table = pf.read_row_group(int(self._group_rg[g]), columns=self.columns[f], use_threads=False)
    self._cached = (g, table)
    return table

  def __getitem__(self, index: int) -> dict[str, Any]:
    g, row = self._locate(index)
    values = self._group(g).slice(row, 1).to_pylist()[0]  # this row only becomes Python
    path = pathlib.Path(self.paths[self._group_file[g]])
    base = pathlib.Path(self.image_folder) if self.image_folder else path.parent
    where = f"{path.name} row group {int(self._group_rg[g])} row {row}: "
    images = _image_refs(values.get(self.cols["images"]), base.absolute(), where)
    return record_from_row(
        values.get(self.cols["messages"]), values.get(self.cols["text"]), images, where
    )


def _image_refs(value: Any, base: pathlib.Path, where: str) -> list[bytes | str]:
  """An images cell -> encoded bytes (as stored) or absolute paths, in order."""
  if value is None:
    return []
  out = []
  for k, v in enumerate(value if isinstance(value, list) else [value]):
    if isinstance(v, dict):
      data, path = v.get("bytes"), v.get("path")
      if data is not None:
        out.append(bytes(data))
        continue
      v = path
    if isinstance(v, (bytes, bytearray)):
      out.append(bytes(v))
    elif isinstance(v, str) and v:
      out.append(str(base / v))  # an absolute v stays as it is
    else:
      raise FormatError("missing_image", f"{where}image {k} has neither bytes nor a path")
  return out


def open_source(src) -> ParquetSource:
  """The reader of a configured parquet source (data.config.SourceConfig): its paths are
  .parquet files or folders of them (sorted by name)."""
  return ParquetSource(
      expand_paths(src.paths, (".parquet",)),
      src.messages_column,
      src.text_column,
      src.images_column,
      src.image_folder,
      src.modality,
  )
