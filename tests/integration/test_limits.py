"""Server limits against live `sieve serve` processes: --max-connections answering 503 instead of
dropping the connection, and the warning when a server is exposed without a key."""

import os
import socket
import sys
import time
import unittest

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sieve_server import SieveServer  # noqa: E402


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
