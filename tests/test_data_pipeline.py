"""The grain pipeline: modality grouping, hosts, resume, loss masks, bad data, packing."""

import json
import logging
import pathlib
import subprocess
import sys
import textwrap

import grain
import jax
import numpy as np
import pytest
from conftest import tiny_config
from data_fixtures import (
    EOS_TOKEN,
    IMAGE_TOKEN,
    assert_same_batches,
    byte_tokenizer,
    data_config,
    good_records,
    take,
    write_image,
    write_manifest,
)

from dsvl_jax.config.schema import ConfigError
from dsvl_jax.data.encoding import BadSampleError, SampleEncoder
from dsvl_jax.data.mixing import MULTIMODAL, TEXT, step_modality
from dsvl_jax.data.pipeline import TrainDataset, valid_images
from dsvl_jax.data.to_array_record import convert
from dsvl_jax.models import DeepseekVL
from dsvl_jax.models.attention import make_mask
from dsvl_jax.models.init import init_params
from dsvl_jax.processor import conversation, image_processor
from dsvl_jax.processor.layout import TokenLayout

CFG = tiny_config("siglip")
ARRAYS = ("inputs", "targets", "weights", "segment_ids", "positions", "images", "num_images")


def _segments(row_seg):
  return [s for s in np.unique(row_seg) if s > 0]


@pytest.mark.parametrize("pack,seed", [(False, 0), (True, 0), (True, 12345)])
def test_every_step_is_one_modality_chosen_by_the_schedule(pack, seed):
  cfg = data_config(
      schedule="warmup",
      multimodal_share=0.6,
      warmup_steps=12,
      pack=pack,
      global_batch_size=3,
      seed=seed,
  )
  batches, _, metrics = take(cfg, 30)
  k = CFG.num_image_tokens
  for b in batches:
    assert b["modality"] == step_modality(cfg.seed, b["step"], cfg.modality_schedule)
    is_image = b["inputs"] == CFG.image_token_id
    if b["modality"] == TEXT:
      assert b["images"].shape == (3, 0, 3, 32, 32) and not is_image.any()
      assert not b["num_images"].any()
    else:
      assert b["images"].shape == (3, 2, 3, 32, 32)
      for r in range(3):  # every sample of a multimodal step has its images
        for s in _segments(b["segment_ids"][r]):
          assert is_image[r][b["segment_ids"][r] == s].any()
      np.testing.assert_array_equal(is_image.sum(1), b["num_images"] * k)
  modalities = [b["modality"] for b in batches]
  assert set(modalities) == {TEXT, MULTIMODAL}
  assert metrics["data/multimodal_share"] == modalities.count(MULTIMODAL) / 30
  assert metrics["data/steps"] == 30
  assert metrics["data/source_share/shapes"] == metrics["data/source_share/words"] == 1.0
  if pack:
    assert 0.5 < metrics["data/packing_efficiency/text"] <= 1.0


def test_10k_steps_follow_the_warmup_and_the_source_weights():
  """The realised multimodal share per 1,000-step window matches the schedule within
  4.5 sigma; two multimodal sources weighted 3:1 give 3/4 and 1/4 of the samples."""
  cfg = data_config(
      schedule="warmup",
      multimodal_share=0.3,
      warmup_steps=6_000,
      global_batch_size=1,
      seq_len=256,
      seed=7,
      sources={
          "big": dict(type="synthetic", weight=3.0, synthetic_kinds=["caption"]),
          "small": dict(type="synthetic", synthetic_seed=5, synthetic_kinds=["caption"]),
          "words": dict(type="synthetic", modality="text", synthetic_kinds=["text"]),
      },
  )
  it = iter(TrainDataset(cfg, TokenLayout.of(CFG)))
  try:
    mm = np.array([next(it)["modality"] == MULTIMODAL for _ in range(10_000)])
    metrics = it.metrics()
  finally:
    it.close()
  schedule = cfg.modality_schedule
  for start in range(0, 10_000, 1_000):
    want = np.mean([schedule.share_at(s) for s in range(start, start + 1_000)])
    sigma = np.sqrt(max(want * (1 - want), 1e-4) / 1_000)
    assert abs(mm[start : start + 1_000].mean() - want) < 4.5 * sigma, start
  assert metrics["data/multimodal_share"] == mm.mean()
  assert metrics["data/samples/big"] + metrics["data/samples/small"] == mm.sum()
  assert abs(metrics["data/source_share/big"] - 0.75) < 0.01
  assert metrics["data/skipped"] == 0


