"""Issue 12's hostile clients against a live `sieve serve --api-key ... --write-timeout 1`, each
with a real client (requests, grpcio, raw sockets): deeply nested JSON on every endpoint, the API
key on both transports, integer overflow in request fields, HEAD, Expect: 100-continue, request
ids that would forge log lines, and a gRPC client that stops reading. After each, the server
still serves and holds no KV page it should not."""

import json
import os
import re
import socket
import sys
import unittest

import grpc
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sieve_server import SieveServer, grpc_modules  # noqa: E402

pb, rpc = grpc_modules()
KEY = "s3cret-key"
AUTH = {"Authorization": "Bearer " + KEY}
GRPC_AUTH = (("authorization", "Bearer " + KEY),)
INT_MAX = 2**31 - 1
server = None
channel = None
stub = None


def setUpModule():
    global server, channel, stub
    server = SieveServer("--api-key", KEY, "--write-timeout", "1")
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = rpc.SieveStub(channel)


def tearDownModule():
    channel.close()
    assert server.stop() == 0, server.log()


def post(path, body, headers=AUTH):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(server.url + path, data=data, timeout=60,
                         headers={"Content-Type": "application/json", **headers})


def nested(depth):
    """The issue's value: {"a":{"a":...1...}} `depth` levels deep, as raw JSON text."""
    return '{"a":' * depth + "1" + "}" * depth


