"""Every bad input the issue lists gets a 400 with an OpenAI error object naming the field, and
nothing else happens: the server keeps serving, nothing is left in flight, no page is held.
Also: unknown routes, methods, the body size limit, and --max-queue answering 503 at once."""

import json
import os
import socket
import sys
import threading
import unittest

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sieve_server import MODEL, SieveServer  # noqa: E402

server = None
LONG = "word " * 9000  # past the default model's 8192-token context

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
USER = [{"role": "user", "content": "Hi"}]

# (name, path, body as a dict or raw bytes, expected param or None)
CASES = [
    ("malformed_json", COMPLETIONS, b'{"prompt": "x",', None),
    ("invalid_utf8", COMPLETIONS, b'{"prompt": "\xc3\x28"}', None),
    ("body_not_object", COMPLETIONS, b"[1]", None),
    ("missing_prompt", COMPLETIONS, {"max_tokens": 2}, "prompt"),
    ("missing_messages", CHAT, {"model": MODEL}, "messages"),
    ("empty_messages", CHAT, {"messages": []}, "messages"),
    ("unknown_role", CHAT, {"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ("prompt_wrong_type", COMPLETIONS, {"prompt": {"text": "x"}}, "prompt"),
    ("max_tokens_wrong_type", COMPLETIONS, {"prompt": "x", "max_tokens": "8"}, "max_tokens"),
    ("temperature_wrong_type", COMPLETIONS, {"prompt": "x", "temperature": [1]}, "temperature"),
    ("stream_wrong_type", CHAT, {"messages": USER, "stream": 1}, "stream"),
    ("max_tokens_zero", COMPLETIONS, {"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ("max_tokens_past_context", COMPLETIONS, {"prompt": "x", "max_tokens": 9000}, "max_tokens"),
    ("max_completion_tokens_past_context", CHAT,
     {"messages": USER, "max_completion_tokens": 9000}, "max_completion_tokens"),
    ("prompt_past_context", COMPLETIONS, {"prompt": LONG, "max_tokens": 2}, "prompt"),
    ("chat_past_context", CHAT, {"messages": [{"role": "user", "content": LONG}]}, "messages"),
    ("temperature_negative", COMPLETIONS, {"prompt": "x", "temperature": -0.5}, "temperature"),
    ("top_p_zero", COMPLETIONS, {"prompt": "x", "top_p": 0}, "top_p"),
    ("top_p_above_one", CHAT, {"messages": USER, "top_p": 1.01}, "top_p"),
    ("top_k_below_minus_one", COMPLETIONS, {"prompt": "x", "top_k": -5}, "top_k"),
    ("n_zero", COMPLETIONS, {"prompt": "x", "n": 0}, "n"),
    ("logprobs_out_of_range", COMPLETIONS, {"prompt": "x", "logprobs": 99}, "logprobs"),
    ("top_logprobs_out_of_range", CHAT,
     {"messages": USER, "logprobs": True, "top_logprobs": 50}, "top_logprobs"),
    ("unknown_model", COMPLETIONS, {"model": "gpt-4o", "prompt": "x"}, "model"),
    ("token_id_negative", COMPLETIONS, {"prompt": [1, -7]}, "prompt"),
    ("token_id_past_vocab", COMPLETIONS, {"prompt": [[1, 2], [49152]]}, "prompt"),
    ("unknown_compression_method", COMPLETIONS,
     {"prompt": "x", "compression": {"method": "nope"}}, "compression.method"),
    ("unknown_compression_parameter", CHAT,
     {"messages": USER, "compression": {"method": "none", "params": {"window": 8}}},
     "compression.params.window"),
    ("unknown_compression_field", COMPLETIONS,
     {"prompt": "x", "compression": {"method": "none", "budgett": 8}}, "compression.budgett"),
    ("compression_keep_ratio", COMPLETIONS,
     {"prompt": "x", "compression": {"keep_ratio": 2}}, "compression.keep_ratio"),
    ("compression_kv_format", COMPLETIONS,
     {"prompt": "x", "compression": {"kv_format": "int2"}}, "compression.kv_format"),
]


def setUpModule():
    global server
    server = SieveServer("--max-request-bytes", "65536", grpc=False)


def tearDownModule():
    assert server.stop() == 0, server.log()


def post(path, body, **kwargs):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(server.url + path, data=data,
                         headers={"Content-Type": "application/json"}, timeout=60, **kwargs)


class BadInputs(unittest.TestCase):
    def test_every_bad_input_is_a_400_naming_the_field(self):
        for name, path, body, param in CASES:
            with self.subTest(name):
                r = post(path, body)
                self.assertEqual(r.status_code, 400, r.text)
                error = r.json()["error"]
                self.assertEqual(set(error), {"message", "type", "param", "code"})
                self.assertEqual(error["type"], "invalid_request_error")
                self.assertEqual(error["param"], param, error["message"])
                self.assertTrue(error["message"])
        # Nothing else happened: nothing in flight, no page held, and the server still serves.
        self.assertEqual(server.metric("sieve:num_requests_in_flight"), 0)
        self.assertEqual(server.metric("sieve:kv_cache_pages_used"), 0)
        self.assertGreaterEqual(server.metric("sieve:request_rejected_total",
                                              code="invalid_argument"), len(CASES))
        ok = post(COMPLETIONS, {"prompt": "Hi", "max_tokens": 2})
        self.assertEqual(ok.status_code, 200, ok.text)

    def test_streaming_requests_are_rejected_before_any_event(self):
        r = post(CHAT, {"messages": USER, "stream": True, "temperature": -1})
        self.assertEqual(r.status_code, 400)
        self.assertEqual(r.json()["error"]["param"], "temperature")

    def test_body_over_the_limit_is_a_400(self):
        r = post(COMPLETIONS, {"prompt": "x" * 100000})
        self.assertEqual(r.status_code, 400)
        self.assertIn("exceeds the limit", r.json()["error"]["message"])

    def test_unknown_routes_and_methods(self):
        self.assertEqual(requests.get(server.url + "/v2/nothing", timeout=10).status_code, 404)
        self.assertEqual(requests.get(server.url + COMPLETIONS, timeout=10).status_code, 405)
        self.assertEqual(requests.post(server.url + "/health", timeout=10).status_code, 405)

    def test_garbage_on_the_socket_does_not_hurt(self):
        for garbage in (b"\x00\xff" * 100 + b"\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                        b"POST /v1/completions HTTP/1.1\r\nContent-Length: -1\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
                s.sendall(garbage)
                reply = s.recv(4096)
                self.assertTrue(reply == b"" or reply.startswith(b"HTTP/1.1 4"), reply)
        self.assertEqual(requests.get(server.url + "/health", timeout=10).status_code, 200)


class MaxQueue(unittest.TestCase):
    def test_past_max_queue_is_a_503_at_once(self):
        # One sequence at a time and one waiting request: a third concurrent request is refused.
        busy = SieveServer("--max-num-seqs", "1", "--max-queue", "1", grpc=False)
        try:
            body = {"prompt": "Tell me a story.", "max_tokens": 64, "min_tokens": 64,
                    "ignore_eos": True, "stream": True}
            first = requests.post(busy.url + COMPLETIONS, json=body, stream=True, timeout=120)
            lines = first.iter_lines()
            next(line for line in lines if line.startswith(b"data: "))  # it is running
            results = {}

            def waiting():
                results["second"] = requests.post(busy.url + COMPLETIONS, json=body, timeout=300)

            second = threading.Thread(target=waiting)
            second.start()
            busy.wait_for(lambda: busy.metric("sieve:num_requests_in_flight") == 2)
            third = requests.post(busy.url + COMPLETIONS, json=body, timeout=60)
            self.assertEqual(third.status_code, 503, third.text)
            # Refused at once: the two others are still in flight, it did not wait behind them.
            self.assertEqual(busy.metric("sieve:num_requests_in_flight"), 2)
            self.assertEqual(third.json()["error"]["type"], "service_unavailable_error")
            for _ in lines:
                pass
            second.join()
            self.assertEqual(results["second"].status_code, 200)
        finally:
            self.assertEqual(busy.stop(), 0)


if __name__ == "__main__":
    unittest.main()
