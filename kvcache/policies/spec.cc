#include "kvcache/policies/spec.h"

#include <algorithm>
#include <cmath>

#include "kvcache/formats.h"
#include "kvcache/policies/params.h"
#include "kvcache/policies/registry.h"
#include "nlohmann/json.hpp"

namespace sieve::kvcache {

StatusOr<std::shared_ptr<const PolicyParams>> KvPolicy::parse(ParamReader& params) const {
  (void)params;
  return std::make_shared<const PolicyParams>();
}

const std::vector<std::string>& kv_formats() {
  static const std::vector<std::string> formats = [] {
    std::vector<std::string> names;
    for (const KvFormat& format : kKvFormats) names.emplace_back(format.name);
    return names;
  }();
  return formats;
}

int CompressionSpec::budget_for(int prompt_tokens) const {
  if (budget) return *budget;
  if (!keep_ratio) return prompt_tokens;
  // KVPress keeps int(n * (1 - compression_ratio)) with compression_ratio = 1 - keep_ratio.
  const double compression_ratio = 1.0 - *keep_ratio;
  return std::max(1, static_cast<int>(prompt_tokens * (1.0 - compression_ratio)));
}

double CompressionSpec::exact_budget_for(int prompt_tokens) const {
  if (budget) return *budget;
  if (!keep_ratio) return prompt_tokens;
  return prompt_tokens * (1.0 - (1.0 - *keep_ratio));
}

namespace {

// A field name as the client sent it, when it is short and printable (it goes into messages).
std::string printable_name(const std::string& name) {
  const bool printable = name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
                           return c >= 0x20 && c < 0x7f;
                         });
  return printable ? name : "<unprintable name>";
}

std::string join(const std::vector<std::string_view>& items) {
  std::string out;
  for (std::string_view item : items) out += (out.empty() ? "" : ", ") + std::string(item);
  return out;
}

// `protected_spans`: [[begin, end], ...] token positions, begin < end.
Status read_spans(ParamReader& reader, Protection* protection) {
  const nlohmann::json* spans = reader.read_raw("protected_spans");
  if (!spans) return OkStatus();
  const std::string field = ParamReader::field("protected_spans");
  if (!spans->is_array() || spans->size() > 1024) {
    return field_error(field, "must be a list of at most 1024 [begin, end] pairs");
  }
  for (const nlohmann::json& span : *spans) {
    const bool pair = span.is_array() && span.size() == 2 && span[0].is_number_integer() &&
                      span[1].is_number_integer();
    if (!pair) return field_error(field, "each span is [begin, end] token positions");
    const int64_t begin = span[0].get<int64_t>(), end = span[1].get<int64_t>();
    if (begin < 0 || end <= begin || end > (int64_t{1} << 30)) {
      return field_error(field, "span [" + std::to_string(begin) + ", " + std::to_string(end) +
                                    "] must have 0 <= begin < end");
    }
    protection->spans.emplace_back(static_cast<int>(begin), static_cast<int>(end));
  }
  return OkStatus();
}

// `segments`: [[begin, end], ...] disjoint token positions, begin < end.
Status read_segments(const nlohmann::json& value, Protection* protection) {
  if (!value.is_array() || value.size() > 1024) {
    return field_error("compression.segments", "must be a list of at most 1024 [begin, end] pairs");
  }
  for (const nlohmann::json& segment : value) {
    const bool pair = segment.is_array() && segment.size() == 2 && segment[0].is_number_integer() &&
                      segment[1].is_number_integer();
    if (!pair) {
      return field_error("compression.segments", "each segment is [begin, end] positions");
    }
    const int64_t begin = segment[0].get<int64_t>(), end = segment[1].get<int64_t>();
    if (begin < 0 || end <= begin || end > (int64_t{1} << 30)) {
      return field_error("compression.segments", "segment [" + std::to_string(begin) + ", " +
                                                     std::to_string(end) +
                                                     "] must have 0 <= begin < end");
    }
    protection->segments.emplace_back(static_cast<int>(begin), static_cast<int>(end));
  }
  std::vector<std::pair<int, int>> sorted = protection->segments;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 1; i < sorted.size(); ++i) {
    if (sorted[i].first < sorted[i - 1].second) {
      return field_error("compression.segments",
                         "segments [" + std::to_string(sorted[i - 1].first) + ", " +
                             std::to_string(sorted[i - 1].second) + "] and [" +
                             std::to_string(sorted[i].first) + ", " +
                             std::to_string(sorted[i].second) + "] overlap");
    }
  }
  return OkStatus();
}

Status read_budget(const nlohmann::json& value, CompressionSpec* spec) {
  const bool integral =
      value.is_number_integer() || (value.is_number_float() && std::isfinite(value.get<double>()) &&
                                    std::floor(value.get<double>()) == value.get<double>());
  if (!integral) return field_error("compression.budget", "must be an integer");
  const double budget = value.get<double>();
  if (budget < 1 || budget > 1e9) {
    return field_error("compression.budget", "must be in [1, 1e9], got " + value.dump());
  }
  spec->budget = static_cast<int>(budget);
  return OkStatus();
}