def test_every_packed_row_mixes_the_sources_by_their_weights(tmp_path):
  """grain's mix of weights 3:1 repeats A A A B; dealt to B = 4 rows without the rotation,
  rows 0-2 would read only A and row 3 only B, and row 3, packing B's short samples,
  would push B's global share far above 1/4. Each row must see 3:1 by itself."""
  rng = np.random.default_rng(0)
  for name, letter, lengths in (("long", "a", (20, 60)), ("short", "b", (3, 8))):
    write_manifest(
        tmp_path, [{"text": letter * int(n)} for n in rng.integers(*lengths, 50)], f"{name}.jsonl"
    )
  cfg = data_config(
      pack=True,
      global_batch_size=4,
      seq_len=128,
      multimodal_share=0.0,
      sources={
          "long": dict(
              type="jsonl", modality="text", weight=3.0, paths=[str(tmp_path / "long.jsonl")]
          ),
          "short": dict(type="jsonl", modality="text", paths=[str(tmp_path / "short.jsonl")]),
      },
  )
  batches, _, metrics = take(cfg, 30)
  tok = byte_tokenizer()
  long_short = np.zeros((4, 2), int)  # samples per row
  for b in batches:
    for r in range(4):
      seg = b["segment_ids"][r]
      for s in _segments(seg):
        text = tok.decode(b["inputs"][r][seg == s])
        assert set(text) in ({"a"}, {"b"}), text
        long_short[r, int(text[0] == "b")] += 1
  assert (long_short.sum(1) >= 60).all(), long_short
  share = long_short[:, 0] / long_short.sum(1)
  assert np.abs(share - 0.75).max() < 0.05, f"share of 'long' per row {share}"
  assert abs(metrics["data/source_share/long"] - 0.75) < 0.02


@pytest.mark.parametrize("pack", [False, True])
def test_each_host_holds_its_slice_of_the_same_global_batch(pack):
  cfg = data_config(pack=pack, global_batch_size=4)
  one, _, _ = take(cfg, 8)
  halves = [take(cfg, 8, process_index=h, process_count=2)[0] for h in (0, 1)]
  for step, (whole, a, b) in enumerate(zip(one, *halves)):
    assert whole["modality"] == a["modality"] == b["modality"]
    for key in ARRAYS:
      assert a[key].shape[0] == 2
      np.testing.assert_array_equal(
          whole[key], np.concatenate([a[key], b[key]]), err_msg=f"step {step} {key}"
      )
  with pytest.raises(ValueError, match="not divisible"):
    take(data_config(global_batch_size=3), 1, process_index=0, process_count=2)


@pytest.mark.parametrize("pack,prefetch", [(False, 2), (True, 2), (True, 0)])
def test_restored_iterator_yields_exactly_the_next_batches(pack, prefetch):
  cfg = data_config(pack=pack, prefetch_batches=prefetch)
  first, state, _ = take(cfg, 5)
  expected, _, metrics = take(cfg, 10)
  state = json.loads(json.dumps(state))  # what a checkpoint stores
  assert state["step"] == 5
  resumed, _, resumed_metrics = take(cfg, 5, state=state)
  assert_same_batches(expected[5:], resumed)
  assert_same_batches(expected[:5], first)
  assert resumed_metrics == metrics  # counters continue across the restore


def test_prefetch_thread_changes_no_batch_and_no_state():
  """The background thread's batches and iterator states are the inline pipeline's, so
  a checkpoint saved with one setting resumes under the other."""
  inline, inline_state, inline_metrics = take(data_config(pack=True, prefetch_batches=0), 7)
  threaded, state, metrics = take(data_config(pack=True, prefetch_batches=3), 7)
  assert_same_batches(inline, threaded)
  assert state == inline_state and metrics == inline_metrics
  later, _, _ = take(data_config(pack=True, prefetch_batches=0), 9)
  resumed, _, _ = take(
      data_config(pack=True, prefetch_batches=3), 2, state=json.loads(json.dumps(state))
  )
  assert_same_batches(later[7:], resumed)


