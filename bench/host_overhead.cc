// Host overhead of a decode step: the real Engine on the CPU backend with a model whose forward
// costs next to nothing (1 layer, hidden 64), `--num-seqs` sequences decoding at once. Every
// backend op is timed by a wrapper backend, so the host's share of a step is its wall time less
// the time spent inside backend ops: the scheduler, batch building, sampling bookkeeping,
// detokenizing, stream pushes and the scheduler update (issue 7: "well under a millisecond" at
// 256 sequences). The StepTimer phases are reported alongside, with the backend's time taken
// out of the phases it falls in.
//
//   build-kv/bench/sieve_bench_host_overhead [--num-seqs 256] [--steps 200] [--penalties]

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "CLI/CLI.hpp"
#include "engine/engine.h"
#include "kernels/cpu/cpu_backend.h"
#include "models/model_loader.h"
#include "models/weights.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace sieve::bench {
namespace {

using Clock = std::chrono::steady_clock;

// Forwards every op to `inner` and adds the time spent in it to `model_seconds` (the forward's
// ops) or `sample_seconds` (the sampling ops). With `skip_ops` (for profiling the host alone),
// the forward's ops do nothing and sampling picks a token from the sequence's step.
class TimingBackend final : public kernels::Backend {
 public:
  explicit TimingBackend(kernels::Backend& inner) : inner_(inner) {}
  using Backend::allocate;

  double model_seconds = 0;
  double sample_seconds = 0;
  bool skip_ops = false;

  kernels::BackendKind kind() const override { return inner_.kind(); }
  bool memory_is_host() const override { return inner_.memory_is_host(); }
  std::string name() const override { return inner_.name(); }
  DType compute_dtype() const override { return inner_.compute_dtype(); }
  StatusOr<Tensor> allocate(DType dtype, std::span<const int64_t> shape) override {
    return inner_.allocate(dtype, shape);
  }
  void copy(const TensorView& dst, const TensorView& src) override {
    timed(model_seconds, [&] { inner_.copy(dst, src); });
  }
  void synchronize() override { inner_.synchronize(); }
  void fill_random(const TensorView& out, uint64_t seed, float mean, float std) override {
    inner_.fill_random(out, seed, mean, std);
  }
  void embed(const TensorView& ids, const TensorView& table, const TensorView& out) override {
    timed(model_seconds, [&] { inner_.embed(ids, table, out); });
  }
  void rms_norm(const TensorView& out, const TensorView& x, const TensorView& weight,
                float eps) override {
    timed(model_seconds, [&] { inner_.rms_norm(out, x, weight, eps); });
  }
  void add_rms_norm(const TensorView& out, const TensorView& residual, const TensorView& x,
                    const TensorView& weight, float eps) override {
    timed(model_seconds, [&] { inner_.add_rms_norm(out, residual, x, weight, eps); });
  }
  void gemm(const kernels::GemmArgs& a) override {
    timed(model_seconds, [&] { inner_.gemm(a); });
  }
  void rope(const kernels::RopeArgs& a) override {
    timed(model_seconds, [&] { inner_.rope(a); });
  }
  void silu_mul(const TensorView& out, const TensorView& gate_up) override {
    timed(model_seconds, [&] { inner_.silu_mul(out, gate_up); });
  }
  void softmax(const TensorView& x) override {
    timed(model_seconds, [&] { inner_.softmax(x); });
  }
  void write_kv(const kernels::KvWriteArgs& a) override {
    timed(model_seconds, [&] { inner_.write_kv(a); });
  }
  bool supports_kv_format(kvcache::KvFormatId format) const override {
    return inner_.supports_kv_format(format);
  }
  void copy_pages(const kernels::PageCopyArgs& a) override {
    timed(model_seconds, [&] { inner_.copy_pages(a); });
  }
  void compact_kv(const kernels::CompactArgs& a) override {
    timed(model_seconds, [&] { inner_.compact_kv(a); });
  }
  void copy_rows(const kernels::CopyRowsArgs& a) override {
    timed(model_seconds, [&] { inner_.copy_rows(a); });
  }
  void kv_signals(const kernels::KvSignalArgs& a) override {
    timed(model_seconds, [&] { inner_.kv_signals(a); });
  }
  void accumulate_query_moments(const kernels::QueryMomentArgs& a) override {
    timed(model_seconds, [&] { inner_.accumulate_query_moments(a); });
  }
  void expected_logits(const kernels::ExpectedLogitArgs& a) override {
    timed(model_seconds, [&] { inner_.expected_logits(a); });
  }
  void attention(const kernels::AttentionArgs& a) override {
    timed(model_seconds, [&] { inner_.attention(a); });
  }
  void sample(const kernels::SampleArgs& a) override {
    if (skip_ops) {
      const int64_t vocab = a.logits.size(1);
      for (int64_t s = 0; s < a.out_tokens.numel(); ++s) {
        a.out_tokens.data<int32_t>()[s] =
            static_cast<int32_t>((a.steps.data<int64_t>()[s] * 7919 + s * 104729) % vocab);
      }
      return;
    }
    timed(sample_seconds, [&] { inner_.sample(a); });
  }
  void apply_penalties(const kernels::PenaltyArgs& a) override {
    if (skip_ops) return;
    timed(sample_seconds, [&] { inner_.apply_penalties(a); });
  }

