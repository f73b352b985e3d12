#include "arbor/common/logging.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "spdlog/sinks/stdout_color_sinks.h"

namespace arbor {

absl::Status InitLogging(absl::string_view level) {
  const auto parsed = spdlog::level::from_str(std::string(level));
  if (parsed == spdlog::level::off && level != "off") {
    return absl::InvalidArgumentError(absl::StrCat("log level \"", level, "\" unknown"));
  }
  // Logs go to stderr, so that a program's stdout carries only its output (JSON, text).
  if (spdlog::get("arbor") == nullptr) spdlog::set_default_logger(spdlog::stderr_color_mt("arbor"));
  spdlog::set_level(parsed);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  return absl::OkStatus();
}

}  // namespace arbor
