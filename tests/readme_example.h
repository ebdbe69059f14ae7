// What the README's example (compiled by readme_test) uses without defining: the prompt and the
// provider call, which readme_test.cc stands in for.
#pragma once

#include <cstdint>
#include <string>

struct Reply {
  struct {
    std::int64_t prompt_tokens = 0;
    std::int64_t completion_tokens = 0;
  } usage;
};

Reply call_openai(const std::string& prompt);

// The README's first C++ block as a function body: 0 when it ran to its end, else what it
// returned.
int readme_example(const std::string& prompt);