Status read_fields(const nlohmann::json& json, CompressionSpec* spec,
                   const nlohmann::json** params) {
  for (const auto& [key, value] : json.items()) {
    if (key == "method") {
      if (!value.is_string()) return field_error("compression.method", "must be a string");
      spec->method = value.get<std::string>();
    } else if (key == "budget") {
      if (!value.is_null()) RETURN_IF_ERROR(read_budget(value, spec));
    } else if (key == "keep_ratio") {
      if (value.is_null()) continue;
      if (!value.is_number()) return field_error("compression.keep_ratio", "must be a number");
      const double ratio = value.get<double>();
      if (!(ratio > 0.0 && ratio <= 1.0)) {
        return field_error("compression.keep_ratio", "must be in (0, 1], got " + value.dump());
      }
      spec->keep_ratio = ratio;
    } else if (key == "kv_format") {
      if (value.is_null()) continue;
      if (!value.is_string()) return field_error("compression.kv_format", "must be a string");
      spec->kv_format = value.get<std::string>();
    } else if (key == "fair_eviction") {
      if (value.is_null()) continue;
      if (!value.is_boolean()) {
        return field_error("compression.fair_eviction", "must be true or false");
      }
      spec->protection.fair_eviction = value.get<bool>();
    } else if (key == "segments") {
      if (!value.is_null()) RETURN_IF_ERROR(read_segments(value, &spec->protection));
    } else if (key == "params") {
      if (value.is_null()) continue;
      if (!value.is_object()) return field_error("compression.params", "must be an object");
      *params = &value;
    } else {
      return field_error("compression." + printable_name(key),
                         "unknown field (expected method, budget, keep_ratio, "
                         "kv_format, fair_eviction, segments or params)");
    }
  }
  return OkStatus();
}

}  // namespace

StatusOr<CompressionSpec> parse_compression(const nlohmann::json& json) {
  if (!json.is_object()) return field_error("compression", "must be an object");
  CompressionSpec spec;
  static const nlohmann::json kNoParams = nlohmann::json::object();
  const nlohmann::json* params = &kNoParams;
  RETURN_IF_ERROR(read_fields(json, &spec, &params));
  if (spec.budget && spec.keep_ratio) {
    return field_error("compression.budget", "give budget or keep_ratio, not both");
  }
  const std::vector<std::string_view> names = compression_method_names();
  if (std::find(names.begin(), names.end(), spec.method) == names.end()) {
    return field_error("compression.method", "unknown method (registered: " + join(names) + ")");
  }
  if (!spec.kv_format.empty() && !parse_kv_format(spec.kv_format).ok()) {
    std::string known;
    for (const std::string& name : kv_formats()) known += (known.empty() ? "" : ", ") + name;
    return field_error(
        "compression.kv_format",
        "unknown format \"" + printable_name(spec.kv_format) + "\" (supported: " + known + ")");
  }
  spec.policy = find_policy(spec.method);
  ParamReader reader(*params);
  if (!spec.protection.segments.empty() && !spec.protection.fair_eviction) {
    return field_error("compression.segments", "segments are for fair_eviction, which is off");
  }
  if (!spec.policy) {
    if (spec.protection.fair_eviction) {
      return field_error("compression.fair_eviction",
                         "method 'none' keeps the full cache and evicts nothing");
    }
    if (spec.budget || spec.keep_ratio) {
      return field_error(spec.budget ? "compression.budget" : "compression.keep_ratio",
                         "method 'none' keeps the full cache and takes no budget");
    }
    RETURN_IF_ERROR(reader.finish(spec.method));
    return spec;
  }
  if (!spec.budget && !spec.keep_ratio) {
    return field_error("compression.budget",
                       "method '" + spec.method + "' needs a budget or a keep_ratio");
  }
  Protection& p = spec.protection;
  p.sink = spec.policy->default_sink();
  p.window = spec.policy->default_window();
  spec.interval = spec.policy->default_interval();
  RETURN_IF_ERROR(reader.read_int("sink", 0, 1 << 20, &p.sink));
  RETURN_IF_ERROR(reader.read_int("window", 0, kMaxQueryWindow, &p.window));
  RETURN_IF_ERROR(reader.read_bool("protect_system_prompt", &p.protect_system_prompt));
  RETURN_IF_ERROR(read_spans(reader, &p));
  RETURN_IF_ERROR(reader.read_int("interval", 0, 1 << 20, &spec.interval));
  if (spec.interval > 0 && spec.policy->prefill_only()) {
    return field_error(ParamReader::field("interval"),
                       "method '" + spec.method + "' compresses at the prompt's end only: 0");
  }
  if (spec.interval > 0 && spec.interval < p.window) {
    return field_error(
        ParamReader::field("interval"),
        "must be 0 (prefill only) or at least the window (" + std::to_string(p.window) + ")");
  }
  ASSIGN_OR_RETURN(spec.params, spec.policy->parse(reader));
  const PolicyNeeds needs = spec.policy->needs(*spec.params);
  if (needs.any_window() && p.window < 1) {
    return field_error(ParamReader::field("window"),
                       "method '" + spec.method + "' scores with the window's queries: at least 1");
  }
  RETURN_IF_ERROR(reader.finish(spec.method));
  return spec;
}

std::vector<int32_t> segment_bounds(const Protection& protection, int system_prompt_tokens,
                                    int prompt_tokens) {
  if (!protection.fair_eviction) return {};
  std::vector<int32_t> bounds = {system_prompt_tokens, prompt_tokens};
  for (const auto& [begin, end] : protection.segments) {
    bounds.push_back(begin);
    bounds.push_back(end);
  }
  std::sort(bounds.begin(), bounds.end());
  bounds.erase(std::unique(bounds.begin(), bounds.end()), bounds.end());
  bounds.erase(bounds.begin(), std::upper_bound(bounds.begin(), bounds.end(), 0));
  return bounds;
}

}  // namespace sieve::kvcache