def raw_http(port, request, timeout=10):
    """Sends `request` on a fresh socket and returns the socket (for more exchanges)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(request)
    return s


def read_response(s, buffer=b""):
    """One response with a Content-Length body from `s`: (head, body, bytes after it)."""
    while b"\r\n\r\n" not in buffer:
        data = s.recv(65536)
        if not data:
            raise AssertionError("connection closed before the head: %r" % buffer)
        buffer += data
    head, rest = buffer.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
    return head, rest, length


def still_serves():
    r = post("/v1/completions", {"prompt": "Hi", "max_tokens": 2})
    assert r.status_code == 200, r.text
    return True


class DeepJson(unittest.TestCase):
    def test_deep_values_on_every_endpoint_are_a_400_and_the_server_lives(self):
        deep = nested(60000)  # 360 KB: the body that crashed the server
        user = '[{"role": "user", "content": "Hi"}]'
        cases = [
            ("/v1/completions",
             '{"prompt": "Hi", "compression": {"method": "none", "params": %s}}' % deep),
            ("/v1/completions", '{"prompt": "Hi", "response_format": %s}' % deep),
            ("/v1/chat/completions",
             '{"messages": [{"role": "user", "content": [{"type": %s, "text": "x"}]}]}' % deep),
            ("/v1/chat/completions",
             '{"messages": %s, "compression": {"method": "none", "params": %s}}' % (user, deep)),
            ("/tokenize", '{"messages": [{"role": "user", "content": [%s]}]}' % deep),
            ("/tokenize", '{"prompt": %s}' % ("[" * 100000 + "]" * 100000)),
            ("/detokenize", '{"tokens": %s}' % deep),
        ]
        for path, body in cases:
            with self.subTest(path=path, body=body[:80]):
                r = post(path, body.encode())
                self.assertEqual(r.status_code, 400, r.text)
                self.assertIn("deeper than 64 levels", r.json()["error"]["message"])
        self.assertTrue(still_serves())
        self.assertEqual(server.process.poll(), None)

    def test_deep_struct_over_grpc_is_refused_and_the_server_lives(self):
        request = pb.GenerateRequest(text="Hi", sampling=pb.SamplingParams(max_tokens=2))
        value = request.compression.params.fields["a"]
        for _ in range(5000):
            value = value.list_value.values.add()
        value.number_value = 1
        with self.assertRaises(grpc.RpcError) as e:
            list(stub.Generate(request, metadata=GRPC_AUTH, timeout=30))
        # protobuf's own recursion limit (100 messages) refuses it while parsing, before any of
        # our code, and gRPC answers INTERNAL; struct_to_json's own limit is for what gets past.
        self.assertIn(e.exception.code(),
                      (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT))
        ok = list(stub.Generate(pb.GenerateRequest(text="Hi", sampling=pb.SamplingParams(
            max_tokens=2)), metadata=GRPC_AUTH, timeout=60))
        self.assertTrue(ok[-1].finished)


class IntegerLimits(unittest.TestCase):
    def test_http_fields_at_the_int_limit_are_a_400_naming_the_field(self):
        user = [{"role": "user", "content": "Hi"}]
        cases = [
            ("/v1/completions", {"prompt": "Hi", "max_tokens": INT_MAX}, "max_tokens"),
            ("/v1/completions", {"prompt": "Hi", "max_tokens": INT_MAX + 1}, "max_tokens"),
            ("/v1/completions", {"prompt": "Hi", "n": 128, "max_tokens": INT_MAX}, "max_tokens"),
            ("/v1/completions", {"prompt": "Hi", "logprobs": INT_MAX}, "logprobs"),
            ("/v1/completions", {"prompt": "Hi", "prompt_logprobs": INT_MAX}, "prompt_logprobs"),
            ("/v1/completions", {"prompt": "Hi", "min_tokens": INT_MAX}, "min_tokens"),
            ("/v1/chat/completions", {"messages": user, "max_tokens": INT_MAX}, "max_tokens"),
            ("/v1/chat/completions", {"messages": user, "max_completion_tokens": INT_MAX},
             "max_completion_tokens"),
            ("/v1/chat/completions", {"messages": user, "logprobs": True,
                                      "top_logprobs": INT_MAX}, "top_logprobs"),
            ("/v1/chat/completions", {"messages": user, "n": INT_MAX}, "n"),
        ]
        for path, body, field in cases:
            with self.subTest(body=body):
                r = post(path, body)
                self.assertEqual(r.status_code, 400, r.text)
                self.assertEqual(r.json()["error"]["param"], field, r.text)
        self.assertEqual(server.metric("sieve:kv_cache_pages_used"), 0)

    def test_grpc_fields_at_the_int_limit_are_invalid_argument_naming_the_field(self):
        cases = [
            (pb.SamplingParams(max_tokens=INT_MAX), "max_tokens"),
            (pb.SamplingParams(max_tokens=INT_MAX, n=32), "max_tokens"),
            (pb.SamplingParams(logprobs=INT_MAX), "logprobs"),
            (pb.SamplingParams(prompt_logprobs=INT_MAX), "prompt_logprobs"),
            (pb.SamplingParams(n=INT_MAX), "n"),
            (pb.SamplingParams(min_tokens=INT_MAX), "min_tokens"),
        ]
        for sampling, field in cases:
            with self.subTest(field=field, sampling=str(sampling)):
                with self.assertRaises(grpc.RpcError) as e:
                    list(stub.Generate(pb.GenerateRequest(text="Hi", sampling=sampling),
                                       metadata=GRPC_AUTH, timeout=30))
                self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
                self.assertTrue(e.exception.details().startswith(field), e.exception.details())


class ApiKey(unittest.TestCase):
    def test_http_needs_the_key_with_the_bearer_scheme_in_any_case(self):
        body = {"prompt": "Hi", "max_tokens": 1}
        self.assertEqual(post("/v1/completions", body, headers={}).status_code, 401)
        self.assertEqual(post("/v1/completions", body, {"Authorization": "Bearer wrong"})
                         .status_code, 401)
        for scheme in ("Bearer", "bearer", "BEARER"):
            r = post("/v1/completions", body, {"Authorization": f"{scheme} {KEY}"})
            self.assertEqual(r.status_code, 200, (scheme, r.text))
        self.assertEqual(requests.get(server.url + "/v1/models", timeout=10).status_code, 401)
        # Health stays open for load balancers.
        self.assertEqual(requests.get(server.url + "/health", timeout=10).status_code, 200)

    def test_grpc_needs_the_same_key_in_the_authorization_metadata(self):
        calls = [
            lambda md: list(stub.Generate(pb.GenerateRequest(
                text="Hi", sampling=pb.SamplingParams(max_tokens=1)), metadata=md, timeout=60)),
            lambda md: stub.Tokenize(pb.TokenizeRequest(text="Hi"), metadata=md, timeout=10),
            lambda md: stub.Detokenize(pb.DetokenizeRequest(token_ids=[1]), metadata=md,
                                       timeout=10),
            lambda md: stub.ModelInfo(pb.ModelInfoRequest(), metadata=md, timeout=10),
        ]
        for i, call in enumerate(calls):
            for md in ((), (("authorization", "Bearer nope"),), (("authorization", KEY),)):
                with self.subTest(call=i, metadata=md):
                    with self.assertRaises(grpc.RpcError) as e:
                        call(md)
                    self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
                    self.assertNotIn(".gguf", e.exception.details())
            for md in (GRPC_AUTH, (("authorization", "bearer " + KEY),)):
                call(md)  # no error
        info = stub.ModelInfo(pb.ModelInfoRequest(), metadata=GRPC_AUTH, timeout=10)
        self.assertTrue(info.source)
        # Health stays open, as HTTP's /health does.
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(service="sieve.v1.Sieve")).status
        self.assertEqual(status, health_pb2.HealthCheckResponse.SERVING)


class RequestIds(unittest.TestCase):
    def test_request_ids_cannot_forge_log_lines(self):
        # HTTP header values may carry tabs and spaces; gRPC's request_id anything at all.
        body = json.dumps({"prompt": "Hi", "max_tokens": 1}).encode()
        s = raw_http(server.port, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer " + KEY.encode() + b"\r\n"
                     b"X-Request-Id: http\tid forged\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body, timeout=60)
        with s:
            head, _, _ = read_response(s)
            self.assertIn(b"X-Request-Id: http_id_forged\r\n", head)
        forged = "grpc\n[2026-01-01 00:00:00.000] [info] request forged: 1 prompt tokens\x1b[2J"
        responses = list(stub.Generate(pb.GenerateRequest(
            request_id=forged, text="Hi", sampling=pb.SamplingParams(max_tokens=1)),
            metadata=GRPC_AUTH, timeout=60))
        clean = "grpc_[2026-01-01_00:00:00.000]_[info]_request_forged:_1_prompt_tokens_[2J"
        self.assertEqual(responses[-1].request_id, clean)
        self.assertTrue(server.wait_for(lambda: f"request {clean}:" in server.log()))
        self.assertTrue(server.wait_for(lambda: "request http_id_forged:" in server.log()))
        log = server.log()
        self.assertNotIn("\x1b", log)
        self.assertFalse([l for l in server.log_lines if l.startswith("[2026-01-01")])


class GrpcStall(unittest.TestCase):
    def test_a_client_that_stops_reading_is_cut_off_and_its_pages_freed(self):
        aborted = server.metric("sieve:request_success_total", finished_reason="abort")
        # No BDP probing and a small window: the client's transport takes little unread data.
        stalled_channel = grpc.insecure_channel(
            f"127.0.0.1:{server.grpc_port}",
            options=[("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)])
        try:
            stalled = rpc.SieveStub(stalled_channel).Generate(
                pb.GenerateRequest(request_id="stalled", text="Tell me a long story.",
                                   sampling=pb.SamplingParams(n=32, max_tokens=400,
                                                              min_tokens=400, ignore_eos=True,
                                                              logprobs=20)),
                metadata=GRPC_AUTH, timeout=120)
            next(stalled)  # one message, then nothing more is read
            self.assertTrue(server.wait_for(
                lambda: server.metric("sieve:kv_cache_pages_used") > 0))

            # Another client meanwhile is served.
            other = list(stub.Generate(pb.GenerateRequest(
                text="Hi", sampling=pb.SamplingParams(max_tokens=3, min_tokens=3,
                                                      ignore_eos=True)),
                metadata=GRPC_AUTH, timeout=120))
            self.assertEqual(sum(len(r.token_ids) for r in other), 3)

            # Cut off after the write timeout (1 s): aborted, its pages freed, well before the
            # 32 x 400 tokens it asked for.
            self.assertTrue(server.wait_for(
                lambda: server.metric("sieve:num_requests_in_flight") == 0 and
                server.metric("sieve:kv_cache_pages_used") == 0, timeout=30), server.log())
            self.assertIn("gRPC client of request stalled stopped reading", server.log())
            self.assertEqual(
                server.metric("sieve:request_success_total", finished_reason="abort"),
                aborted + 1)
            line = next(l for l in server.log_lines if "request stalled:" in l)
            self.assertLess(int(re.search(r"(\d+) generated", line).group(1)), 32 * 400, line)
            with self.assertRaises(grpc.RpcError) as e:
                for _ in stalled:
                    pass
            self.assertEqual(e.exception.code(), grpc.StatusCode.CANCELLED)
        finally:
            stalled_channel.close()
        self.assertTrue(still_serves())


class HttpDetails(unittest.TestCase):
    def test_head_has_the_get_headers_and_no_body_on_a_keep_alive_connection(self):
        s = raw_http(server.port, b"HEAD /version HTTP/1.1\r\nHost: x\r\n\r\n")
        with s:
            head, rest, length = read_response(s)
            self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
            self.assertGreater(length, 0)
            self.assertEqual(rest, b"")  # nothing follows the head
            s.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
            head2, body, length2 = read_response(s)
            self.assertTrue(head2.startswith(b"HTTP/1.1 200"), head2 + body)
            self.assertEqual(length2, length)
            while len(body) < length2:
                body += s.recv(65536)
            self.assertIn("version", json.loads(body))

    def test_expect_100_continue_is_answered_before_the_body(self):
        body = json.dumps({"prompt": "Hi", "max_tokens": 2}).encode()
        s = raw_http(server.port, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer " + KEY.encode() + b"\r\n"
                     b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n", timeout=2)
        with s:
            interim = b""
            while b"\r\n\r\n" not in interim:
                interim += s.recv(4096)  # times out (2 s) if the server waits for the body
            self.assertTrue(interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim)
            rest = interim.split(b"\r\n\r\n", 1)[1]
            s.settimeout(60)
            s.sendall(body)
            head, data, length = read_response(s, rest)
            self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)


if __name__ == "__main__":
    unittest.main()
