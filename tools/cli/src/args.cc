#include "args.h"

#include <cmath>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace atp::cli {
namespace {

constexpr char kUsagePayload[] = "type.atp.dev/cli.UsageError";
constexpr size_t kHelpColumn = 28;
constexpr size_t kWrapWidth = 100;

// Appends `text` word-wrapped at kWrapWidth to `out`, which is at column `first_column`;
// continuation lines are indented by `indent`. '\n' in `text` starts a new line; a line's leading
// spaces are kept (for indented examples).
void AppendWrapped(absl::string_view text, size_t indent, size_t first_column, std::string* out) {
  size_t column = first_column;
  bool first_line = true;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!first_line) {
      absl::StrAppend(out, "\n", std::string(indent, ' '));
      column = indent;
    }
    first_line = false;
    size_t lead = 0;
    while (lead < line.size() && line[lead] == ' ') ++lead;
    out->append(lead, ' ');
    column += lead;
    bool line_has_word = false;
    for (absl::string_view word : absl::StrSplit(line.substr(lead), ' ', absl::SkipEmpty())) {
      if (line_has_word && column + 1 + word.size() > kWrapWidth) {
        absl::StrAppend(out, "\n", std::string(indent + lead, ' '));
        column = indent + lead;
        line_has_word = false;
      }
      if (line_has_word) {
        out->push_back(' ');
        ++column;
      }
      absl::StrAppend(out, word);
      column += word.size();
      line_has_word = true;
    }
  }
}

}  // namespace

absl::Status UsageError(absl::string_view message) {
  absl::Status status = absl::InvalidArgumentError(message);
  status.SetPayload(kUsagePayload, absl::Cord("1"));
  return status;
}

bool IsUsageError(const absl::Status& status) {
  return status.GetPayload(kUsagePayload).has_value();
}

ArgParser::ArgParser(std::string command, std::string summary)
    : command_(std::move(command)), summary_(std::move(summary)) {}

void ArgParser::AddUsage(std::string synopsis) { usage_.push_back(std::move(synopsis)); }

void ArgParser::AddOption(std::string name, std::string value_name, std::string help) {
  items_.push_back({Item::Kind::kOption, std::move(name), std::move(value_name), std::move(help)});
}

void ArgParser::AddFlag(std::string name, std::string help) {
  items_.push_back({Item::Kind::kFlag, std::move(name), "", std::move(help)});
}

void ArgParser::AddSection(std::string title) {
  items_.push_back({Item::Kind::kSection, "", "", std::move(title)});
}

void ArgParser::AddNotes(std::string text) { notes_.push_back(std::move(text)); }

const ArgParser::Item* ArgParser::FindOption(absl::string_view name) const {
  for (const Item& item : items_) {
    if (item.kind != Item::Kind::kSection && item.name == name) return &item;
  }
  return nullptr;
}

absl::Status ArgParser::Error(absl::string_view message) const {
  return UsageError(absl::StrCat(command_, ": ", message));
}

absl::Status ArgParser::Parse(absl::Span<const std::string> args) {
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--help" || args[i] == "-h") {
      help_requested_ = true;
      return absl::OkStatus();
    }
  }
  for (size_t i = 0; i < args.size(); ++i) {
    absl::string_view arg = args[i];
    if (arg.size() < 3 || arg.substr(0, 2) != "--") {
      return Error(absl::StrCat("unexpected argument \"", arg, "\", want --options only"));
    }
    absl::string_view name = arg.substr(2);
    std::optional<std::string> inline_value;
    if (size_t eq = name.find('='); eq != absl::string_view::npos) {
      inline_value = std::string(name.substr(eq + 1));
      name = name.substr(0, eq);
    }
    const Item* item = FindOption(name);
    if (item == nullptr) return Error(absl::StrCat("unknown option --", name));
    if (values_.count(std::string(name)) > 0) {
      return Error(absl::StrCat("--", name, " is given more than once"));
    }
    if (item->kind == Item::Kind::kFlag) {
      if (inline_value.has_value()) {
        return Error(absl::StrCat("--", name, " takes no value"));
      }
      values_[std::string(name)] = "";
      continue;
    }
    if (inline_value.has_value()) {
      values_[std::string(name)] = *inline_value;
      continue;
    }
    if (i + 1 >= args.size() || (args[i + 1].size() > 2 && args[i + 1].substr(0, 2) == "--")) {
      return Error(absl::StrCat("--", name, " needs a value ", item->value_name));
    }
    values_[std::string(name)] = args[++i];
  }
  return absl::OkStatus();
}

