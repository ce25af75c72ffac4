"""curl against a live `sieve serve`, as the README shows it: a completion, an SSE stream that
ends with `data: [DONE]`, /health, /version, /tokenize, /detokenize and /metrics."""

import json
import os
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sieve_server import MODEL, SieveServer  # noqa: E402

server = None


def setUpModule():
    global server
    server = SieveServer(grpc=False)


def tearDownModule():
    assert server.stop() == 0, server.log()


def curl(*args):
    result = subprocess.run(["curl", "-sS", "--max-time", "120", *args], capture_output=True,
                            text=True, check=True)
    return result.stdout


@unittest.skipUnless(shutil.which("curl"), "curl is not installed")
class Curl(unittest.TestCase):
    def test_completion(self):
        body = json.dumps({"model": MODEL, "prompt": "Hello", "max_tokens": 4, "temperature": 0})
        out = json.loads(curl(server.url + "/v1/completions", "-H",
                              "Content-Type: application/json", "-d", body))
        self.assertEqual(out["object"], "text_completion")
        self.assertTrue(out["choices"][0]["text"])
        self.assertLessEqual(out["usage"]["completion_tokens"], 4)
        self.assertEqual(out["usage"]["prompt_tokens"], json.loads(curl(
            server.url + "/tokenize", "-d", json.dumps({"prompt": "Hello"})))["count"])

    def test_sse_stream_ends_with_done(self):
        body = json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5,
                           "stream": True})
        out = curl("-N", server.url + "/v1/chat/completions", "-H",
                   "Content-Type: application/json", "-d", body)
        events = [line[6:] for line in out.split("\n") if line.startswith("data: ")]
        self.assertEqual(events[-1], "[DONE]")
        chunks = [json.loads(e) for e in events[:-1]]
        self.assertTrue(all(c["object"] == "chat.completion.chunk" for c in chunks))
        self.assertTrue(chunks[-1]["choices"][0]["finish_reason"])
        self.assertTrue(out.endswith("data: [DONE]\n\n"))

    def test_health_version_tokenize_detokenize_metrics(self):
        self.assertEqual(curl("-o", "/dev/null", "-w", "%{http_code}", server.url + "/health"),
                         "200")
        self.assertIn("version", json.loads(curl(server.url + "/version")))
        tokens = json.loads(curl(server.url + "/tokenize", "-d",
                                 json.dumps({"prompt": "Hello world"})))
        self.assertEqual(tokens["count"], len(tokens["tokens"]))
        text = json.loads(curl(server.url + "/detokenize", "-d",
                               json.dumps({"tokens": tokens["tokens"]})))["prompt"]
        self.assertTrue(text.endswith("Hello world"))
        metrics = curl(server.url + "/metrics")
        for name in ("sieve:num_requests_running", "sieve:num_requests_waiting",
                     "sieve:kv_cache_usage_perc", "sieve:kv_cache_pages_used",
                     "sieve:kv_cache_pages_total", "sieve:num_preemptions_total",
                     "sieve:prompt_tokens_total", "sieve:generation_tokens_total",
                     "sieve:prefix_cache_hits_total", "sieve:prefix_cache_queries_total",
                     "sieve:time_to_first_token_seconds_bucket",
                     "sieve:inter_token_latency_seconds_bucket",
                     "sieve:e2e_request_latency_seconds_bucket",
                     "sieve:request_queue_time_seconds_bucket", "sieve:request_success_total"):
            self.assertIn(name, metrics)


if __name__ == "__main__":
    unittest.main()
