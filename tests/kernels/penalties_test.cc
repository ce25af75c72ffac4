// apply_penalties (ref:: and the CPU path) against a dense reference written as vLLM writes it:
// per-vocabulary count and mask arrays, then whole-row where()s.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cpu/ops.h"

namespace sieve::kernels::cpu {
namespace {

// Host arrays of one PenaltyArgs call.
struct Case {
  int64_t num_rows = 0;
  int64_t vocab = 0;
  std::vector<float> logits;  // [num_rows, vocab]
  std::vector<int32_t> indptr{0}, ids, counts;
  std::vector<uint8_t> flags;
  std::vector<float> rep, freq, pres;

  PenaltyArgs args(std::vector<float>& out) {
    auto n = [](const auto& v) { return static_cast<int64_t>(v.size()); };
    return {TensorView(out.data(), DType::kF32, {num_rows, vocab}),
            TensorView(indptr.data(), DType::kI32, {n(indptr)}),
            TensorView(ids.data(), DType::kI32, {n(ids)}),
            TensorView(counts.data(), DType::kI32, {n(counts)}),
            TensorView(flags.data(), DType::kU8, {n(flags)}),
            TensorView(rep.data(), DType::kF32, {num_rows}),
            TensorView(freq.data(), DType::kF32, {num_rows}),
            TensorView(pres.data(), DType::kF32, {num_rows})};
  }
};

// vLLM's apply_penalties over dense rows: the repetition penalty where the token was seen, then
// logits -= freq * counts + pres * (counts > 0), then the mask.
std::vector<float> dense_reference(const Case& c) {
  std::vector<float> out = c.logits;
  for (int64_t r = 0; r < c.num_rows; ++r) {
    std::vector<int32_t> counts(c.vocab, 0);
    std::vector<bool> seen(c.vocab, false), masked(c.vocab, false);
    for (int32_t i = c.indptr[r]; i < c.indptr[r + 1]; ++i) {
      const int32_t t = c.ids[i];
      if (t < 0 || t >= c.vocab) continue;
      counts[t] = c.counts[i];
      seen[t] = (c.flags[i] & kPenaltySeen) != 0;
      masked[t] = (c.flags[i] & kPenaltyMask) != 0;
    }
    float* row = out.data() + r * c.vocab;
    for (int64_t t = 0; t < c.vocab; ++t) {
      float x = row[t];
      if (seen[t]) x = x > 0 ? x / c.rep[r] : x * c.rep[r];
      const float penalty =
          c.freq[r] * static_cast<float>(counts[t]) + c.pres[r] * static_cast<float>(counts[t] > 0);
      x -= penalty;
      row[t] = masked[t] ? -INFINITY : x;
    }
  }
  return out;
}

// Rows of random logits with random unique token lists, flags, counts and penalties (some rows
// with every penalty off, some entries outside the vocabulary).
Case random_case(std::mt19937& rng) {
  Case c;
  c.num_rows = std::uniform_int_distribution<int64_t>(1, 9)(rng);
  c.vocab = std::uniform_int_distribution<int64_t>(20, 700)(rng);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (int64_t i = 0; i < c.num_rows * c.vocab; ++i) c.logits.push_back(normal(rng));
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  for (int64_t r = 0; r < c.num_rows; ++r) {
    std::vector<int32_t> tokens(c.vocab + 4);
    std::iota(tokens.begin(), tokens.end(), -2);  // -2, -1 and vocab, vocab + 1: skipped
    std::shuffle(tokens.begin(), tokens.end(), rng);
    const int64_t k = std::uniform_int_distribution<int64_t>(0, c.vocab / 2)(rng);
    for (int64_t i = 0; i < k; ++i) {
      const int32_t count = uniform(rng) < 0.5f ? 0 : static_cast<int32_t>(1 + 5 * uniform(rng));
      uint8_t flags = count > 0 || uniform(rng) < 0.7f ? kPenaltySeen : 0;
      if (uniform(rng) < 0.1f) flags |= kPenaltyMask;
      c.ids.push_back(tokens[i]);
      c.counts.push_back(count);
      c.flags.push_back(flags);
    }
    c.indptr.push_back(static_cast<int32_t>(c.ids.size()));
    const bool off = uniform(rng) < 0.2f;
    c.rep.push_back(off ? 1.0f : 0.5f + 1.5f * uniform(rng));
    c.freq.push_back(off ? 0.0f : 2.0f * uniform(rng) - 1.0f);
    c.pres.push_back(off ? 0.0f : 2.0f * uniform(rng) - 1.0f);
  }
  return c;
}

// Bitwise equality: -inf == -inf, and a different rounding is a failure.
void expect_bitwise_equal(const std::vector<float>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(std::memcmp(&got[i], &want[i], sizeof(float)), 0)
        << "element " << i << ": " << got[i] << " vs " << want[i];
  }
}

TEST(Penalties, MatchTheDenseReferenceBitForBit) {
  for (uint32_t seed = 1; seed <= 40; ++seed) {
    SCOPED_TRACE(seed);
    std::mt19937 rng(seed);
    Case c = random_case(rng);
    const std::vector<float> want = dense_reference(c);
    std::vector<float> got_ref = c.logits, got_cpu = c.logits;
    ref::apply_penalties(c.args(got_ref));
    apply_penalties(c.args(got_cpu));
    expect_bitwise_equal(got_ref, want);
    expect_bitwise_equal(got_cpu, want);
  }
}

TEST(Penalties, HandComputedValues) {
  Case c;
  c.num_rows = 1;
  c.vocab = 6;
  c.logits = {2.0f, -2.0f, 1.0f, 0.5f, 3.0f, -1.0f};
  // Token 0 and 1 seen in the prompt; 2 generated twice; 3 generated once and masked; 4 masked.
  c.ids = {0, 1, 2, 3, 4};
  c.counts = {0, 0, 2, 1, 0};
  c.flags = {kPenaltySeen, kPenaltySeen, kPenaltySeen, kPenaltySeen | kPenaltyMask, kPenaltyMask};
  c.indptr = {0, 5};
  c.rep = {2.0f};
  c.freq = {0.5f};
  c.pres = {0.25f};
  std::vector<float> out = c.logits;
  apply_penalties(c.args(out));
  EXPECT_EQ(out[0], 1.0f);          // 2 / 2
  EXPECT_EQ(out[1], -4.0f);         // -2 * 2
  EXPECT_EQ(out[2], 0.5f - 1.25f);  // 1 / 2 - (0.5 * 2 + 0.25)
  EXPECT_EQ(out[3], -INFINITY);
  EXPECT_EQ(out[4], -INFINITY);
  EXPECT_EQ(out[5], -1.0f);  // not listed
}

TEST(Penalties, StridedRowsLeaveTheGapAlone) {
  std::mt19937 rng(99);
  Case c = random_case(rng);
  const int64_t stride = c.vocab + 3;
  std::vector<float> wide(c.num_rows * stride, 123.0f), narrow = c.logits;
  for (int64_t r = 0; r < c.num_rows; ++r) {
    std::copy_n(c.logits.data() + r * c.vocab, c.vocab, wide.data() + r * stride);
  }
  PenaltyArgs args = c.args(narrow);
  args.logits = TensorView(wide.data(), DType::kF32, {c.num_rows, stride}).slice(1, 0, c.vocab);
  apply_penalties(args);
  const std::vector<float> want = dense_reference(c);
  for (int64_t r = 0; r < c.num_rows; ++r) {
    for (int64_t t = 0; t < stride; ++t) {
      const float got = wide[r * stride + t];
      if (t < c.vocab) {
        EXPECT_EQ(std::memcmp(&got, &want[r * c.vocab + t], sizeof(float)), 0) << r << "," << t;
      } else {
        EXPECT_EQ(got, 123.0f);
      }
    }
  }
}

}  // namespace
}  // namespace sieve::kernels::cpu