def test_an_iterator_alive_at_exit_closes_quietly():
  """grain closes an iterator again when it is collected; at interpreter shutdown that
  raised (and printed) unless `close` had let its prefetch iterators go."""
  script = textwrap.dedent("""
      import sys
      sys.path[:0] = [{tests!r}]
      from data_fixtures import data_config, layout
      from dsvl_jax.data.pipeline import TrainDataset
      it = iter(TrainDataset(data_config(prefetch_batches=2), layout("siglip")))
      next(it), next(it)
      it.close()
      print("done")
  """).format(tests=str(pathlib.Path(__file__).parent))
  out = subprocess.run(
      [sys.executable, "-c", script],
      capture_output=True,
      text=True,
      timeout=300,
      cwd=pathlib.Path(__file__).parent.parent,
  )
  assert out.returncode == 0 and "done" in out.stdout, out.stderr[-2000:]
  assert "Exception ignored" not in out.stderr, out.stderr[-2000:]


def test_workers_resume_through_grains_orbax_handler(tmp_path):
  """Worker processes: 1 worker gives the 0-worker batches; 2 workers resume exactly."""
  base = dict(pack=True, global_batch_size=2)
  no_workers, _, _ = take(data_config(**base), 6)
  one_worker, _, _ = take(data_config(num_workers=1, **base), 6)
  assert_same_batches(no_workers, one_worker)

  cfg = data_config(num_workers=2, **base)
  expected, _, _ = take(cfg, 8)
  it = iter(TrainDataset(cfg, TokenLayout.of(CFG)))
  handler = grain.checkpoint.CheckpointHandler()
  try:
    assert_same_batches(expected[:4], [next(it) for _ in range(4)])
    handler.save(tmp_path, item=it)
  finally:
    it.close()
  fresh = iter(TrainDataset(cfg, TokenLayout.of(CFG)))
  try:
    handler.restore(tmp_path, item=fresh)
    assert_same_batches(expected[4:], [next(fresh) for _ in range(4)])
  finally:
    fresh.close()
  with pytest.raises(ValueError, match="num_workers="):
    take(
        data_config(num_workers=0, **base),
        1,
        state=json.loads(next(tmp_path.glob("*.json")).read_text()),
    )


def test_stage3_masks_cover_exactly_the_answers_and_their_eos(tmp_path):
  records = good_records(tmp_path, 6)
  manifest = write_manifest(tmp_path, records)
  src = {"chats": dict(type="jsonl", paths=[str(manifest)])}
  tok = byte_tokenizer()
  for stage in (3, 2, 1):
    cfg = data_config(
        stage=stage, sources=src, multimodal_share=1.0, shuffle=False, global_batch_size=1
    )
    batches, _, _ = take(cfg, 6)
    for i, (record, b) in enumerate(zip(records, batches)):
      seg = b["segment_ids"][0] > 0
      weights, targets = b["weights"][0], b["targets"][0]
      assert not weights[~seg].any()  # padding
      supervised = tok.decode(targets[weights > 0], skip_special_tokens=False)
      if stage == 3 and "messages" in record:
        answers = [m["content"] for m in record["messages"] if m["role"] == "assistant"]
        assert supervised == "".join(f" {a}{EOS_TOKEN}" for a in answers), i
      else:  # stages 1, 2 (and documents in 3): every text token, no image token
        np.testing.assert_array_equal(weights > 0, seg & (targets != CFG.image_token_id))
        if "text" in record:
          assert supervised == record["text"].replace(IMAGE_TOKEN, "") + EOS_TOKEN
      assert not (weights[targets == CFG.image_token_id]).any()
      # the images are the release's preprocessing of the files, bit for bit
      for k, path in enumerate(record["images"]):
        img = image_processor.load_image(tmp_path / path)
        want = image_processor.process(img, image_processor.ImageProcessorConfig.for_model(CFG))
        np.testing.assert_array_equal(b["images"][0, k], want)


