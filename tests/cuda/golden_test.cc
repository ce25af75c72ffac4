// Whole models on the GPU: every golden fixture (Hugging Face transformers' logits and greedy
// continuations, tests/fixtures/golden) loaded onto the CUDA backend in bf16. Teacher-forced, each
// step's logits row is within bf16 tolerance of the reference (‖out − ref‖₂ / ‖ref‖₂ < 4e-2,
// METHOD.md's measure; the max |diff| / max |ref| the CPU golden test bounds is reported too);
// the greedy continuations generated on the GPU (argmax through the backend's sample op) are
// counted against the reference's (bf16 may flip a near-tie, so "most", reported in one table).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "models/model_loader.h"
#include "models/transformer.h"
#include "models/weights.h"
#include "nlohmann/json.hpp"
#include "tests/cuda/test_util.h"
#include "tests/support/paged_sequence.h"

namespace sieve::cuda_test {
namespace {

namespace fs = std::filesystem;
constexpr int kChunkTokens = 64;
// bf16 weights alone (f32 compute on the CPU) put these fixtures' logits 1.7e-2 to 2.1e-2 from
// transformers' (relative L2, worst step); bf16 activations add about as much again: 3.1e-2 was
// the worst step seen on an H100 (llama_linear, 300-token prompt).
constexpr double kLogitsTolerance = 4e-2;

// One sequence's paged cache on the GPU, plus the backend's greedy pick from its last logits.
class GpuRunner : public test_support::PagedSequence {
 public:
  GpuRunner(models::Transformer& model, kernels::Backend& gpu, int max_len)
      : PagedSequence(model, gpu, max_len), gpu_(gpu) {}

  // The backend's greedy pick from the last step's logits (still on the device).
  int32_t sample_greedy(int64_t step) {
    float temperature = 0, top_p = 1, min_p = 0;
    int32_t top_k = 0, token = -1;
    int64_t seed = 1;
    gpu_.sample({device_logits(), TensorView(&temperature, DType::kF32, {1}),
                 TensorView(&top_k, DType::kI32, {1}), TensorView(&top_p, DType::kF32, {1}),
                 TensorView(&min_p, DType::kF32, {1}), TensorView(&seed, DType::kI64, {1}),
                 TensorView(&step, DType::kI64, {1}), TensorView(&token, DType::kI32, {1})});
    return token;
  }

