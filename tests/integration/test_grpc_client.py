"""A Python grpcio client generated from proto/sieve.proto against a live `sieve serve`:
streaming Generate with each prompt kind, Tokenize / Detokenize / ModelInfo, health, reflection,
INVALID_ARGUMENT naming the field, and a cancel or an expired deadline aborting the request
(its pages freed, as the metrics show)."""

import os
import sys
import unittest

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sieve_server import MODEL, SieveServer, grpc_modules  # noqa: E402

pb, rpc = grpc_modules()
server = None
channel = None
stub = None


def setUpModule():
    global server, channel, stub
    server = SieveServer()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = rpc.SieveStub(channel)


def tearDownModule():
    channel.close()
    assert server.stop() == 0, server.log()


def greedy(max_tokens, **kwargs):
    return pb.SamplingParams(temperature=0, max_tokens=max_tokens, **kwargs)


class Generate(unittest.TestCase):
    def test_text_prompt_streams_tokens_text_and_final_usage(self):
        responses = list(stub.Generate(pb.GenerateRequest(
            request_id="t1", text="The capital of France is", sampling=greedy(8, logprobs=2))))
        self.assertTrue(all(r.request_id == "t1" for r in responses))
        last = responses[-1]
        self.assertTrue(last.finished)
        self.assertIn(last.finish_reason, ("length", "stop"))
        tokens = [t for r in responses for t in r.token_ids]
        self.assertEqual(len(tokens), last.usage.completion_tokens)
        self.assertGreater(last.usage.prompt_tokens, 0)
        # The KV cache held at the end: prompt and tokens but the last (never written).
        self.assertEqual(last.usage.kv_tokens_kept,
                         last.usage.prompt_tokens + last.usage.completion_tokens - 1)
        self.assertGreater(last.usage.kv_bytes, 0)
        logprobs = [lp for r in responses for lp in r.logprobs]
        self.assertEqual([lp.token_id for lp in logprobs], tokens)
        self.assertEqual(len(logprobs[0].top), 2)
        text = "".join(r.text for r in responses)
        detok = stub.Detokenize(pb.DetokenizeRequest(token_ids=tokens))
        self.assertEqual(text, detok.text)

    def test_token_ids_and_chat_prompts_match_the_http_tokenization(self):
        ids = stub.Tokenize(pb.TokenizeRequest(text="Hello there")).token_ids
        by_ids = list(stub.Generate(pb.GenerateRequest(token_ids=pb.TokenIds(ids=ids),
                                                       sampling=greedy(5))))
        by_text = list(stub.Generate(pb.GenerateRequest(text="Hello there", sampling=greedy(5))))
        self.assertEqual([t for r in by_ids for t in r.token_ids],
                         [t for r in by_text for t in r.token_ids])
        chat = pb.ChatMessages(messages=[pb.ChatMessage(role="user", content="Hi!")])
        tokenized = stub.Tokenize(pb.TokenizeRequest(chat=chat))
        self.assertEqual(tokenized.count, len(tokenized.token_ids))
        responses = list(stub.Generate(pb.GenerateRequest(chat=chat, sampling=greedy(4))))
        self.assertEqual(responses[-1].usage.prompt_tokens, tokenized.count)

    def test_n_samples_and_compression_message(self):
        request = pb.GenerateRequest(
            text="Pick a colour:", sampling=pb.SamplingParams(n=2, max_tokens=4, seed=5),
            compression=pb.Compression(method="none", kv_format="bf16"))
        responses = list(stub.Generate(request))
        self.assertEqual({r.index for r in responses if r.token_ids}, {0, 1})
        self.assertEqual(sum(1 for r in responses if r.finish_reason), 2)

    def test_bad_inputs_are_invalid_argument_naming_the_field(self):
        cases = [
            (pb.GenerateRequest(sampling=greedy(4)), "prompt"),
            (pb.GenerateRequest(text="x", model="other"), "model"),
            (pb.GenerateRequest(text="x", sampling=pb.SamplingParams(temperature=-1)),
             "temperature"),
            (pb.GenerateRequest(text="x", sampling=pb.SamplingParams(top_p=1.5)), "top_p"),
            (pb.GenerateRequest(text="x", sampling=pb.SamplingParams(max_tokens=0)), "max_tokens"),
            (pb.GenerateRequest(text="x", sampling=pb.SamplingParams(max_tokens=100000)),
             "max_tokens"),
            (pb.GenerateRequest(token_ids=pb.TokenIds(ids=[1, 10**6])), "token_ids"),
            (pb.GenerateRequest(chat=pb.ChatMessages(messages=[pb.ChatMessage(role="x")])),
             "messages[0].role"),
            (pb.GenerateRequest(text="x", compression=pb.Compression(method="magic")),
             "compression.method"),
        ]
        for request, field in cases:
            with self.subTest(field):
                with self.assertRaises(grpc.RpcError) as e:
                    list(stub.Generate(request))
                self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
                self.assertTrue(e.exception.details().startswith(field), e.exception.details())

    def test_cancel_and_deadline_abort_the_request_and_free_its_pages(self):
        long = pb.SamplingParams(max_tokens=200, min_tokens=200, ignore_eos=True)
        aborted_before = server.metric("sieve:request_success_total", finished_reason="abort")
        call = stub.Generate(pb.GenerateRequest(text="Write a long essay.", sampling=long))
        for i, _ in enumerate(call):
            if i == 3:
                call.cancel()
                break
        with self.assertRaises(grpc.RpcError) as e:
            list(stub.Generate(pb.GenerateRequest(text="Write a long essay.", sampling=long),
                               timeout=1.0))
        self.assertEqual(e.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertTrue(server.wait_for(
            lambda: server.metric("sieve:num_requests_in_flight") == 0 and
            server.metric("sieve:kv_cache_pages_used") == 0))
        self.assertEqual(server.metric("sieve:request_success_total", finished_reason="abort"),
                         aborted_before + 2)


class Services(unittest.TestCase):
    def test_model_info(self):
        info = stub.ModelInfo(pb.ModelInfoRequest())
        self.assertEqual(info.model, MODEL)
        self.assertEqual(info.vocab_size, 49152)
        self.assertGreater(info.max_model_len, 0)
        self.assertIn("none", info.compression_methods)

    def test_health_and_reflection(self):
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "sieve.v1.Sieve"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
            self.assertEqual(status, health_pb2.HealthCheckResponse.SERVING)
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        response = next(reflection.ServerReflectionInfo(iter([request])))
        names = {s.name for s in response.list_services_response.service}
        self.assertTrue({"sieve.v1.Sieve", "grpc.health.v1.Health"} <= names, names)


if __name__ == "__main__":
    unittest.main()