std::optional<std::string> ArgParser::Get(absl::string_view name) const {
  auto it = values_.find(std::string(name));
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

absl::StatusOr<std::string> ArgParser::GetRequired(absl::string_view name) const {
  std::optional<std::string> v = Get(name);
  if (!v.has_value()) {
    const Item* item = FindOption(name);
    return Error(absl::StrCat("--", name, " ", item ? item->value_name : "", " is required"));
  }
  if (v->empty()) return Error(absl::StrCat("--", name, " is empty"));
  return *v;
}

absl::StatusOr<int64_t> ArgParser::GetInt(absl::string_view name, int64_t fallback, int64_t min,
                                          int64_t max) const {
  std::optional<std::string> v = Get(name);
  if (!v.has_value()) return fallback;
  int64_t n;
  if (!absl::SimpleAtoi(*v, &n) || n < min || n > max) {
    return Error(
        absl::StrCat("--", name, " is \"", *v, "\", want an integer in [", min, ", ", max, "]"));
  }
  return n;
}

absl::StatusOr<double> ArgParser::GetDouble(absl::string_view name, double fallback, double low,
                                            double high, bool low_inclusive) const {
  std::optional<std::string> v = Get(name);
  if (!v.has_value()) return fallback;
  double x;
  const bool ok = absl::SimpleAtod(*v, &x) && std::isfinite(x) && x <= high &&
                  (low_inclusive ? x >= low : x > low);
  if (!ok) {
    return Error(absl::StrCat("--", name, " is \"", *v, "\", want a number in ",
                              low_inclusive ? "[" : "(", low, ", ", high, "]"));
  }
  return x;
}

absl::StatusOr<std::string> ArgParser::GetChoice(
    absl::string_view name, absl::string_view fallback,
    std::initializer_list<absl::string_view> choices) const {
  std::optional<std::string> v = Get(name);
  if (!v.has_value()) return std::string(fallback);
  for (absl::string_view c : choices) {
    if (*v == c) return *v;
  }
  return Error(
      absl::StrCat("--", name, " is \"", *v, "\", want one of ", absl::StrJoin(choices, ", ")));
}

std::string ArgParser::Help() const {
  std::string out = absl::StrCat(command_, " - ", summary_, "\n\nUsage:\n");
  for (const std::string& u : usage_) {
    absl::StrAppend(&out, "  ");
    AppendWrapped(absl::StrCat(command_, " ", u), 6, 2, &out);
    out.push_back('\n');
  }
  bool open_section = false;
  for (const Item& item : items_) {
    if (item.kind == Item::Kind::kSection) {
      absl::StrAppend(&out, "\n", item.help, "\n");
      open_section = true;
      continue;
    }
    if (!open_section) {
      absl::StrAppend(&out, "\nOptions:\n");
      open_section = true;
    }
    std::string left = absl::StrCat("  --", item.name);
    if (!item.value_name.empty()) absl::StrAppend(&left, " ", item.value_name);
    if (left.size() + 2 > kHelpColumn) {
      absl::StrAppend(&out, left, "\n", std::string(kHelpColumn, ' '));
    } else {
      absl::StrAppend(&out, left, std::string(kHelpColumn - left.size(), ' '));
    }
    AppendWrapped(item.help, kHelpColumn, kHelpColumn, &out);
    out.push_back('\n');
  }
  absl::StrAppend(&out, "  --help", std::string(kHelpColumn - 8, ' '), "show this help\n");
  for (const std::string& note : notes_) {
    out.push_back('\n');
    AppendWrapped(note, 0, 0, &out);
    out.push_back('\n');
  }
  return out;
}

}  // namespace atp::cli
