"""The official `openai` package against a live `sieve serve`: completions and chat, streaming
and not, usage (with the KV fields), logprobs, n, stop, seed, token-id prompts, models, and the
API key."""

import os
import sys
import unittest

import openai

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sieve_server import MODEL, SieveServer  # noqa: E402

server = None


def setUpModule():
    global server
    server = SieveServer()


def tearDownModule():
    assert server.stop() == 0, server.log()


def client(**kwargs):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, **kwargs)


class Completions(unittest.TestCase):
    def test_greedy_completion_with_usage(self):
        r = client().completions.create(model=MODEL, prompt="The capital of France is",
                                        max_tokens=8, temperature=0)
        self.assertEqual(r.object, "text_completion")
        self.assertEqual(len(r.choices), 1)
        self.assertIn(r.choices[0].finish_reason, ("length", "stop"))
        self.assertTrue(r.choices[0].text)
        self.assertGreater(r.usage.prompt_tokens, 0)
        self.assertLessEqual(r.usage.completion_tokens, 8)
        self.assertEqual(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens)
        # Greedy is deterministic: the same prompt gives the same text.
        again = client().completions.create(model=MODEL, prompt="The capital of France is",
                                            max_tokens=8, temperature=0)
        self.assertEqual(again.choices[0].text, r.choices[0].text)

    def test_streaming_matches_non_streaming_and_ends_with_usage(self):
        kwargs = dict(model=MODEL, prompt="Once upon a time", max_tokens=10, temperature=0)
        whole = client().completions.create(**kwargs)
        chunks = list(client().completions.create(
            stream=True, stream_options={"include_usage": True}, **kwargs))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        self.assertEqual(text, whole.choices[0].text)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and
                  c.choices[0].finish_reason]
        self.assertEqual(finish, [whole.choices[0].finish_reason])
        self.assertEqual(chunks[-1].choices, [])
        self.assertEqual(chunks[-1].usage.completion_tokens, whole.usage.completion_tokens)

    def test_n_seed_stop_logprobs_and_token_prompts(self):
        r = client().completions.create(model=MODEL, prompt=[[1, 504, 3458, 282]], n=3,
                                        max_tokens=6, temperature=1.0, seed=11, logprobs=2)
        self.assertEqual([c.index for c in r.choices], [0, 1, 2])
        for c in r.choices:
            self.assertEqual(len(c.logprobs.tokens), len(c.logprobs.token_logprobs))
            self.assertLessEqual(len(c.logprobs.top_logprobs[0]), 3)
            self.assertTrue(all(lp <= 0 for lp in c.logprobs.token_logprobs))
        same = client().completions.create(model=MODEL, prompt=[[1, 504, 3458, 282]], n=3,
                                           max_tokens=6, temperature=1.0, seed=11, logprobs=2)
        self.assertEqual([c.text for c in same.choices], [c.text for c in r.choices])
        stopped = client().completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=16,
                                              temperature=0, stop=[","])
        self.assertNotIn(",", stopped.choices[0].text)
        self.assertEqual(stopped.choices[0].finish_reason, "stop")

    def test_several_prompts_give_one_choice_each(self):
        r = client().completions.create(model=MODEL, prompt=["Hello", "Goodbye"], max_tokens=4,
                                        temperature=0)
        self.assertEqual(len(r.choices), 2)
        alone = client().completions.create(model=MODEL, prompt="Goodbye", max_tokens=4,
                                            temperature=0)
        self.assertEqual(r.choices[1].text, alone.choices[0].text)

    def test_prompt_logprobs_in_vllm_shape(self):
        r = client().completions.create(model=MODEL, prompt=[1, 504, 3458, 282], max_tokens=2,
                                        temperature=0, extra_body={"prompt_logprobs": 1})
        positions = r.choices[0].model_extra["prompt_logprobs"]
        self.assertEqual(len(positions), 4)
        self.assertIsNone(positions[0])
        for token, position in zip([504, 3458, 282], positions[1:]):
            self.assertIn(str(token), position)
            self.assertLessEqual(position[str(token)]["logprob"], 0)

    def test_vllm_extra_sampling_fields(self):
        r = client().completions.create(
            model=MODEL, prompt="Count: one two", max_tokens=5, temperature=0,
            extra_body={"top_k": 5, "min_p": 0.05, "repetition_penalty": 1.1, "min_tokens": 5,
                        "ignore_eos": True, "compression": {"method": "none"}})
        self.assertEqual(r.usage.completion_tokens, 5)


    def test_usage_reports_the_kv_cache_the_request_held(self):
        # Each of the n samples held its prompt and its tokens but the last (never written).
        kwargs = dict(model=MODEL, prompt="The capital of France is", n=2, max_tokens=5,
                      temperature=1.0, seed=3, extra_body={"min_tokens": 5, "ignore_eos": True})
        whole = client().completions.create(**kwargs)
        extra = whole.usage.model_extra
        self.assertEqual(extra["kv_tokens_kept"], 2 * (whole.usage.prompt_tokens + 5 - 1))
        self.assertGreater(extra["kv_bytes"], 0)
        chunks = list(client().completions.create(
            stream=True, stream_options={"include_usage": True}, **kwargs))
        self.assertEqual(chunks[-1].usage.model_extra["kv_tokens_kept"], extra["kv_tokens_kept"])
        self.assertEqual(chunks[-1].usage.model_extra["kv_bytes"], extra["kv_bytes"])


