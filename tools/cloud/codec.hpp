// Strict base64 (RFC 4648, padded) over OpenSSL's EVP block codec.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "gateway/bytes.hpp"

namespace tollgate::cloud {

std::string base64_encode(ByteView data);
// nullopt unless `text` is canonical padded base64 (no whitespace, length a
// multiple of 4, at most two '=' at the end).
std::optional<Bytes> base64_decode(std::string_view text);

}  // namespace tollgate::cloud
