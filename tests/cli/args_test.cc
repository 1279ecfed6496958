#include "args.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace atp::cli {
namespace {

using ::testing::HasSubstr;

ArgParser MakeParser() {
  ArgParser p("atp test", "a test command");
  p.AddUsage("--n N [--flag]");
  p.AddOption("n", "N", "a number");
  p.AddOption("x", "F", "a fraction");
  p.AddOption("mode", "M", "a choice");
  p.AddSection("Other:");
  p.AddFlag("flag", "a flag");
  p.AddNotes("Notes here.");
  return p;
}

absl::Status Parse(ArgParser& p, std::vector<std::string> args) { return p.Parse(args); }

TEST(ArgParserTest, ParsesOptionsFlagsAndEqualsForm) {
  ArgParser p = MakeParser();
  ASSERT_TRUE(Parse(p, {"--n", "5", "--x=0.5", "--flag"}).ok());
  EXPECT_FALSE(p.help_requested());
  EXPECT_EQ(*p.GetInt("n", 0, 1, 10), 5);
  EXPECT_EQ(*p.GetDouble("x", 0, 0, 1, false), 0.5);
  EXPECT_TRUE(p.Has("flag"));
  EXPECT_FALSE(p.Has("mode"));
  EXPECT_EQ(*p.GetChoice("mode", "a", {"a", "b"}), "a");
  EXPECT_EQ(*p.GetInt("missing-is-fallback", 42, 0, 100), 42);
  // Negative numbers are values, not options.
  ArgParser q = MakeParser();
  ASSERT_TRUE(Parse(q, {"--n", "-3"}).ok());
  EXPECT_EQ(*q.GetInt("n", 0, -5, 5), -3);
}

TEST(ArgParserTest, UsageErrorsNameTheOption) {
  const struct {
    std::vector<std::string> args;
    const char* want;
  } cases[] = {
      {{"--nope"}, "atp test: unknown option --nope"},
      {{"--n", "1", "--n", "2"}, "--n is given more than once"},
      {{"--n"}, "--n needs a value N"},
      {{"--n", "--flag"}, "--n needs a value N"},
      {{"--flag=1"}, "--flag takes no value"},
      {{"stray"}, "unexpected argument \"stray\""},
      {{"-n", "3"}, "unexpected argument \"-n\""},
  };
  for (const auto& c : cases) {
    ArgParser p = MakeParser();
    absl::Status s = Parse(p, c.args);
    ASSERT_FALSE(s.ok()) << c.want;
    EXPECT_TRUE(IsUsageError(s));
    EXPECT_THAT(s.message(), HasSubstr(c.want));
  }
}

TEST(ArgParserTest, ValueErrorsAreUsageErrors) {
  ArgParser p = MakeParser();
  ASSERT_TRUE(Parse(p, {"--n", "abc", "--x", "1.5", "--mode", "c"}).ok());
  absl::StatusOr<int64_t> n = p.GetInt("n", 0, 1, 10);
  ASSERT_FALSE(n.ok());
  EXPECT_TRUE(IsUsageError(n.status()));
  EXPECT_THAT(n.status().message(), HasSubstr("--n is \"abc\", want an integer in [1, 10]"));
  absl::StatusOr<double> x = p.GetDouble("x", 0, 0, 1, false);
  ASSERT_FALSE(x.ok());
  EXPECT_THAT(x.status().message(), HasSubstr("--x is \"1.5\", want a number in (0, 1]"));
  absl::StatusOr<std::string> m = p.GetChoice("mode", "a", {"a", "b"});
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(m.status().message(), HasSubstr("--mode is \"c\", want one of a, b"));
  EXPECT_FALSE(IsUsageError(absl::InvalidArgumentError("plain")));
  absl::StatusOr<std::string> r = MakeParser().GetRequired("n");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("--n N is required"));
}

TEST(ArgParserTest, HelpListsEveryOption) {
  ArgParser p = MakeParser();
  ASSERT_TRUE(Parse(p, {"--nope", "--help"}).ok());  // --help wins over errors
  EXPECT_TRUE(p.help_requested());
  const std::string help = p.Help();
  for (const char* want : {"atp test - a test command", "atp test --n N [--flag]", "--n N", "--x F",
                           "--mode M", "Other:", "--flag", "--help", "Notes here."}) {
    EXPECT_THAT(help, HasSubstr(want));
  }
}

}  // namespace
}  // namespace atp::cli