@pytest.mark.parametrize("system_prompt", ["default", "", "Answer in one word."])
def test_system_prompt_is_configurable(system_prompt):
  """Chats are BOS + the template rendered with data.system_prompt: the released one,
  none, or the given text; documents are untouched."""
  chat = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Red."}]
  cfg = data_config(stage=3, system_prompt=system_prompt)
  encoder = SampleEncoder(
      cfg, TokenLayout.of(CFG), {"s": [{"messages": chat}]}, TEXT, byte_tokenizer()
  )
  sample = encoder(("s", 0))
  system = conversation.SYSTEM_PROMPT if system_prompt == "default" else system_prompt
  text = conversation.render(
      [conversation.Message(**m) for m in chat], template=conversation.Template(system=system)
  )
  assert text.startswith(system + "\n\nUser: " if system else "User: ")
  tok = byte_tokenizer()
  np.testing.assert_array_equal(sample.ids, tok.encode(text))  # BOS + the rendering
  assert tok.decode(sample.ids[sample.loss_mask], skip_special_tokens=False) == (
      f" Red.{EOS_TOKEN}"
  )
  if system_prompt == "default":  # what training always used
    want = conversation.encode_conversation(
        [conversation.Message(**m) for m in chat], tok, TokenLayout.of(CFG)
    )
    np.testing.assert_array_equal(sample.ids, want.ids)
  assert data_config(system_prompt=system_prompt).fingerprint()["system_prompt"] == system_prompt
  with pytest.raises(ConfigError, match="data.system_prompt"):
    data_config(system_prompt=f"Look: {IMAGE_TOKEN}")


def _bad_manifest(tmp_path):
  good = good_records(tmp_path, 3)
  (tmp_path / "corrupt.png").write_bytes(np.random.default_rng(0).bytes(500))
  ok = write_image(tmp_path / "ok.png", 9)
  (tmp_path / "truncated.png").write_bytes((tmp_path / ok).read_bytes()[:100])
  bad = [
      {"images": ["missing.png"], "text": f"{IMAGE_TOKEN}gone"},  # bad_image
      {"images": ["corrupt.png"], "text": f"{IMAGE_TOKEN}noise"},  # bad_image
      {"images": ["truncated.png"], "text": f"{IMAGE_TOKEN}cut"},  # bad_image
      {"images": [ok], "text": f"{IMAGE_TOKEN}" + "long " * 200},  # too_long
      '{"images": ["ok.png"], "text": ',  # malformed JSON
      {"images": [ok, ok], "text": f"{IMAGE_TOKEN} one placeholder"},  # malformed
      {"images": [ok] * 3, "text": IMAGE_TOKEN * 3},  # too_many_images
      {"text": "no image here"},  # modality
      {"images": [ok], "text": ""},  # empty
  ]
  records = bad[:3] + [good[0]] + bad[3:6] + [good[1]] + bad[6:] + [good[2]]
  return write_manifest(tmp_path, records), len(good)


def test_bad_samples_are_counted_logged_and_skipped_or_raise(tmp_path, caplog):
  manifest, n_good = _bad_manifest(tmp_path)
  src = {"files": dict(type="jsonl", paths=[str(manifest)])}
  cfg = data_config(sources=src, multimodal_share=1.0, shuffle=False, global_batch_size=1)
  with caplog.at_level(logging.WARNING):
    batches, _, metrics = take(cfg, n_good)
  assert metrics["data/samples/files"] == n_good
  assert {k: v for k, v in metrics.items() if k.startswith("data/skipped/")} == {
      "data/skipped/bad_image": 3,
      "data/skipped/too_long": 1,
      "data/skipped/malformed": 2,
      "data/skipped/too_many_images": 1,
      "data/skipped/modality": 1,
      "data/skipped/empty": 1,
  }
  assert metrics["data/skipped"] == 9
  log = caplog.text
  for needle in (
      "data.jsonl line 1",
      "missing.png",
      "corrupt.png",
      "truncated.png",
      "line 7",
      "too_long",
      "not valid JSON",
  ):
    assert needle in log, needle
  for b in batches:  # nothing bad became a zero image
    assert b["num_images"][0] >= 1
    assert valid_images(b).reshape(len(valid_images(b)), -1).std(1).min() > 0
  strict = data_config(
      sources=src, multimodal_share=1.0, shuffle=False, global_batch_size=1, strict=True
  )
  with pytest.raises(BadSampleError, match=r"data.jsonl line 1.*missing.png"):
    take(strict, 1)


def test_skip_warnings_are_rate_limited_over_a_long_run(tmp_path, caplog):
  """Bad records come round every epoch: per reason the first 5 skips are named (file
  line), then only counts at 10, 100, ...; the metrics still count every skip."""
  write_image(tmp_path / "ok.png", 0)
  manifest = write_manifest(
      tmp_path,
      [
          good_records(tmp_path, 1)[0],
          {"images": ["missing.png"], "text": f"{IMAGE_TOKEN}gone"},  # bad_image
          '{"images": ["ok.png"], "text": ',
      ],
  )  # malformed
  src = {"f": dict(type="jsonl", paths=[str(manifest)])}
  cfg = data_config(sources=src, multimodal_share=1.0, shuffle=False, global_batch_size=1)
  with caplog.at_level(logging.WARNING):
    _, _, metrics = take(cfg, 151)  # the 151st good record follows the 150th bad pair
  assert metrics["data/skipped/bad_image"] == metrics["data/skipped/malformed"] == 150
  skips = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped")]
  assert len(skips) == 2 * (5 + 2)  # 5 named, then at 10 and 100, for each reason
  named = [m for m in skips if "data.jsonl line 2" in m]
  assert len(named) >= 5 and "missing.png" in named[0]
  assert sum("data.jsonl line 3" in m for m in skips) >= 5
  assert sum("skipped 100 samples for 'bad_image'" in m for m in skips) == 1


