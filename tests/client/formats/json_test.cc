#include "atp/formats/json.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace atp::formats {
namespace {

using ::testing::HasSubstr;

TEST(JsonTest, ParsesEveryKindOfValue) {
  absl::StatusOr<JsonValue> v = ParseJson(
      " {\"a\": [1, -2.5e3, 0, true, false, null], \"s\": \"x\\\"\\\\\\/\\b\\f\\n\\r\\t\","
      " \"u\": \"\\u00e9\\ud83d\\ude00\", \"o\": {}} ");
  ASSERT_TRUE(v.ok()) << v.status();
  ASSERT_TRUE(v->is_object());
  const JsonValue* a = v->Find("a");
  ASSERT_NE(a, nullptr);
  ASSERT_EQ(a->array.size(), 6u);
  EXPECT_EQ(a->array[1].text, "-2.5e3");
  EXPECT_EQ(a->array[3].type, JsonValue::Type::kBool);
  EXPECT_TRUE(a->array[3].boolean);
  EXPECT_EQ(a->array[5].type, JsonValue::Type::kNull);
  EXPECT_EQ(v->Find("s")->text, "x\"\\/\b\f\n\r\t");
  EXPECT_EQ(v->Find("u")->text, "\xc3\xa9\xf0\x9f\x98\x80");
  EXPECT_TRUE(v->Find("o")->is_object());
  EXPECT_EQ(v->Find("missing"), nullptr);
  // Member order is kept.
  EXPECT_EQ(v->object[0].first, "a");
  EXPECT_EQ(v->object[3].first, "o");
}

TEST(JsonTest, ReadsUnsignedIntegersExactly) {
  uint64_t n = 0;
  absl::StatusOr<JsonValue> v = ParseJson("[18446744073709551615, 9007199254740993, 1.0, -1, 1e3]");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_TRUE(v->array[0].AsUint64(&n));
  EXPECT_EQ(n, 18446744073709551615ull);
  EXPECT_TRUE(v->array[1].AsUint64(&n));
  EXPECT_EQ(n, 9007199254740993ull);
  EXPECT_FALSE(v->array[2].AsUint64(&n));
  EXPECT_FALSE(v->array[3].AsUint64(&n));
  EXPECT_FALSE(v->array[4].AsUint64(&n));
  v = ParseJson("18446744073709551616");
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(v->AsUint64(&n));
}

TEST(JsonTest, RejectsMalformedInputNamingTheByte) {
  const struct {
    std::string text;
    const char* want;
  } cases[] = {
      {"", "byte 0: want a value, got the end"},
      {"{\"a\":1,}", "byte 7: want a member name string, got '}'"},
      {"[1,]", "byte 3: want a value"},
      {"{\"a\" 1}", "want ':'"},
      {"{\"a\":1 \"b\":2}", "want ',' or '}'"},
      {"[1 2]", "want ',' or ']'"},
      {"{\"a\":1,\"a\":2}", "duplicate member name \"a\""},
      {"\"abc", "want '\"' to end the string"},
      {"\"a\nb\"", "no raw control character"},
      {"\"\\x\"", "want one of the escapes"},
      {"\"\\u12\"", "want 4 hex digits"},
      {"\"\\ud800\"", "want a low surrogate"},
      {"\"\\udc00\"", "want a high surrogate"},
      {"01", "want the end of the document"},
      {"-", "want a digit"},
      {"1.", "want a digit after '.'"},
      {"1e+", "want a digit in the exponent"},
      {"tru", "want 'true'"},
      {"nul", "want 'null'"},
      {"[1] x", "want the end of the document"},
      {"\x01", "got byte 0x01"},
  };
  for (const auto& c : cases) {
    absl::StatusOr<JsonValue> v = ParseJson(c.text);
    ASSERT_FALSE(v.ok()) << c.text;
    EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(v.status().message(), HasSubstr(c.want)) << c.text;
  }
}

TEST(JsonTest, LimitsNestingDepth) {
  std::string ok(kMaxJsonDepth, '[');
  ok += std::string(kMaxJsonDepth, ']');
  EXPECT_TRUE(ParseJson(ok).ok());
  std::string deep(100000, '[');
  absl::StatusOr<JsonValue> v = ParseJson(deep);
  ASSERT_FALSE(v.ok());
  EXPECT_THAT(v.status().message(), HasSubstr("nesting of at most 64 levels"));
}

TEST(JsonTest, QuotesStringsSoThatTheyParseBack) {
  const std::string s = "a\"b\\c\nd\te\x01\xc3\xa9";
  const std::string quoted = JsonQuote(s);
  EXPECT_EQ(quoted, "\"a\\\"b\\\\c\\nd\\te\\u0001\xc3\xa9\"");
  absl::StatusOr<JsonValue> v = ParseJson(quoted);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->text, s);
}

}  // namespace
}  // namespace atp::formats
