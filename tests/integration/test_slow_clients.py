"""Slow and half-open clients against a live `sieve serve --write-timeout 1`: a client that sends
a streaming request and then never reads its socket (a tiny receive window, so the server's
writes block) is cut off by the write timeout; its request is aborted in the engine, its KV
pages are freed (the metrics say so), and another client's request succeeds meanwhile."""

import json
import os
import re
import socket
import sys
import unittest

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sieve_server import SieveServer  # noqa: E402

PARAGRAPH = ("The history of the city begins in the early middle ages, when a small settlement "
             "grew up on the banks of the river. Over the following centuries merchants, "
             "craftsmen and farmers arrived, and the town received its charter from the king. "
             "Its walls, churches and markets still shape the old centre today. ")


def stalled_client(port, body, request_id):
    """Sends one request on a socket with the smallest receive window and segment size the
    kernel allows (so the server can push only tens of kilobytes into it) and returns the
    socket, unread."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    s.settimeout(60)
    s.connect(("127.0.0.1", port))
    payload = json.dumps(body).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"X-Request-Id: " + request_id.encode() + b"\r\n"
              b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
    return s


class SlowClients(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = SieveServer("--write-timeout", "1", grpc=False)

    @classmethod
    def tearDownClass(cls):
        assert cls.server.stop() == 0, cls.server.log()

    def test_client_that_stops_reading_is_timed_out_and_its_pages_freed(self):
        server = self.server
        aborted = server.metric("sieve:request_success_total", finished_reason="abort")
        # Prompt logprobs make the first chunk ~1.4 KB per prompt token (hundreds of KB), and
        # every later one ~1 KB: far more than the stalled socket takes.
        body = {"prompt": PARAGRAPH * 3, "max_tokens": 1000, "min_tokens": 1000,
                "ignore_eos": True, "stream": True, "logprobs": 20, "prompt_logprobs": 20}
        s = stalled_client(server.port, body, "stalled-client")
        try:
            self.assertTrue(server.wait_for(
                lambda: server.metric("sieve:kv_cache_pages_used") > 0), server.log())

            # Another client meanwhile: served as usual.
            r = requests.post(server.url + "/v1/completions", timeout=60, json={
                "prompt": "The capital of France is", "max_tokens": 4, "min_tokens": 4,
                "ignore_eos": True})
            self.assertEqual(r.status_code, 200, r.text)
            self.assertEqual(r.json()["choices"][0]["finish_reason"], "length")

            # The stalled request is aborted and nothing stays held.
            self.assertTrue(server.wait_for(
                lambda: server.metric("sieve:num_requests_in_flight") == 0 and
                server.metric("sieve:kv_cache_pages_used") == 0, timeout=60), server.log())
            self.assertEqual(
                server.metric("sieve:request_success_total", finished_reason="abort"),
                aborted + 1)
            line = next(l for l in server.log_lines if "request stalled-client:" in l)
            generated = int(re.search(r"(\d+) generated", line).group(1))
            self.assertLess(generated, 1000, line)  # cut off, not run to the end
            self.assertIn("client stopped reading for 1 s", server.log())

            # The client, reading at last, gets what was buffered and then the end of the
            # connection, never the end of the stream.
            received = b""
            while True:
                try:
                    data = s.recv(1 << 16)
                except ConnectionResetError:
                    break
                if not data:
                    break
                received += data
            self.assertIn(b"HTTP/1.1 200", received[:100])
            self.assertNotIn(b"data: [DONE]", received)
        finally:
            s.close()


if __name__ == "__main__":
    unittest.main()