def test_a_state_is_refused_under_another_data_layout():
  cfg = data_config(pack=True)
  _, state, _ = take(cfg, 3)
  for change, field in (
      (dict(global_batch_size=8), "data.global_batch_size"),
      (dict(seed=5), "data.seed"),
      (dict(pack=False), "data.pack"),
      (dict(seq_len=500), "data.seq_len"),
  ):
    with pytest.raises(ValueError, match=field):
      take(data_config(**{"pack": True, **change}), 1, state=state)
  with pytest.raises(ValueError, match="host layout"):
    take(cfg, 1, state=state, process_index=0, process_count=2)
  take(data_config(pack=True, multimodal_share=0.9), 1, state=state)  # schedules may change


@pytest.mark.parametrize(
    "reason,record",
    [
        ("too_long", {"images": ["ok.png"], "text": IMAGE_TOKEN + "x" * 600}),
        ("bad_image", {"images": ["corrupt.png"], "text": IMAGE_TOKEN + "x"}),
        ("malformed", '{"text": 3}'),
        (
            "malformed",
            '{"images": ["ok.png"], "messages": [{"role": 5, "content": "<image_placeholder>"}]}',
        ),
        ("malformed", '{"images": ["ok.png"], "text": "<image_placeholder>\\ud800"}'),
    ],
)
def test_strict_mode_raises_on_the_first_bad_sample(tmp_path, reason, record):
  write_image(tmp_path / "ok.png", 0)
  (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
  manifest = write_manifest(tmp_path, [good_records(tmp_path, 1)[0], record])
  src = {"f": dict(type="jsonl", paths=[str(manifest)])}
  for strict in (False, True):
    cfg = data_config(
        sources=src, multimodal_share=1.0, shuffle=False, global_batch_size=1, strict=strict
    )
    if strict:
      with pytest.raises(BadSampleError, match=rf"f\[1\] \(data.jsonl line 2\): {reason}"):
        take(cfg, 2)
    else:
      _, _, metrics = take(cfg, 2)
      assert metrics[f"data/skipped/{reason}"] == 1


def test_all_bad_data_fails_loudly_instead_of_spinning():
  cfg = data_config(seq_len=8, max_consecutive_skips=50)  # every sample is longer
  with pytest.raises(ValueError, match="50 bad samples in a row.*too_long"):
    take(cfg, 1)


def test_array_record_gives_the_jsonl_batches(tmp_path):
  manifest = write_manifest(
      tmp_path, good_records(tmp_path, 6) + [{"images": ["nowhere.png"], "text": f"{IMAGE_TOKEN}x"}]
  )
  out = tmp_path / "ar" / "data.array_record"
  assert convert(manifest, out) == {"written": 6, "skipped": 1}
  with pytest.raises(ValueError, match="nowhere.png"):
    convert(manifest, tmp_path / "strict.array_record", strict=True)
  from_jsonl = data_config(
      sources={"d": dict(type="jsonl", paths=[str(manifest)])},
      multimodal_share=1.0,
      shuffle=False,
      stage=3,
  )
  from_ar = data_config(
      sources={"d": dict(type="array_record", paths=[str(out)])},
      multimodal_share=1.0,
      shuffle=False,
      stage=3,
  )
  # the manifest's 7th record is skipped, so compare within the first epoch
  assert_same_batches(take(from_jsonl, 1)[0], take(from_ar, 1)[0])
  sharded = convert(manifest, tmp_path / "sh" / "d.array_record", shards=2)
  assert sharded == {"written": 6, "skipped": 1}
  assert len(list((tmp_path / "sh").glob("d-0000?-of-00002.array_record"))) == 2


def test_packed_rows_never_attend_across_samples_and_match_unpacked_logits():
  cfg = data_config(
      pack=True,
      seq_len=320,
      max_images_per_row=4,
      multimodal_share=1.0,
      global_batch_size=2,
      sources={"s": dict(type="synthetic", synthetic_kinds=["caption"])},
  )
  batches, _, _ = take(cfg, 3)
  batch = next(b for b in batches if (b["segment_ids"].max(1) >= 2).all())
  seg, pos = batch["segment_ids"], batch["positions"]
  # 1. the mask the model builds: causal and within a segment, never across
  slots = np.broadcast_to(np.arange(seg.shape[1]), seg.shape)
  mask = np.asarray(make_mask(slots, slots, causal=True, q_segment=seg, k_segment=seg))[:, 0]
  same_segment = seg[:, :, None] == seg[:, None, :]
  assert not (mask & ~same_segment).any()
  causal = np.tril(np.ones(mask.shape[1:], bool))
  np.testing.assert_array_equal(mask, same_segment & causal)
  # 2. the forward pass: each segment's logits are the sample's logits run alone
  params = init_params(CFG, jax.random.key(0))
  model = DeepseekVL(CFG)
  images = valid_images(batch)
  out = np.asarray(
      model.apply({"params": params}, batch["inputs"], images, segment_ids=seg, positions=pos)[
          "logits"
      ]
  )
  k, at = CFG.num_image_tokens, 0
  for r in range(seg.shape[0]):
    for s in _segments(seg[r]):
      where = seg[r] == s
      ids = batch["inputs"][r][where]
      n = int((ids == CFG.image_token_id).sum()) // k
      alone = model.apply({"params": params}, ids[None], images[at : at + n] if n else None)
      at += n
      np.testing.assert_allclose(
          out[r][where], np.asarray(alone["logits"])[0], atol=2e-5, rtol=1e-5
      )
      np.testing.assert_array_equal(pos[r][where], np.arange(where.sum()))
  assert at == len(images)


def test_config_errors_name_the_field():
  with pytest.raises(ConfigError, match="'data': unknown field"):
    data_config(sequence_length=3)
  with pytest.raises(ConfigError, match="data.sources.words.weight"):
    data_config(
        sources={
            "words": dict(type="synthetic", modality="text", weight=0, synthetic_kinds=["text"])
        },
        multimodal_share=0.0,
    )
  with pytest.raises(ConfigError, match="data.sources.x.synthetic_kinds"):
    data_config(
        sources={"x": dict(type="synthetic", modality="text", synthetic_kinds=["caption"])},
        multimodal_share=0.0,
    )
  with pytest.raises(ConfigError, match="no source has modality 'text'"):
    data_config(
        sources={"x": dict(type="synthetic", synthetic_kinds=["caption"])},
        schedule="warmup",
        warmup_steps=10,
        multimodal_share=1.0,
    )
  with pytest.raises(ConfigError, match="data.stage"):
    data_config(stage=4)
  with pytest.raises(FileNotFoundError, match="absent.jsonl"):
    take(
        data_config(
            sources={"f": dict(type="jsonl", paths=["absent.jsonl"])}, multimodal_share=1.0
        ),
        1,
    )


def test_builtin_byte_tokenizer_round_trips():
  tok = byte_tokenizer()
  text = f"héllo {IMAGE_TOKEN} wörld{EOS_TOKEN}"
  ids = tok.encode(text)
  assert ids[0] == CFG.bos_token_id and ids[-1] == CFG.eos_token_id
  assert ids.count(CFG.image_token_id) == 1 and max(ids) < CFG.llm.vocab_size
  assert tok.decode(ids, skip_special_tokens=False) == "<｜begin▁of▁sentence｜>" + text
  assert tok.decode(ids) == "héllo  wörld"


def test_the_tiny_configs_data_block_runs():
  from dsvl_jax.config.files import load_config
  from dsvl_jax.data.config import DataConfig

  for family in ("siglip", "hybrid"):
    config = load_config(f"configs/tiny.py:{family}")
    cfg = DataConfig.from_dict(config.data).validate()
    it = iter(TrainDataset(cfg, TokenLayout.of(tiny_config(family)), 0, 1))
    try:
      batches = [next(it) for _ in range(3)]
    finally:
      it.close()
    assert [b["modality"] for b in batches] == [TEXT] * 3  # the warm-up starts with text
    assert batches[0]["inputs"].shape == (cfg.global_batch_size, cfg.seq_len)