class Chat(unittest.TestCase):
    messages = [{"role": "system", "content": "You answer briefly."},
                {"role": "user", "content": "What is 2 + 2?"}]

    def test_chat_with_usage(self):
        r = client().chat.completions.create(model=MODEL, messages=self.messages,
                                             max_completion_tokens=12, temperature=0)
        self.assertEqual(r.object, "chat.completion")
        self.assertEqual(r.choices[0].message.role, "assistant")
        self.assertTrue(r.choices[0].message.content)
        self.assertGreater(r.usage.prompt_tokens, 10)
        kept = r.usage.prompt_tokens + r.usage.completion_tokens - 1
        self.assertEqual(r.usage.model_extra["kv_tokens_kept"], kept)
        self.assertGreater(r.usage.model_extra["kv_bytes"], 0)

    def test_chat_streaming_with_logprobs(self):
        kwargs = dict(model=MODEL, messages=self.messages, max_tokens=8, temperature=0)
        whole = client().chat.completions.create(**kwargs)
        stream = client().chat.completions.create(
            stream=True, stream_options={"include_usage": True}, logprobs=True, top_logprobs=2,
            **kwargs)
        chunks = list(stream)
        self.assertEqual(chunks[0].choices[0].delta.role, "assistant")
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.assertEqual(text, whole.choices[0].message.content)
        tokens = [lp for c in chunks if c.choices and c.choices[0].logprobs
                  for lp in c.choices[0].logprobs.content]
        self.assertEqual(len(tokens), chunks[-1].usage.completion_tokens)
        self.assertEqual(len(tokens[0].top_logprobs), 2)
        self.assertEqual(chunks[-1].usage.model_extra["kv_tokens_kept"],
                         chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens - 1)

    def test_models_lists_the_served_names(self):
        ids = [m.id for m in client().models.list()]
        self.assertEqual(ids[0], MODEL)


class ApiKey(unittest.TestCase):
    def test_key_is_required_except_for_health_and_metrics(self):
        import urllib.error
        import urllib.request
        keyed = SieveServer("--api-key", "s3cret", grpc=False)
        try:
            ok = openai.OpenAI(base_url=keyed.url + "/v1", api_key="s3cret", max_retries=0)
            self.assertEqual(ok.completions.create(model=MODEL, prompt="Hi", max_tokens=2,
                                                   temperature=0).object, "text_completion")
            bad = openai.OpenAI(base_url=keyed.url + "/v1", api_key="wrong", max_retries=0)
            with self.assertRaises(openai.AuthenticationError) as e:
                bad.completions.create(model=MODEL, prompt="Hi", max_tokens=2)
            self.assertEqual(e.exception.status_code, 401)
            with self.assertRaises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(keyed.url + "/v1/models", timeout=10)
            self.assertEqual(e.exception.code, 401)
            for path in ("/health", "/metrics", "/version"):
                self.assertEqual(urllib.request.urlopen(keyed.url + path, timeout=10).status, 200)
        finally:
            self.assertEqual(keyed.stop(), 0)

    def test_key_from_the_environment(self):
        keyed = SieveServer(grpc=False, env={"SIEVE_API_KEY": "from-env"})
        try:
            bad = openai.OpenAI(base_url=keyed.url + "/v1", api_key="nope", max_retries=0)
            with self.assertRaises(openai.AuthenticationError):
                bad.models.list()
            good = openai.OpenAI(base_url=keyed.url + "/v1", api_key="from-env", max_retries=0)
            self.assertEqual(good.models.list().data[0].id, MODEL)
        finally:
            self.assertEqual(keyed.stop(), 0)


if __name__ == "__main__":
    unittest.main()
