#include "log.h"

#include <cstdio>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace atp::service {
namespace {

struct LogConfig {
  absl::Mutex mu;
  LogFormat format ABSL_GUARDED_BY(mu) = LogFormat::kText;
  LogLevel level ABSL_GUARDED_BY(mu) = LogLevel::kInfo;
};

LogConfig& Config() {
  static LogConfig* config = new LogConfig();
  return *config;
}

absl::string_view LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

void AppendJsonString(absl::string_view s, std::string* out) {
  out->push_back('"');
  for (char c : s) {
    switch (c) {
      case '"':
        *out += "\\\"";
        break;
      case '\\':
        *out += "\\\\";
        break;
      case '\n':
        *out += "\\n";
        break;
      case '\r':
        *out += "\\r";
        break;
      case '\t':
        *out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          absl::StrAppendFormat(out, "\\u%04x", static_cast<unsigned char>(c));
        } else {
          out->push_back(c);
        }
    }
  }
  out->push_back('"');
}

// logfmt: bare when the value has no space, quote, '=' or control character; else JSON-quoted.
void AppendTextValue(absl::string_view s, std::string* out) {
  bool bare = !s.empty();
  for (char c : s) {
    if (c == ' ' || c == '"' || c == '=' || c == '\\' || static_cast<unsigned char>(c) < 0x20) {
      bare = false;
      break;
    }
  }
  if (bare) {
    out->append(s.data(), s.size());
  } else {
    AppendJsonString(s, out);
  }
}

}  // namespace

LogField::LogField(absl::string_view k, double v)
    : key(k), value(absl::StrFormat("%.6g", v)), raw(true) {}

void ConfigureLogging(LogFormat format, LogLevel level) {
  LogConfig& c = Config();
  absl::MutexLock lock(&c.mu);
  c.format = format;
  c.level = level;
}

bool LogEnabled(LogLevel level) {
  LogConfig& c = Config();
  absl::MutexLock lock(&c.mu);
  return level >= c.level;
}

std::string FormatLogLine(LogFormat format, LogLevel level, absl::string_view msg,
                          std::initializer_list<LogField> fields) {
  const std::string ts = absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", absl::Now(), absl::UTCTimeZone());
  std::string line;
  if (format == LogFormat::kJson) {
    line = absl::StrCat("{\"ts\":\"", ts, "\",\"level\":\"", LevelName(level), "\",\"msg\":");
    AppendJsonString(msg, &line);
    for (const LogField& f : fields) {
      line.push_back(',');
      AppendJsonString(f.key, &line);
      line.push_back(':');
      if (f.raw) {
        line += f.value;
      } else {
        AppendJsonString(f.value, &line);
      }
    }
    line.push_back('}');
  } else {
    line = absl::StrCat("ts=", ts, " level=", LevelName(level), " msg=");
    AppendTextValue(msg, &line);
    for (const LogField& f : fields) {
      line.push_back(' ');
      line.append(f.key.data(), f.key.size());
      line.push_back('=');
      AppendTextValue(f.value, &line);
    }
  }
  return line;
}

void Log(LogLevel level, absl::string_view msg, std::initializer_list<LogField> fields) {
  LogConfig& c = Config();
  LogFormat format;
  {
    absl::MutexLock lock(&c.mu);
    if (level < c.level) return;
    format = c.format;
  }
  std::string line = FormatLogLine(format, level, msg, fields);
  line.push_back('\n');
  // One fwrite per line: stderr is unbuffered, so lines from several threads do not interleave.
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace atp::service
