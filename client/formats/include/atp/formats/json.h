// A small, strict JSON reader (RFC 8259) for file headers such as the one of .safetensors.
//
// Numbers keep their source text so that 64-bit integers (byte offsets) are read exactly. Objects
// keep their members in file order; a duplicate key is an error. Nesting is limited to
// kMaxJsonDepth levels so that hostile input cannot exhaust the stack. Thread-safe: pure functions
// and plain values.
#ifndef ATP_FORMATS_JSON_H_
#define ATP_FORMATS_JSON_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace atp::formats {

inline constexpr int kMaxJsonDepth = 64;

struct JsonValue {
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };

  Type type = Type::kNull;
  bool boolean = false;
  // kString: the decoded string; kNumber: the number's source text.
  std::string text;
  std::vector<JsonValue> array;
  std::vector<std::pair<std::string, JsonValue>> object;

  bool is_object() const { return type == Type::kObject; }
  bool is_array() const { return type == Type::kArray; }
  bool is_string() const { return type == Type::kString; }
  bool is_number() const { return type == Type::kNumber; }

  // The member `key` of an object, or nullptr (also for a non-object).
  const JsonValue* Find(absl::string_view key) const;
  // True and *out set when this is a number written as an integer (no fraction, no exponent) in
  // [0, 2^64).
  bool AsUint64(uint64_t* out) const;
};

// "null", "boolean", "number", "string", "array" or "object".
absl::string_view JsonTypeName(JsonValue::Type type);

// Parses exactly one JSON value surrounded by optional whitespace. INVALID_ARGUMENT naming the byte
// offset and what was expected ("JSON error at byte 17: want ',' or '}', got 'x'").
absl::StatusOr<JsonValue> ParseJson(absl::string_view text);

// `s` as a JSON string literal, quotes included (control characters, '"' and '\' escaped).
std::string JsonQuote(absl::string_view s);

}  // namespace atp::formats

#endif  // ATP_FORMATS_JSON_H_