 private:
  template <typename F>
  void timed(double& seconds, F&& op) {
    if (skip_ops) return;
    const auto start = Clock::now();
    op();
    seconds += std::chrono::duration<double>(Clock::now() - start).count();
  }

  kernels::Backend& inner_;
};

struct Options {
  int num_seqs = 256;
  int steps = 200;
  int warmup_steps = 20;
  int prompt_len = 32;
  bool penalties = false;
  bool tokenizer = true;
  bool json = false;
  bool skip_ops = false;
};

// A Llama-shaped model whose forward is negligible next to the host's work; the vocabulary is
// the tokenizer's, so the detokenizer sees real ids.
models::ModelConfig tiny_config(int vocab_size) {
  models::ModelConfig c;
  c.architecture = models::Architecture::kLlama;
  c.architecture_name = "LlamaForCausalLM";
  c.vocab_size = vocab_size;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_layers = 1;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 16;
  c.max_position_embeddings = 4096;
  c.tie_word_embeddings = true;
  return c;
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

int run(const Options& o) {
  std::unique_ptr<models::Tokenizer> tokenizer;
  if (o.tokenizer) {
    auto loaded = models::load_tokenizer_for("default");
    if (!loaded.ok()) {
      std::fprintf(stderr, "no tokenizer (%s); run with --no-tokenizer\n",
                   std::string(loaded.status().message()).c_str());
      return 1;
    }
    tokenizer = *std::move(loaded);
  }
  const int vocab = tokenizer ? tokenizer->vocab_size() : 32000;
  std::unique_ptr<kernels::Backend> cpu = kernels::cpu::make_cpu_backend();
  TimingBackend backend(*cpu);
  const models::ModelConfig config = tiny_config(vocab);
  auto weights = models::random_weights(config, backend, 1);
  SIEVE_CHECK(weights.ok()) << weights.status();
  const int max_tokens = o.warmup_steps + o.steps + 8;
  auto model = models::Transformer::create(config, *std::move(weights), backend,
                                           {2048, o.num_seqs, 1 << 18});
  SIEVE_CHECK(model.ok()) << model.status();
  engine::EngineConfig engine_config;
  engine_config.max_num_batched_tokens = 2048;
  engine_config.max_num_seqs = o.num_seqs;
  // f32 KV on the CPU: 8 tokens a page. Enough pages that nothing is ever preempted.
  engine_config.num_kv_pages = o.num_seqs * ((o.prompt_len + max_tokens) / 8 + 2);
  std::vector<int32_t> eos = tokenizer ? tokenizer->stop_token_ids() : std::vector<int32_t>{};
  auto engine = engine::Engine::create(**model, backend, tokenizer.get(), eos, engine_config);
  SIEVE_CHECK(engine.ok()) << engine.status();

  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int32_t> token(0, vocab - 1);
  std::vector<std::shared_ptr<engine::OutputStream>> streams;
  for (int i = 0; i < o.num_seqs; ++i) {
    engine::Request r;
    for (int t = 0; t < o.prompt_len; ++t) r.prompt_token_ids.push_back(token(rng));
    r.params.temperature = 0;
    r.params.max_tokens = max_tokens;
    r.params.ignore_eos = true;
    if (o.penalties) {
      r.params.repetition_penalty = 1.1f;
      r.params.frequency_penalty = 0.2f;
      r.params.presence_penalty = 0.1f;
      r.params.min_tokens = max_tokens;
    }
    auto stream = (*engine)->add_request(std::move(r));
    SIEVE_CHECK(stream.ok()) << stream.status();
    streams.push_back(*std::move(stream));
  }
  // A consumer drains the streams between steps, outside the measured time.
  auto drain = [&] {
    for (auto& s : streams) {
      while (s->next(std::chrono::milliseconds(0))) {
      }
    }
  };
  // Prefill, then decode until warm.
  while ((*engine)->stats().num_running.load() < o.num_seqs ||
         (*engine)->stats().prompt_tokens.load() < int64_t{o.num_seqs} * o.prompt_len) {
    (*engine)->step();
    drain();
  }
  for (int i = 0; i < o.warmup_steps; ++i) {
    (*engine)->step();
    drain();
  }

  backend.skip_ops = o.skip_ops;
  const engine::StepTimer& timer = (*engine)->timer();
  using engine::StepPhase;
  double phase_start[4];
  for (int p = 0; p < 4; ++p) phase_start[p] = timer.seconds(static_cast<StepPhase>(p));
  std::vector<double> host_ms;
  double wall = 0;
  const double model_start = backend.model_seconds, sample_start = backend.sample_seconds;
  const int64_t tokens_before = (*engine)->stats().generation_tokens.load();
  for (int i = 0; i < o.steps; ++i) {
    const double model_before = backend.model_seconds, sample_before = backend.sample_seconds;
    const auto start = Clock::now();
    (*engine)->step();
    const double step_s = seconds_since(start);
    const double backend_s =
        backend.model_seconds - model_before + backend.sample_seconds - sample_before;
    wall += step_s;
    host_ms.push_back((step_s - backend_s) * 1e3);
    drain();
  }
  const double model_ms = (backend.model_seconds - model_start) * 1e3 / o.steps;
  const double sample_ms = (backend.sample_seconds - sample_start) * 1e3 / o.steps;
  const int64_t tokens = (*engine)->stats().generation_tokens.load() - tokens_before;
  SIEVE_CHECK_EQ(tokens, int64_t{o.num_seqs} * o.steps) << "every sequence decodes every step";
  double phase[4];
  for (int p = 0; p < 4; ++p) {
    phase[p] = (timer.seconds(static_cast<StepPhase>(p)) - phase_start[p]) * 1e3 / o.steps;
  }
  std::sort(host_ms.begin(), host_ms.end());
  double host_mean = 0;
  for (double h : host_ms) host_mean += h;
  host_mean /= o.steps;
  const double p50 = host_ms[host_ms.size() / 2];
  const double p90 = host_ms[host_ms.size() * 9 / 10];
  const double wall_ms = wall * 1e3 / o.steps;
  nlohmann::json out = {{"num_seqs", o.num_seqs},
                        {"steps", o.steps},
                        {"penalties", o.penalties},
                        {"tokenizer", o.tokenizer},
                        {"vocab", vocab},
                        {"skip_ops", o.skip_ops},
                        {"step_wall_ms", wall_ms},
                        {"host_ms_mean", host_mean},
                        {"host_ms_p50", p50},
                        {"host_ms_p90", p90},
                        {"host_ms_min", host_ms.front()},
                        {"backend_ms", {{"model_ops", model_ms}, {"sample_ops", sample_ms}}},
                        {"phase_ms",
                         {{"schedule", phase[0]},
                          {"model", phase[1]},
                          {"sample", phase[2]},
                          {"detokenize", phase[3]}}}};
  if (o.json) {
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf(
        "%d sequences, %d decode steps: host %.3f ms/step mean (p50 %.3f, p90 %.3f, min %.3f); "
        "wall %.3f ms/step\n",
        o.num_seqs, o.steps, host_mean, p50, p90, host_ms.front(), wall_ms);
    std::printf("backend ops ms/step: model %.3f, sampling %.3f\n", model_ms, sample_ms);
    std::printf(
        "StepTimer ms/step (backend ops included): schedule %.3f, model %.3f, sample %.3f, "
        "detokenize %.3f\n",
        phase[0], phase[1], phase[2], phase[3]);
  }
  return 0;
}

}  // namespace
}  // namespace sieve::bench

int main(int argc, char** argv) {
  // As `sieve` does: OpenMP threads sleep while they wait, so they do not steal the host thread's
  // core between ops.
  if (std::getenv("OMP_WAIT_POLICY") == nullptr) ::setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  sieve::bench::Options o;
  CLI::App app("Host overhead of a decode step (the engine on the CPU backend, a tiny model)");
  app.add_option("--num-seqs", o.num_seqs, "Sequences decoding at once");
  app.add_option("--steps", o.steps, "Decode steps measured");
  app.add_option("--warmup-steps", o.warmup_steps, "Decode steps before measuring");
  app.add_option("--prompt-len", o.prompt_len, "Prompt tokens per sequence");
  app.add_flag("--penalties", o.penalties,
               "Repetition, frequency and presence penalties and min_tokens on every request");
  app.add_flag("--no-tokenizer{false}", o.tokenizer, "No detokenizer (no text output)");
  app.add_flag("--json", o.json, "One JSON line");
  app.add_flag("--skip-ops", o.skip_ops,
               "Measured steps skip the forward's ops and draw tokens without logits (profiling)");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);
  return sieve::bench::run(o);
}
