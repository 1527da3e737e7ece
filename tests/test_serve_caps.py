"""The serving caps hold in memory: a decompression-bomb PNG, bodies over
serve.max_body_bytes (with Content-Length and chunked), a 20 MB text under it (the text
bound) and 32 MB of empty JSON objects under it (the value count) are refused while the
server's peak RSS grows by less than 100 MB.

The server runs in a child process (experiments/bench_serve.py's, whose --hostile part
prints the same measurements with their times), so the client's 50 MB bodies are not
counted. Times are the benchmark's to report, not asserted here.
"""

import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # experiments/ is no package under tests/
  sys.path.insert(0, str(ROOT))

from experiments.bench_serve import ServerProcess, content_of, hostile_requests, measure  # noqa: E402

LIMIT_MB = 100
CASES = (
    "12000x12000 PNG",
    "50 MB text, Content-Length",
    "50 MB text, chunked",
    "20 MB text",
    "32 MB of [{}, {}, ...] in stop",
)


@pytest.fixture(scope="module")
def requests():
  return hostile_requests()


@pytest.fixture(scope="module")
def server():
  with ServerProcess() as s:  # the default caps: 50,000,000 pixels, 32 MiB bodies
    yield s


@pytest.mark.parametrize("name", CASES)
def test_refused_within_memory(server, requests, name):
  request, expected = requests[name]
  outcome = measure(server, content_of(request))
  assert (outcome.status, outcome.code) == expected, f"{outcome}\n{server.output()}"
  assert outcome.growth_mb < LIMIT_MB, outcome
  if name == "20 MB text":  # held once at least: the measurement sees what the server holds
    assert outcome.growth_mb >= 19, outcome
