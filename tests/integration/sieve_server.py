"""A live `sieve serve` on loopback for the integration tests, and what they share.

The binary comes from $SIEVE_BINARY (ctest sets it) or build/sieve; the model is the default
one (scripts/setup.sh fetches it). Ports are chosen by the server (--port 0) and read back from
its log, so tests can run side by side.
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ.get("SIEVE_BINARY", os.path.join(REPO, "build", "sieve"))
MODEL = "SmolLM2-135M-Instruct"

_SERVING = re.compile(r"serving \S+ on http://[^:]+:(\d+) \(OpenAI API\)(?:, grpc [^ ,]+:(\d+))?")


class SieveServer:
    """Starts `sieve serve` with extra flags; stop() sends SIGTERM and returns the exit code."""

    def __init__(self, *flags, env=None, grpc=True, host="127.0.0.1"):
        """`host` None leaves --host out (the default bind)."""
        args = [BINARY, "serve", "--model", "default", *(["--host", host] if host else []),
                "--port", "0", "--grpc-port", "0" if grpc else "-1", *flags]
        self.log_lines = []
        self._ready = threading.Event()
        self.port = None
        self.grpc_port = None
        full_env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
        full_env.update(env or {})
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        text=True, env=full_env)
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        if not self._ready.wait(120) or self.port is None:
            self.process.kill()
            raise RuntimeError("sieve serve did not start:\n" + "".join(self.log_lines))

    def _read_log(self):
        for line in self.process.stderr:
            self.log_lines.append(line)
            m = _SERVING.search(line)
            if m:
                self.port = int(m.group(1))
                self.grpc_port = int(m.group(2)) if m.group(2) else None
                self._ready.set()
        self._ready.set()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def log(self):
        return "".join(self.log_lines)

    def metrics(self):
        """The /metrics samples as {name{labels}: value}."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as r:
            text = r.read().decode()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                samples[key] = float(value)
        return samples

    def metric(self, name, **labels):
        """One sample, labels matched exactly besides model_name."""
        want = {"model_name": MODEL, **labels}
        for key, value in self.metrics().items():
            if key.split("{")[0] != name:
                continue
            have = dict(re.findall(r'(\w+)="([^"]*)"', key))
            if have == want:
                return value
        return 0.0

    def wait_for(self, predicate, timeout=30.0):
        """Polls predicate() until it is true; returns its last value."""
        end = time.time() + timeout
        value = predicate()
        while not value and time.time() < end:
            time.sleep(0.05)
            value = predicate()
        return value

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._reader.join(5)
        self.process.stderr.close()
        return code


def grpc_modules():
    """The Python stubs of proto/sieve.proto, generated with grpcio-tools into a temp dir."""
    from grpc_tools import protoc  # noqa: import inside: only gRPC tests need it
    out = tempfile.mkdtemp(prefix="sieve_proto_")
    proto_include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{REPO}", f"-I{proto_include}", f"--python_out={out}",
                      f"--grpc_python_out={out}", os.path.join(REPO, "proto", "sieve.proto")])
    if rc != 0:
        raise RuntimeError("protoc failed on proto/sieve.proto")
    sys.path.insert(0, out)
    from proto import sieve_pb2, sieve_pb2_grpc  # noqa: generated above
    return sieve_pb2, sieve_pb2_grpc
