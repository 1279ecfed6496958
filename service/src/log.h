// Structured log lines on stderr: key=value text (logfmt) or one JSON object per line.
//
//   ts=2026-10-27T09:00:00.123456Z level=info msg="worker started" listen=0.0.0.0:50051
//   {"ts":"2026-10-27T09:00:00.123456Z","level":"info","msg":"worker started","listen":"..."}
//
// Thread-safe: each line is written with one call under a lock.
#ifndef ATP_SERVICE_LOG_H_
#define ATP_SERVICE_LOG_H_

#include <cstdint>
#include <initializer_list>
#include <string>

#include "absl/strings/string_view.h"
#include "atp/service/worker_options.h"

namespace atp::service {

// One key=value of a log line. Numbers and booleans stay unquoted in JSON.
struct LogField {
  LogField(absl::string_view k, absl::string_view v) : key(k), value(v) {}
  LogField(absl::string_view k, const std::string& v) : key(k), value(v) {}
  LogField(absl::string_view k, const char* v) : key(k), value(v) {}
  LogField(absl::string_view k, int64_t v) : key(k), value(std::to_string(v)), raw(true) {}
  LogField(absl::string_view k, uint64_t v) : key(k), value(std::to_string(v)), raw(true) {}
  LogField(absl::string_view k, int v) : key(k), value(std::to_string(v)), raw(true) {}
  LogField(absl::string_view k, uint32_t v) : key(k), value(std::to_string(v)), raw(true) {}
  LogField(absl::string_view k, double v);
  LogField(absl::string_view k, bool v) : key(k), value(v ? "true" : "false"), raw(true) {}

  absl::string_view key;
  std::string value;
  bool raw = false;  // a JSON number or boolean
};

// Sets the format and the lowest level written (process-wide; default text, info).
void ConfigureLogging(LogFormat format, LogLevel level);

bool LogEnabled(LogLevel level);

void Log(LogLevel level, absl::string_view msg, std::initializer_list<LogField> fields = {});

// The line Log would write (without the newline), for tests.
std::string FormatLogLine(LogFormat format, LogLevel level, absl::string_view msg,
                          std::initializer_list<LogField> fields);

}  // namespace atp::service

#endif  // ATP_SERVICE_LOG_H_
