"""Start-up and server limits against live `sieve serve` processes: the default bind (loopback,
both servers) and the warning when exposed without a key; a KV cache too small for the model's
context (a loud warning and max_model_len cut to what fits, or an error for an explicit
--max-model-len), requests that could never fit it answered 400 / INVALID_ARGUMENT before any
work; and --max-connections answering 503 instead of dropping the connection."""

import os
import socket
import subprocess
import sys
import time
import unittest

import grpc
import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sieve_server import BINARY, SieveServer, grpc_modules  # noqa: E402

pb, rpc = grpc_modules()
PARAGRAPH = "The old town sits on the river, and its market fills the square every week. "


class SmallKvCache(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # 0.01 GiB: 29 pages of 8 tokens on the CPU backend, 232 tokens; no --host: loopback.
        cls.server = SieveServer("--kv-cache-gib", "0.01", host=None)

    @classmethod
    def tearDownClass(cls):
        assert cls.server.stop() == 0, cls.server.log()

    def test_binds_loopback_by_default_without_a_warning_about_exposure(self):
        log = self.server.log()
        self.assertRegex(log, r"on http://127\.0\.0\.1:\d+ \(OpenAI API\), grpc 127\.0\.0\.1:\d+")
        self.assertNotIn("without --api-key", log)

    def test_the_context_is_cut_to_the_cache_loudly(self):
        self.assertIn("[warning] the model's max seq len (8192) is larger than the 232 tokens "
                      "the KV cache can hold", self.server.log())
        models = requests.get(self.server.url + "/v1/models", timeout=10).json()
        self.assertEqual(models["data"][0]["max_model_len"], 232)

    def test_requests_that_cannot_fit_are_a_400_before_any_work(self):
        server = self.server
        prompt_tokens = server.metric("sieve:prompt_tokens_total")
        url = server.url + "/v1/completions"
        long_prompt = PARAGRAPH * 20  # ~300 tokens
        r = requests.post(url, json={"prompt": long_prompt, "max_tokens": 4}, timeout=10)
        self.assertEqual(r.status_code, 400, r.text)
        self.assertEqual(r.json()["error"]["param"], "prompt")
        r = requests.post(url, json={"prompt": PARAGRAPH * 6, "max_tokens": 300}, timeout=10)
        self.assertEqual(r.status_code, 400, r.text)
        self.assertEqual(r.json()["error"]["param"], "max_tokens")
        r = requests.post(server.url + "/v1/chat/completions", timeout=10, json={
            "messages": [{"role": "user", "content": long_prompt}]})
        self.assertEqual(r.status_code, 400, r.text)
        self.assertEqual(r.json()["error"]["param"], "messages")
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = rpc.SieveStub(channel)
            for text, max_tokens, field in ((long_prompt, 4, "prompt"),
                                            (PARAGRAPH * 6, 300, "max_tokens")):
                with self.assertRaises(grpc.RpcError) as e:
                    list(stub.Generate(pb.GenerateRequest(
                        text=text, sampling=pb.SamplingParams(max_tokens=max_tokens)),
                        timeout=10))
                self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
                self.assertTrue(e.exception.details().startswith(field), e.exception.details())
        # Nothing ran: no prompt token was computed, nothing is held.
        self.assertEqual(server.metric("sieve:prompt_tokens_total"), prompt_tokens)
        self.assertEqual(server.metric("sieve:kv_cache_pages_used"), 0)
        # What fits still runs, to the end (chat's default max_tokens is the rest of the context).
        r = requests.post(url, json={"prompt": PARAGRAPH * 6, "max_tokens": 20, "min_tokens": 20,
                                     "ignore_eos": True}, timeout=120)
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.json()["choices"][0]["finish_reason"], "length")

    def test_an_explicit_max_model_len_past_the_cache_is_a_start_up_error(self):
        result = subprocess.run(
            [BINARY, "serve", "--model", "default", "--port", "0", "--grpc-port", "-1",
             "--kv-cache-gib", "0.01", "--max-model-len", "8192"],
            capture_output=True, text=True, timeout=120)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("max_model_len 8192 is larger than the 232 tokens the KV cache can hold",
                      result.stderr)


class MaxConnections(unittest.TestCase):
    def test_connections_past_the_limit_get_a_503_and_exposure_is_warned(self):
        server = SieveServer("--max-connections", "2", grpc=False, host="0.0.0.0")
        held = []
        try:
            self.assertIn("listening on 0.0.0.0 without --api-key", server.log())
            for _ in range(2):
                held.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
            time.sleep(0.3)  # both accepted
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                reply = b""
                while True:
                    data = s.recv(65536)
                    if not data:
                        break
                    reply += data
            self.assertTrue(reply.startswith(b"HTTP/1.1 503"), reply)
            self.assertIn(b"--max-connections", reply)
            for s in held:
                s.close()
            held = []
            self.assertTrue(server.wait_for(lambda: requests.get(
                server.url + "/health", timeout=10).status_code == 200, timeout=10))
        finally:
            for s in held:
                s.close()
            self.assertEqual(server.stop(), 0)


if __name__ == "__main__":
    unittest.main()
