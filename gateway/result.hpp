// Result<T>: a value or the specific reason it could not be produced.
// gateway/ and the transport framing never throw; they return these.
#pragma once

#include <cassert>
#include <string_view>
#include <utility>
#include <variant>

#include "tollgate.pb.h"

namespace tollgate {

// The project's one error vocabulary is the wire enum, so a reason found deep in
// the core reaches the host unchanged.
using Error = v1::Error;

// Stable, human-readable name of an error ("bad signature", "revoked", ...).
std::string_view error_name(Error e);

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Result(Error e) : v_(std::in_place_index<1>, e) { assert(e != v1::ERROR_UNSPECIFIED); }

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  Error error() const { return ok() ? v1::ERROR_UNSPECIFIED : std::get<1>(v_); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Error> v_;
};

// Success or a reason, when there is no value to return.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Error e) : e_(e) { assert(e != v1::ERROR_UNSPECIFIED); }  // NOLINT: implicit by design
  bool ok() const { return e_ == v1::ERROR_UNSPECIFIED; }
  explicit operator bool() const { return ok(); }
  Error error() const { return e_; }

 private:
  Error e_ = v1::ERROR_UNSPECIFIED;
};

}  // namespace tollgate
