"""The LLM judge end to end: this project's own server (a real HTTP server on loopback,
tiny random model) grades MM-Vet and rescues MMBench answers that the matching rule
cannot read, through `--config.mode=eval` as a user runs it."""

from __future__ import annotations

import json

import pytest
from benchmark_fixtures import mmbench as mmb_fixture
from benchmark_fixtures import mmvet as mmvet_fixture
from serve_fixtures import running_server, serve_config

from dsvl_jax.config.files import load_config
from dsvl_jax.config.schema import ConfigError
from dsvl_jax.eval import run as eval_run
from dsvl_jax.eval.benchmarks import choice, mmbench, mmvet
from dsvl_jax.eval.judge import Judge, JudgeError
from dsvl_jax.infer.chat_config import STOP_STRINGS
from dsvl_jax.infer.generate import Generator
from dsvl_jax.infer.load import load_model
from dsvl_jax.infer.sampling import SamplingConfig
from dsvl_jax.infer.streaming import cut_at_stop
from dsvl_jax.processor.conversation import Message, encode_conversation, template_for

KEY = "judge-key-42"


@pytest.fixture(scope="module")
def judge_server():
  mp = pytest.MonkeyPatch()
  mp.setenv("DSVL_JUDGE_TEST_KEY", KEY)
  # plain greedy: what the judge asks for (temperature 0) is then Generator.generate
  # MM-Vet's grader prompt is ~2,800 byte tokens: a longer context than the tiny preset's
  # (unscaled RoPE: the limit has no numeric effect)
  config = serve_config(api_key_env="DSVL_JUDGE_TEST_KEY", repetition_penalty=1.0, max_len=4096)
  config.model.llm.max_position_embeddings = 8192
  _, params = load_model(config, config.serve, "serve")  # the init the server made
  with running_server(config) as (url, service):
    gen = Generator(service.cfg, params, prompt_bucket=config.serve.prompt_bucket)
    yield url, service, gen
  mp.undo()


def _greedy(service, gen, prompt: str, max_tokens: int) -> str:
  """The server's answer to one user message at temperature 0, computed directly."""
  enc = encode_conversation(
      [Message("user", prompt)],
      service.tokenizer,
      service.cfg,
      add_generation_prompt=True,
      template=template_for("default"),
  )
  sampling = SamplingConfig(temperature=0, max_new_tokens=max_tokens, stop_strings=STOP_STRINGS)
  tokens = gen.generate(enc.ids[None], sampling=sampling, decode=service.tokenizer.decode).tokens
  return cut_at_stop(service.tokenizer.decode(tokens[0]), STOP_STRINGS).strip()


def test_the_judge_gets_our_servers_answer_and_fails_in_one_line(judge_server):
  url, service, gen = judge_server
  judge = Judge(url + "/v1", service.model_name, KEY)
  assert judge("Is 2 + 2 = 4? Answer yes or no.", max_tokens=6) == _greedy(
      service, gen, "Is 2 + 2 = 4? Answer yes or no.", 6
  )
  assert judge.name == f"{service.model_name} @ {url}/v1"
  # a refused request is not retried: a wrong key or model will not improve
  for bad, code in (
      (Judge(url + "/v1", service.model_name, "wrong"), "401"),
      (Judge(url + "/v1", "no-such-model", KEY), "404"),
  ):
    with pytest.raises(JudgeError, match=code) as e:
      bad("hi", max_tokens=2)
    assert "\n" not in str(e.value) and bad.calls == 0
  # an endpoint that is down is retried, then named
  down = Judge("http://127.0.0.1:9/v1", "m", retries=2, pause_s=0.01)
  with pytest.raises(JudgeError, match="no answer after 3 tries"):
    down("hi", max_tokens=2)


def _config(sets, outdir_judge=None, **eval_fields):
  c = load_config("configs/tiny.py")
  c.mode = "eval"
  c.eval.tokenizer = "builtin:bytes"
  c.eval.sets = sets
  c.eval.update(
      dict(max_new_tokens=5, batch_size=4, length_bucket=64, progress=False, system_prompt="")
  )
  c.eval.update(eval_fields)
  return c


