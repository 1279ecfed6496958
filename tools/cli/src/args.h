// Command-line parsing for one (sub)command: declared options, "--name value" or "--name=value",
// flags, "--help", and the command's help text generated from the declarations.
//
// Errors in the command line are "usage errors": a Status that carries a marker payload so that the
// CLI exits with 2 for them and with 1 for everything that goes wrong later. Not thread-safe.
#ifndef ATP_CLI_ARGS_H_
#define ATP_CLI_ARGS_H_

#include <cstdint>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace atp::cli {

// INVALID_ARGUMENT with `message`, marked as a usage error.
absl::Status UsageError(absl::string_view message);
bool IsUsageError(const absl::Status& status);

class ArgParser {
 public:
  // `command`: the full command ("atp run decompose"); `summary`: one line saying what it does.
  ArgParser(std::string command, std::string summary);

  // Synopsis lines shown under "Usage:" (without the command itself).
  void AddUsage(std::string synopsis);
  // An option that takes a value, shown as "--name VALUE_NAME".
  void AddOption(std::string name, std::string value_name, std::string help);
  // An option without a value.
  void AddFlag(std::string name, std::string help);
  // A titled group heading before the next options ("Rank (at most one):").
  void AddSection(std::string title);
  // Free text after the options.
  void AddNotes(std::string text);

  // Parses `args` (the words after the command). A "--help" or "-h" anywhere sets help_requested()
  // and stops. Usage errors: unknown option, option given twice, missing value, stray argument.
  absl::Status Parse(absl::Span<const std::string> args);

  bool help_requested() const { return help_requested_; }
  const std::string& command() const { return command_; }
  bool Has(absl::string_view name) const { return values_.count(std::string(name)) > 0; }

  // The value of `name`, or nullopt when it was not given.
  std::optional<std::string> Get(absl::string_view name) const;
  // The value of a required option; a usage error when absent.
  absl::StatusOr<std::string> GetRequired(absl::string_view name) const;
  // Integer in [min, max]; `fallback` when absent. Usage error otherwise.
  absl::StatusOr<int64_t> GetInt(absl::string_view name, int64_t fallback, int64_t min,
                                 int64_t max) const;
  // Finite number in (low, high] (or [low, high] when `low_inclusive`); `fallback` when absent.
  absl::StatusOr<double> GetDouble(absl::string_view name, double fallback, double low, double high,
                                   bool low_inclusive) const;
  // One of `choices`; `fallback` when absent.
  absl::StatusOr<std::string> GetChoice(absl::string_view name, absl::string_view fallback,
                                        std::initializer_list<absl::string_view> choices) const;

  std::string Help() const;

  // A usage error whose message starts with the command ("atp run decompose: ...").
  absl::Status Error(absl::string_view message) const;

 private:
  struct Item {
    enum class Kind { kOption, kFlag, kSection } kind;
    std::string name;
    std::string value_name;
    std::string help;
  };
  const Item* FindOption(absl::string_view name) const;

  std::string command_;
  std::string summary_;
  std::vector<std::string> usage_;
  std::vector<Item> items_;
  std::vector<std::string> notes_;
  std::map<std::string, std::string> values_;
  bool help_requested_ = false;
};

}  // namespace atp::cli

#endif  // ATP_CLI_ARGS_H_
