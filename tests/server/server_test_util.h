#pragma once
// The default model's tokenizer and config as a ModelContext (the CLI tests rely on the default
// model too: scripts/setup.sh fetches it), loaded once per test binary.

#include <gtest/gtest.h>

#include <memory>

#include "core/check.h"
#include "models/model_loader.h"
#include "server/cli_common.h"
#include "server/model_context.h"

namespace sieve::server::testing {

inline const ModelContext& default_model() {
  static const ModelContext* context = [] {
    auto files = models::load_model_files("default", models::LoadFormat::kAuto);
    SIEVE_CHECK(files.ok()) << files.status();
    auto tokenizer = models::load_model_tokenizer(*files);
    SIEVE_CHECK(tokenizer.ok()) << tokenizer.status();
    auto* c = new ModelContext;
    c->served_model_names = {"smol", "default"};
    c->tokenizer = tokenizer->release();  // kept for the whole test binary
    c->chat_template = models::chat_template_for(*c->tokenizer, architecture_hint(files->config));
    c->config = files->config;
    c->source = files->source;
    c->backend_name = "cpu";
    c->max_model_len = 256;  // small, so context errors are cheap to provoke
    return c;
  }();
  return *context;
}

}  // namespace sieve::server::testing
