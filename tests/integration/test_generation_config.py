"""Generation defaults as vLLM has them, against live `sieve serve` processes: the README's first
examples run as written (curl and the openai snippet) and answer the question; a
--generation-config directory's generation_config.json and --override-generation-config set the
fields a request leaves unset, on HTTP and gRPC, and what a request gives still wins."""

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import unittest

import grpc
import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sieve_server import REPO, SieveServer, grpc_modules  # noqa: E402

pb, rpc = grpc_modules()


def readme_examples():
    """The curl command and the Python snippet of the README's first example block."""
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    block = re.search(r"Then, from another shell:\n\n```sh\n(.*?)```", text, re.S).group(1)
    curl = re.search(r"(curl .*?)\n\.venv", block, re.S).group(1).replace("\\\n", " ")
    python = re.search(r'python -c "\n(.*?)"\n', block, re.S).group(1)
    return curl, python


class ReadmeExamples(unittest.TestCase):
    def test_the_first_examples_answer_paris(self):
        server = SieveServer(grpc=False)
        try:
            curl, python = readme_examples()
            args = [a.replace("localhost:8000", f"127.0.0.1:{server.port}")
                    for a in shlex.split(curl)]
            out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True)
            answer = json.loads(out.stdout)["choices"][0]["message"]["content"]
            self.assertIn("Paris", answer)
            python = python.replace("localhost:8000", f"127.0.0.1:{server.port}")
            out = subprocess.run([sys.executable, "-c", python], capture_output=True, text=True,
                                 timeout=120, check=True)
            self.assertIn("Paris", out.stdout)
        finally:
            self.assertEqual(server.stop(), 0)


class GenerationConfig(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="sieve_generation_config_")
        with open(os.path.join(cls.dir, "generation_config.json"), "w") as f:
            json.dump({"bos_token_id": 1, "do_sample": True, "temperature": 0.0,
                       "max_new_tokens": 5, "top_p": 0.5}, f)
        cls.server = SieveServer("--generation-config", cls.dir,
                                 "--override-generation-config", '{"top_p": 0.9}')

    @classmethod
    def tearDownClass(cls):
        assert cls.server.stop() == 0, cls.server.log()

    def completion(self, **fields):
        r = requests.post(self.server.url + "/v1/completions", timeout=120,
                          json={"prompt": "Once upon a time", "ignore_eos": True, **fields})
        self.assertEqual(r.status_code, 200, r.text)
        return r.json()

    def test_defaults_are_logged(self):
        self.assertIn("generation defaults from " + self.dir, self.server.log())
        self.assertIn("temperature=0, top_p=0.9, max_tokens=5", self.server.log())

    def test_unset_fields_take_the_defaults_and_given_ones_win(self):
        plain = self.completion()
        self.assertEqual(plain["usage"]["completion_tokens"], 5)  # max_new_tokens
        greedy = self.completion(temperature=0, max_tokens=5)
        self.assertEqual(plain["choices"][0]["text"], greedy["choices"][0]["text"])
        self.assertEqual(self.completion(max_tokens=7)["usage"]["completion_tokens"], 7)
        # Sampling at temperature 1 with different seeds is not greedy every time.
        texts = {self.completion(temperature=1.0, seed=s, max_tokens=8)["choices"][0]["text"]
                 for s in range(4)}
        self.assertGreater(len(texts), 1)
        chat = requests.post(self.server.url + "/v1/chat/completions", timeout=120, json={
            "messages": [{"role": "user", "content": "Count to 100."}], "ignore_eos": True})
        self.assertEqual(chat.json()["usage"]["completion_tokens"], 5)

    def test_grpc_takes_the_same_defaults(self):
        with grpc.insecure_channel(f"127.0.0.1:{self.server.grpc_port}") as channel:
            responses = list(rpc.SieveStub(channel).Generate(pb.GenerateRequest(
                text="Once upon a time", sampling=pb.SamplingParams(ignore_eos=True)),
                timeout=120))
        self.assertEqual("".join(r.text for r in responses),
                         self.completion()["choices"][0]["text"])
        self.assertEqual(responses[-1].usage.completion_tokens, 5)

    def test_bad_defaults_are_a_start_up_error_naming_the_flag(self):
        for flags, message in (
                (["--override-generation-config", '{"temperature": -1}'], "temperature"),
                (["--override-generation-config", '{"temprature": 0}'], "unknown key"),
                (["--generation-config", "/nonexistent"], "--generation-config")):
            result = subprocess.run(
                [self.server.process.args[0], "serve", "--model", "default", "--port", "0",
                 "--grpc-port", "-1", *flags], capture_output=True, text=True, timeout=120)
            self.assertNotEqual(result.returncode, 0, flags)
            self.assertIn(message, result.stderr, flags)


if __name__ == "__main__":
    unittest.main()