 private:
  kernels::Backend& gpu_;
};

double max_relative_error(const float* got, const float* want, int64_t n) {
  double max_diff = 0, max_ref = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    max_diff = std::max(max_diff, std::abs(double(got[i]) - want[i]));
    max_ref = std::max(max_ref, std::abs(double(want[i])));
  }
  return max_diff / max_ref;
}

struct FixtureResult {
  std::string name;
  double worst_logits_error = 0;      // relative L2
  double worst_max_abs_error = 0;     // max |diff| / max |ref|
  int steps = 0, argmax_equal = 0;  // teacher-forced steps whose argmax is the reference token
  int cases = 0, greedy_equal = 0;  // free-running greedy continuations equal to the reference
};

FixtureResult run_fixture(kernels::Backend& gpu, const fs::path& dir) {
  FixtureResult result{dir.filename().string()};
  SCOPED_TRACE(result.name);
  std::ifstream in(dir / "golden.json");
  const nlohmann::json golden = nlohmann::json::parse(in);
  auto files = models::load_model_files(dir.string(), models::LoadFormat::kAuto);
  EXPECT_TRUE(files.ok()) << files.status();
  if (!files.ok()) return result;
  auto references = models::load_safetensors_file((dir / "golden_logits.safetensors").string());
  EXPECT_TRUE(references.ok()) << references.status();
  auto weights = models::build_weights(files->config, files->tensors, gpu, dir.string());
  EXPECT_TRUE(weights.ok()) << weights.status();
  if (!references.ok() || !weights.ok()) return result;
  auto model = models::Transformer::create(files->config, *std::move(weights), gpu,
                                           models::StepLimits{kChunkTokens, 1, 1024});
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return result;
  const int vocab = files->config.vocab_size;

  for (const auto& c : golden["cases"]) {
    const auto prompt = c["prompt_ids"].get<std::vector<int32_t>>();
    const auto greedy = c["greedy_ids"].get<std::vector<int32_t>>();
    SCOPED_TRACE(::testing::Message() << "seed " << c["seed"] << ", prompt " << prompt.size());
    const Tensor& want = references->at(c["logits_key"].get<std::string>());
    GpuRunner runner(**model, gpu, static_cast<int>(prompt.size() + greedy.size()));
    const float* logits = nullptr;
    for (size_t begin = 0; begin < prompt.size(); begin += kChunkTokens) {
      const size_t end = std::min(prompt.size(), begin + kChunkTokens);
      logits = runner.step(std::vector<int32_t>(prompt.begin() + begin, prompt.begin() + end),
                           static_cast<int>(prompt.size()));
    }
    for (size_t i = 0; i <= greedy.size(); ++i) {
      const float* row = want.data<float>() + i * vocab;
      const double error = relative_error(logits, row, vocab);
      EXPECT_LT(error, kLogitsTolerance) << "step " << i;
      result.worst_logits_error = std::max(result.worst_logits_error, error);
      result.worst_max_abs_error =
          std::max(result.worst_max_abs_error, max_relative_error(logits, row, vocab));
      if (i < greedy.size()) {
        ++result.steps;
        result.argmax_equal += std::max_element(logits, logits + vocab) - logits == greedy[i];
        logits = runner.step({greedy[i]});
      }
    }
    // Free-running greedy: each token comes from the GPU's own sample op (temperature 0, the
    // parameters in host memory) and is fed back, where the served context allows it.
    if (static_cast<int>(prompt.size() + greedy.size()) > files->config.context_length()) continue;
    GpuRunner free_runner(**model, gpu, static_cast<int>(prompt.size() + greedy.size()));
    for (size_t begin = 0; begin < prompt.size(); begin += kChunkTokens) {
      const size_t end = std::min(prompt.size(), begin + kChunkTokens);
      free_runner.step(std::vector<int32_t>(prompt.begin() + begin, prompt.begin() + end),
                       static_cast<int>(prompt.size()));
    }
    std::vector<int32_t> generated;
    while (generated.size() < greedy.size()) {
      generated.push_back(free_runner.sample_greedy(static_cast<int64_t>(generated.size())));
      if (generated.size() < greedy.size()) free_runner.step({generated.back()});
    }
    ++result.cases;
    result.greedy_equal += generated == greedy;
  }
  return result;
}

TEST(CudaGolden, ModelsMatchTransformersWithinBf16) {
  SIEVE_GPU_OR_SKIP();
  const fs::path root = golden_dir();
  std::vector<fs::path> dirs;
  if (fs::exists(root)) {
    for (const auto& entry : fs::directory_iterator(root)) {
      if (fs::exists(entry.path() / "golden.json")) dirs.push_back(entry.path());
    }
  }
  std::sort(dirs.begin(), dirs.end());
  ASSERT_GE(dirs.size(), 8u) << "expected the golden fixtures in " << root;
  int steps = 0, argmax_equal = 0, cases = 0, greedy_equal = 0;
  std::printf("[ golden   ] %-14s %10s %10s %14s %12s\n", "fixture", "rel L2", "max-abs",
              "argmax steps", "greedy runs");
  for (const fs::path& dir : dirs) {
    const FixtureResult r = run_fixture(*gpu_backend, dir);
    std::printf("[ golden   ] %-14s %10.2e %10.2e %8d / %3d %6d / %3d\n", r.name.c_str(),
                r.worst_logits_error, r.worst_max_abs_error, r.argmax_equal, r.steps,
                r.greedy_equal, r.cases);
    steps += r.steps;
    argmax_equal += r.argmax_equal;
    cases += r.cases;
    greedy_equal += r.greedy_equal;
  }
  std::printf("[ golden   ] total: argmax equal on %d of %d steps, greedy equal on %d of %d runs\n",
              argmax_equal, steps, greedy_equal, cases);
  EXPECT_GE(argmax_equal, steps * 9 / 10);
  EXPECT_GE(greedy_equal, cases / 2);
}

}  // namespace
}  // namespace sieve::cuda_test
