"""Per-request KV compression through the real servers, with real clients: the openai client's
chat request with a `compression` object (extra_body), gRPC's Compression message, a server
default (--kv-compression) for requests without one, bad compression input answered 400 /
INVALID_ARGUMENT naming the field while the server serves on, and the compression metrics."""

import os
import sys
import unittest

import grpc
import requests
from google.protobuf import struct_pb2
from openai import OpenAI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sieve_server import SieveServer, grpc_modules  # noqa: E402

pb, rpc = grpc_modules()

DOCUMENT = " ".join(f"Fact {i}: the colour of box {i} is {c}." for i, c in
                    enumerate(["red", "blue", "green", "amber", "violet", "grey"] * 6))
MESSAGES = [{"role": "system", "content": "You answer in one short sentence."},
            {"role": "user", "content": DOCUMENT + " What is the colour of box 3?"}]


class Compression(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = SieveServer()
        cls.client = OpenAI(base_url=cls.server.url + "/v1", api_key="none")
        cls.channel = grpc.insecure_channel(f"127.0.0.1:{cls.server.grpc_port}")
        cls.stub = rpc.SieveStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        assert cls.server.stop() == 0, cls.server.log()

    def chat(self, compression=None):
        extra = {"compression": compression} if compression else None
        return self.client.chat.completions.create(
            model="default", messages=MESSAGES, temperature=0, max_tokens=12, extra_body=extra)

    def test_http_compression_keeps_fewer_tokens(self):
        full = self.chat()
        compressed = self.chat({"method": "snapkv", "keep_ratio": 0.25})
        self.assertIn(compressed.choices[0].finish_reason, ("stop", "length"))
        prompt = full.usage.prompt_tokens
        self.assertGreater(prompt, 200)
        self.assertEqual(full.usage.model_extra["kv_tokens_kept"],
                         prompt + full.usage.completion_tokens - 1)
        kept = compressed.usage.model_extra["kv_tokens_kept"]
        # A quarter of the prompt, the system message (protected) and the generated tokens.
        self.assertLess(kept, prompt // 2)
        self.assertLess(compressed.usage.model_extra["kv_bytes"], full.usage.model_extra["kv_bytes"])
        self.assertGreater(self.server.metric("sieve:kv_compression_actions_total"), 0)
        self.assertGreater(self.server.metric("sieve:kv_evicted_tokens_total"), 0)
        self.assertGreaterEqual(
            self.server.metric("sieve:requests_by_compression_method_total", method="snapkv"), 1)
        self.assertGreaterEqual(self.server.metric("sieve:kv_compression_seconds_count"), 1)

    def test_grpc_compression_message(self):
        params = struct_pb2.Struct()
        params.update({"interval": 0})
        responses = list(self.stub.Generate(pb.GenerateRequest(
            text=DOCUMENT, sampling=pb.SamplingParams(temperature=0, max_tokens=8),
            compression=pb.Compression(method="knorm", budget=48, params=params))))
        usage = responses[-1].usage
        self.assertEqual(usage.completion_tokens, 8)
        self.assertLessEqual(usage.kv_tokens_kept, 48 + 8)

    def test_bad_compression_is_named_and_the_server_serves_on(self):
        bad = [({"method": "snapkv", "keep_ratio": 0.5, "params": {"kernel_size": 4}},
                "compression.params.kernel_size"),
               ({"method": "snapkv"}, "compression.budget"),
               ({"method": "gkv", "budget": 8, "params": {"surprise": 1}},
                "compression.params.surprise"),
               ({"method": "nope"}, "compression.method")]
        for compression, param in bad:
            r = requests.post(self.server.url + "/v1/chat/completions", timeout=60, json={
                "model": "default", "messages": MESSAGES, "max_tokens": 4,
                "compression": compression})
            self.assertEqual(r.status_code, 400, r.text)
            self.assertEqual(r.json()["error"]["param"], param)
        with self.assertRaises(grpc.RpcError) as raised:
            list(self.stub.Generate(pb.GenerateRequest(
                text="Hi", sampling=pb.SamplingParams(max_tokens=2),
                compression=pb.Compression(method="snapkv", keep_ratio=1.5))))
        self.assertEqual(raised.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("compression.keep_ratio", raised.exception.details())
        self.assertIn(self.chat().choices[0].finish_reason, ("stop", "length"))


class ServerDefault(unittest.TestCase):
    def test_requests_without_compression_take_the_default(self):
        server = SieveServer("--kv-compression",
                             '{"method": "streaming_llm", "budget": 64, "params": {"interval": 0}}',
                             grpc=False)
        try:
            client = OpenAI(base_url=server.url + "/v1", api_key="none")
            reply = client.chat.completions.create(model="default", messages=MESSAGES,
                                                   temperature=0, max_tokens=6)
            kept = reply.usage.model_extra["kv_tokens_kept"]
            self.assertGreater(reply.usage.prompt_tokens, 200)
            # 64 kept, the system message (protected by default) and the generated tokens.
            self.assertLess(kept, 64 + 40 + 6)
            none = client.chat.completions.create(model="default", messages=MESSAGES,
                                                  temperature=0, max_tokens=6,
                                                  extra_body={"compression": {"method": "none"}})
            self.assertEqual(none.usage.model_extra["kv_tokens_kept"],
                             none.usage.prompt_tokens + none.usage.completion_tokens - 1)
        finally:
            self.assertEqual(server.stop(), 0)


if __name__ == "__main__":
    unittest.main()