def test_mmvet_is_graded_by_our_server_through_the_eval_mode(judge_server, tmp_path):
  """Every MM-Vet answer is graded by the server with the official grader prompt: the
  first (temperature 0) reply of each item is the server's greedy answer to exactly
  that prompt, the score follows the official rule from the replies, and the summary
  names the judge. A rerun with another judge refuses to reuse the grades."""
  url, service, gen = judge_server
  path = mmvet_fixture.build(tmp_path / "mmvet")
  sets = {"mmvet": f"mmvet:{path}"}
  with pytest.raises(ConfigError, match="judge") as e:  # graded by a judge: none given
    eval_run.run(_config(sets), str(tmp_path / "out"))
  assert "\n" not in str(e.value)
  judged = dict(
      judge_url=url + "/v1",
      judge_model=service.model_name,
      judge_key_env="DSVL_JUDGE_TEST_KEY",
      max_items=3,  # each is graded by up to six ~2,800-token requests
  )
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("DSVL_JUDGE_TEST_KEY", KEY)
    result = eval_run.run(_config(sets, **judged), str(tmp_path / "out"))["mmvet"]
    items = {it.id: it for it in mmvet.load(path)[:3]}
    rows = [json.loads(x) for x in (tmp_path / "out" / "mmvet.predictions.jsonl").open()]
    assert {r["id"] for r in rows} == set(items) and result["num_items"] == len(items)
    for row in rows:
      item, calls = items[row["id"]], row["judge"]["calls"]
      prompt = mmvet.grader_prompt(item, row["output"])
      # the temperature-0 calls (the first, and the first retry) are the server's greedy
      # answers to exactly the official prompt (+ the official retry suffix)
      assert calls[0]["reply"] == _greedy(service, gen, prompt, mmvet.GRADER_MAX_TOKENS)
      if len(calls) > 1:
        assert calls[1]["temperature"] == 0.0 and calls[1]["retry"]
        retry = _greedy(service, gen, prompt + mmvet.RETRY_SUFFIX, mmvet.GRADER_MAX_TOKENS)
        assert calls[1]["reply"] == retry
      # the score is the first readable reply's, or 0.0 after the official five tries
      readable = [mmvet.read_score(c["reply"]) for c in calls[: mmvet.MAX_TRIES]]
      expected = next((x for x in readable if x is not None), 0.0)
      assert row["parsed"] == expected and row["judge"]["gave_up"] == (len(calls) > mmvet.MAX_TRIES)
    assert result["judge"] == f"{service.model_name} @ {url}/v1"
    assert result["judged"] == len(items) and result["unparsed"] == 0
    expected_total = 100 * sum(r["parsed"] for r in rows) / len(rows)
    assert result["total"] == pytest.approx(expected_total, abs=0.05)
    # resumed: nothing is answered or graded again
    again = eval_run.run(_config(sets, **judged), str(tmp_path / "out"))["mmvet"]
    assert again["generated_now"] == 0 and again["total"] == result["total"]
    other = dict(judged, judge_model=service.model_name + "-other")
    with pytest.raises(ConfigError, match="judge"):
      eval_run.run(_config(sets, **other), str(tmp_path / "out"))


def test_mmbench_answers_the_rule_cannot_read_go_to_our_server(judge_server, tmp_path):
  """A tiny random model's answers are no option letter: each goes to the judge with
  VLMEvalKit's matching prompt, up to three times, and the row logs the replies."""
  url, service, gen = judge_server
  path = mmb_fixture.build(tmp_path / "mmb")
  sets = {"mmb": f"mmbench:{path}"}
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("DSVL_JUDGE_TEST_KEY", KEY)
    result = eval_run.run(
        _config(
            sets,
            max_items=4,
            judge_url=url + "/v1",
            judge_model=service.model_name,
            judge_key_env="DSVL_JUDGE_TEST_KEY",
            judge_max_tokens=16,  # VLMEvalKit asks up to 2048; the tiny server allows 64
        ),
        str(tmp_path / "out"),
    )["mmb"]
  rows = [json.loads(x) for x in (tmp_path / "out" / "mmb.predictions.jsonl").open()]
  asked = [r for r in rows if "judge" in r]
  assert asked and result["judged"] == sum(bool(r["judge"].get("judged")) for r in rows)
  items = {it.id: it for it in mmbench.load(path)}
  for row in asked:
    replies = row["judge"]["replies"]
    assert 1 <= len(replies) <= 3
    item = items[row["id"]]
    prompt = choice.judge_prompt(item.question, item.options, row["output"])
    assert replies[0] == _greedy(service, gen, prompt, 16)  # capped by eval.judge_max_tokens
    # the first reply can_infer reads, else VLMEvalKit's random pick after three
    read = [choice.can_infer(r, choice.item_choices(item.options)) for r in replies]
    expected = next((x for x in read if x), None) or choice.random_pick(item)
    assert row["parsed"] == expected
    assert bool(row["judge"].get("random_pick")) == (not any(read) and len(replies) == 3)
  picks = sum(bool(r["judge"].get("random_pick")) for r in asked)
  assert result.get("fallbacks", 0) == picks
  assert result["judge"] == f"{service.model_name} @ {url}/v1 (max_tokens <= 16)"
