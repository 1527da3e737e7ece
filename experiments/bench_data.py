"""Training-data throughput: multimodal samples/s at 384 and 1024 px, 0/1/2 grain workers,
and per source type (the public formats of data/formats/ and ArrayRecord) on the same images.

  python experiments/bench_data.py [--samples 96] [--workers 0,1,2] [--sizes 384,1024]
      [--formats jsonl,array_record,llava,parquet,webdataset,image_folder,mmc4]
      [--format-workers 0]

Each sample is a caption record of a jsonl manifest whose image is a 1280x960 JPEG on
disk (textured, quality 90; a typical web photo). The pipeline does everything a training
step needs: read, parse, tokenise (built-in byte tokenizer, real special ids), decode the
JPEG, the release's resize-and-pad to S, rows of seq_len 1024 with 576 image tokens,
batches of 8, modality grouping. Timed after start-up and the workers' initial buffers.

Per source type: the same 48 JPEGs and captions written in each layout (LLaVA: a JSON
array of one-turn conversations; parquet: `datasets`' image structs with the bytes, row
groups of 16; webdataset: one tar of <key>.jpg + <key>.txt; image_folder: a .txt beside
each image; mmc4: one-sentence documents), read at 384 px, against the jsonl manifest.

Reference, same run: transformers' `DeepseekVLImageProcessorPil` (384) /
`DeepseekVLHybridImageProcessorPil` (1024) on the same files in this process, decode
included: the per-image work any loader built on transformers would do.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pathlib
import tarfile
import tempfile
import time

import numpy as np
from PIL import Image

from dsvl_jax.data.config import DataConfig
from dsvl_jax.data.pipeline import TrainDataset
from dsvl_jax.processor.image_processor import ImageProcessorConfig
from dsvl_jax.processor.layout import TokenLayout
from dsvl_jax.processor.tokenizer import IMAGE_TOKEN

BATCH = 8
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)


def write_dataset(directory: pathlib.Path, n: int) -> pathlib.Path:
  rng = np.random.default_rng(0)
  lines = []
  for i in range(n):
    coarse = rng.integers(0, 256, (30, 40, 3), np.uint8)  # smooth colour field + grain
    img = np.asarray(Image.fromarray(coarse).resize((1280, 960), Image.BICUBIC), np.int16)
    img = np.clip(img + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(directory / f"{i}.jpg", quality=90)
    lines.append(
        f'{{"kind": "caption", "images": ["{i}.jpg"], '
        f'"text": "{IMAGE_TOKEN}Photo number {i}, a field of colour."}}'
    )
  path = directory / "manifest.jsonl"
  path.write_text("\n".join(lines) + "\n")
  return path


FORMATS = ("jsonl", "array_record", "llava", "parquet", "webdataset", "image_folder", "mmc4")


def caption(i: int) -> str:
  return f"Photo number {i}, a field of colour."


def write_format(name: str, manifest: pathlib.Path, n: int) -> dict:
  """The source fields of the same n photos and captions in layout `name` (beside
  `manifest`; images read from its folder)."""
  root = manifest.parent
  out = root / name
  out.mkdir(exist_ok=True)
  if name == "jsonl":
    return dict(type="jsonl", paths=[str(manifest)])
  if name == "array_record":
    from dsvl_jax.data.to_array_record import convert  # pylint: disable=g-import-not-at-top

    convert(manifest, out / "photos.array_record")
    return dict(type="array_record", paths=[str(out / "photos.array_record")])
  if name == "llava":
    records = [
        {
            "id": str(i),
            "image": f"{i}.jpg",
            "conversations": [
                {"from": "human", "value": "<image>\nDescribe the photo."},
                {"from": "gpt", "value": caption(i)},
            ],
        }
        for i in range(n)
    ]
    (out / "llava.json").write_text(json.dumps(records))
    return dict(type="llava", paths=[str(out / "llava.json")], image_folder=str(root))
  if name == "parquet":
    import pyarrow as pa  # pylint: disable=g-import-not-at-top
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "text": [caption(i) for i in range(n)],
            "images": pa.array(
                [
                    [{"bytes": (root / f"{i}.jpg").read_bytes(), "path": f"{i}.jpg"}]
                    for i in range(n)
                ],
                pa.list_(image),
            ),
        }
    )
    pq.write_table(table, out / "train-00000-of-00001.parquet", row_group_size=16)
    return dict(type="parquet", paths=[str(out / "train-00000-of-00001.parquet")])
  if name == "webdataset":
    with tarfile.open(out / "shard-000000.tar", "w") as tar:
      for i in range(n):
        tar.add(root / f"{i}.jpg", arcname=f"{i:06d}.jpg")
        data = caption(i).encode()
        info = tarfile.TarInfo(f"{i:06d}.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return dict(type="webdataset", paths=[str(out / "shard-000000.tar")])
  if name == "image_folder":
    for i in range(n):
      os.link(root / f"{i}.jpg", out / f"{i}.jpg")
      (out / f"{i}.txt").write_text(caption(i))
    return dict(type="image_folder", paths=[str(out)])
  if name == "mmc4":
    docs = [
        {
            "url": f"https://example.com/{i}",
            "text_list": [caption(i)],
            "image_info": [
                {
                    "image_name": f"{i}.jpg",
                    "raw_url": f"https://example.com/{i}.jpg",
                    "matched_text_index": 0,
                    "matched_sim": 0.3,
                }
            ],
            "similarity_matrix": [[0.3]],
            "could_have_url_duplicate": 0,
        }
        for i in range(n)
    ]
    (out / "docs_shard_0_v2.jsonl").write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    return dict(type="mmc4", paths=[str(out / "docs_shard_0_v2.jsonl")], image_folder=str(root))
  raise ValueError(f"unknown format {name!r}; one of {FORMATS}")


def layout(size: int) -> TokenLayout:
  background = (127, 127, 127) if size == 384 else tuple(int(c * 255) for c in CLIP_MEAN)
  return TokenLayout(100000, 100001, 100001, 100015, 576, ImageProcessorConfig(size, background))


def pipeline_rate(source: pathlib.Path | dict, size: int, workers: int, samples: int) -> float:
  """samples/s of the training pipeline over one source (a manifest, or source fields)."""
  if isinstance(source, pathlib.Path):
    source = dict(type="jsonl", paths=[str(source)])
  cfg = DataConfig.from_dict(
      dict(
          stage=2,
          seq_len=1024,
          global_batch_size=BATCH,
          max_images_per_row=1,
          multimodal_share=1.0,
          num_workers=workers,
          process_index=0,
          process_count=1,
          sources={"photos": source},
      )
  )
  it = iter(TrainDataset(cfg, layout(size)))
  try:
    # Start-up (worker processes) and the batches workers buffered meanwhile are not
    # throughput: drain them before timing.
    for _ in range(1 + workers * cfg.worker_buffer_size):
      next(it)
    steps = max(samples // BATCH, 1)
    t0 = time.perf_counter()
    for _ in range(steps):
      batch = next(it)
    dt = time.perf_counter() - t0
    assert batch["images"].shape == (BATCH, 1, 3, size, size)
    return steps * BATCH / dt
  finally:
    it.close()


def transformers_rate(manifest: pathlib.Path, size: int, samples: int) -> float | None:
  try:
    if size == 384:
      from transformers.models.deepseek_vl.image_processing_pil_deepseek_vl import (
          DeepseekVLImageProcessorPil as Proc,
      )

      proc = Proc(
          image_mean=[0.5] * 3,
          image_std=[0.5] * 3,
          do_normalize=False,
          size={"height": 384, "width": 384},
      )
    else:
      from transformers.models.deepseek_vl_hybrid.image_processing_pil_deepseek_vl_hybrid import (
          DeepseekVLHybridImageProcessorPil as Proc,
      )

      proc = Proc(
          image_mean=[0.5] * 3,
          image_std=[0.5] * 3,
          do_normalize=False,
          high_res_image_mean=list(CLIP_MEAN),
          high_res_image_std=[1.0] * 3,
          high_res_size={"height": 1024, "width": 1024},
      )
  except ImportError:
    return None
  files = sorted(manifest.parent.glob("*.jpg"), key=lambda p: int(p.stem))
  t0 = time.perf_counter()
  for i in range(samples):
    with Image.open(files[i % len(files)]) as img:
      proc(images=[img.convert("RGB")], return_tensors="np")
  return samples / (time.perf_counter() - t0)


def main():
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--samples", type=int, default=96)
  parser.add_argument("--workers", default="0,1,2")
  parser.add_argument("--sizes", default="384,1024")
  parser.add_argument("--formats", default=",".join(FORMATS), help="source types ('' = none)")
  parser.add_argument("--format-workers", type=int, default=0, help="workers for --formats")
  args = parser.parse_args()
  workers = [int(w) for w in args.workers.split(",") if w]
  sizes = [int(s) for s in args.sizes.split(",") if s]
  formats = [f for f in args.formats.split(",") if f]
  with tempfile.TemporaryDirectory() as tmp:
    manifest = write_dataset(pathlib.Path(tmp), 48)
    rows = []
    for size in sizes:
      ref = transformers_rate(manifest, size, min(args.samples, 48))
      for w in workers:
        rate = pipeline_rate(manifest, size, w, args.samples)
        rows.append((size, w, rate, ref))
    by_format = {
        f: pipeline_rate(write_format(f, manifest, 48), 384, args.format_workers, args.samples)
        for f in formats
    }
  print(f"host: {os.cpu_count()} CPUs; {args.samples} samples per measurement; batch {BATCH}")
  if by_format:
    base = by_format.get("jsonl")
    print(f"source types at 384 px, {args.format_workers} workers, the same 48 photos:")
    print("| source type | samples/s | vs jsonl |")
    print("|---|---|---|")
    for f, rate in by_format.items():
      ratio = "n/a" if base is None else f"{rate / base:.2f}x"
      print(f"| {f} | {rate:.1f} | {ratio} |")
  if not rows:
    return
  print(
      "| image | workers | dsvl_jax samples/s | transformers processor, 1 process, "
      "images/s | ratio |"
  )
  print("|---|---|---|---|---|")
  for size, w, rate, ref in rows:
    ref_s = "n/a" if ref is None else f"{ref:.1f}"
    ratio = "n/a" if ref is None else f"{rate / ref:.2f}x"
    print(f"| {size} px | {w} | {rate:.1f} | {ref_s} | {ratio} |")


if __name__ == "__main__":
  main()
