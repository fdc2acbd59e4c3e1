#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <random>
#include <vector>

#include "transport/framing/cobs.hpp"

namespace {

using namespace tollgate::transport;
using Bytes = std::vector<std::uint8_t>;

// Straight from the paper, written for clarity rather than speed, so the
// production encoder/decoder are checked against an independent reading.
Bytes reference_encode(const Bytes& in) {
  Bytes out;
  std::size_t i = 0;
  for (;;) {
    std::size_t j = i;
    while (j < in.size() && in[j] != 0 && j - i < 254) ++j;
    const std::size_t len = j - i;
    if (len == 254) {
      out.push_back(0xFF);
      out.insert(out.end(), in.begin() + static_cast<std::ptrdiff_t>(i),
                 in.begin() + static_cast<std::ptrdiff_t>(j));
      i = j;
      if (i == in.size()) break;  // short form: no empty block after a final 0xFF block
      continue;
    }
    out.push_back(static_cast<std::uint8_t>(len + 1));
    out.insert(out.end(), in.begin() + static_cast<std::ptrdiff_t>(i),
               in.begin() + static_cast<std::ptrdiff_t>(j));
    if (j == in.size()) break;  // the virtual trailing zero
    i = j + 1;
  }
  return out;
}

std::optional<Bytes> reference_decode(const Bytes& in) {
  if (in.empty()) return std::nullopt;
  Bytes out;
  std::size_t i = 0;
  while (i < in.size()) {
    const std::uint8_t code = in[i];
    if (code == 0 || i + code > in.size()) return std::nullopt;
    for (std::size_t j = 1; j < code; ++j) {
      if (in[i + j] == 0) return std::nullopt;
      out.push_back(in[i + j]);
    }
    i += code;
    if (code != 0xFF && i < in.size()) out.push_back(0);
  }
  return out;
}

Bytes encode(const Bytes& in) {
  Bytes out(cobs_max_encoded_size(in.size()));
  const auto r = cobs_encode(in, out);
  REQUIRE(r.index() == 0);
  out.resize(std::get<0>(r));
  return out;
}

std::variant<Bytes, LinkError> decode(const Bytes& in, std::size_t capacity) {
  Bytes out(capacity);
  const auto r = cobs_decode(in, out);
  if (r.index() == 1) return std::get<1>(r);
  out.resize(std::get<0>(r));
  return out;
}

Bytes run(std::size_t n, std::uint8_t first = 1) {
  Bytes b(n);
  for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<std::uint8_t>(1 + (first - 1 + i) % 255);
  return b;
}

Bytes concat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// Inputs that exercise every kind of block boundary.
std::vector<Bytes> shapes() {
  std::mt19937 rng(0xC0B5);
  std::vector<Bytes> s = {
      {},
      {0x00},
      {0x00, 0x00},
      {0x01},
      Bytes(300, 0x00),
      run(253),
      run(254),
      run(255),
      run(508),
      run(509),
      concat({run(253), {0x00}}),
      concat({run(254), {0x00}}),
      concat({run(255), {0x00}}),
      concat({{0x00}, run(254)}),
      concat({run(254), {0x00}, run(254)}),
  };
  Bytes alternating;
  for (int i = 0; i < 200; ++i) alternating.insert(alternating.end(), {0x00, 0xFF});
  s.push_back(alternating);
  for (std::size_t n : {1U, 7U, 100U, 1000U, 5000U}) {
    Bytes sparse_zeros(n);
    for (auto& b : sparse_zeros) b = static_cast<std::uint8_t>(rng() % 8 == 0 ? 0 : rng());
    s.push_back(sparse_zeros);
    Bytes no_zeros(n);
    for (auto& b : no_zeros) b = static_cast<std::uint8_t>(1 + rng() % 255);
    s.push_back(no_zeros);
  }
  return s;
}

}  // namespace

TEST_CASE("cobs encodes the published examples exactly") {
  struct Vector {
    Bytes in, out;
  };
  const std::vector<Vector> vectors = {
      {{}, {0x01}},
      {{0x00}, {0x01, 0x01}},
      {{0x00, 0x00}, {0x01, 0x01, 0x01}},
      {{0x00, 0x11, 0x00}, {0x01, 0x02, 0x11, 0x01}},
      {{0x11, 0x22, 0x00, 0x33}, {0x03, 0x11, 0x22, 0x02, 0x33}},
      {{0x11, 0x22, 0x33, 0x44}, {0x05, 0x11, 0x22, 0x33, 0x44}},
      {{0x11, 0x00, 0x00, 0x00}, {0x02, 0x11, 0x01, 0x01, 0x01}},
      {run(254), concat({{0xFF}, run(254)})},
      {concat({{0x00}, run(254)}), concat({{0x01, 0xFF}, run(254)})},
      {run(255), concat({{0xFF}, run(254), {0x02, 0xFF}})},
      {concat({run(254, 2), {0x00}}), concat({{0xFF}, run(254, 2), {0x01, 0x01}})},
      {concat({run(253, 3), {0x00, 0x01}}), concat({{0xFE}, run(253, 3), {0x02, 0x01}})},
  };
  for (const auto& v : vectors) {
    CAPTURE(v.in.size());
    CHECK(encode(v.in) == v.out);
    CHECK(cobs_encoded_size(v.in) == v.out.size());
    CHECK(decode(v.out, v.in.size()) == std::variant<Bytes, LinkError>(v.in));
  }
}

TEST_CASE("cobs round trip matches the reference and never emits a zero") {
  for (const auto& in : shapes()) {
    CAPTURE(in.size());
    const Bytes out = encode(in);
    CHECK(out == reference_encode(in));
    CHECK(std::find(out.begin(), out.end(), 0x00) == out.end());
    CHECK(out.size() == cobs_encoded_size(in));
    CHECK(out.size() <= cobs_max_encoded_size(in.size()));
    CHECK(out.size() >= in.size() + 1);
    CHECK(decode(out, in.size()) == std::variant<Bytes, LinkError>(in));
    CHECK(reference_decode(out) == in);
  }
}

TEST_CASE("cobs worst case is an input without zeros and costs max(1, ceil(n/254)) bytes") {
  for (std::size_t n = 0; n <= 2100; ++n) {
    const Bytes in = run(n);
    const std::size_t expected = n + std::max<std::size_t>(1, (n + 253) / 254);
    if (cobs_encoded_size(in) != expected || cobs_max_encoded_size(n) != expected) {
      FAIL_CHECK("n=" << n << " size=" << cobs_encoded_size(in) << " expected=" << expected);
    }
  }
}

TEST_CASE("cobs decoder accepts the long form with an empty block after a final 0xFF block") {
  const Bytes long_form = concat({{0xFF}, run(254), {0x01}});
  CHECK(decode(long_form, 254) == std::variant<Bytes, LinkError>(run(254)));
  CHECK(reference_decode(long_form) == run(254));
}

TEST_CASE("cobs decoder rejects empty input, embedded zeros and code bytes past the end") {
  CHECK(decode({}, 10) == std::variant<Bytes, LinkError>(LinkError::kMalformedFrame));
  CHECK(decode({0x03, 0x11, 0x00, 0x22}, 10) ==
        std::variant<Bytes, LinkError>(LinkError::kMalformedFrame));
  CHECK(decode({0x05, 0x11, 0x22}, 10) ==
        std::variant<Bytes, LinkError>(LinkError::kMalformedFrame));
  CHECK(decode({0x02, 0x11, 0xFF}, 10) ==
        std::variant<Bytes, LinkError>(LinkError::kMalformedFrame));
  CHECK(decode({0x00}, 10) == std::variant<Bytes, LinkError>(LinkError::kMalformedFrame));
}

TEST_CASE("cobs decoder agrees with the reference on random garbage") {
  std::mt19937 rng(0x6A26A6E);
  for (int i = 0; i < 20000; ++i) {
    Bytes in(rng() % 40);
    // Small code bytes so that well-formed inputs are common too.
    for (auto& b : in) b = static_cast<std::uint8_t>(rng() % 4 == 0 ? rng() % 256 : 1 + rng() % 6);
    const auto ref = reference_decode(in);
    const auto got = decode(in, 64);
    if (ref) {
      CHECK(got == std::variant<Bytes, LinkError>(*ref));
    } else {
      CHECK(got == std::variant<Bytes, LinkError>(LinkError::kMalformedFrame));
    }
  }
}

TEST_CASE("cobs decoder reports overflow and never writes past the output") {
  const Bytes in = concat({run(100), {0x00}, run(100)});
  const Bytes encoded = encode(in);
  for (std::size_t cap = 0; cap < in.size(); ++cap) {
    Bytes storage(cap + 16, 0xA5);
    const auto r = cobs_decode(encoded, std::span<std::uint8_t>(storage.data(), cap));
    CHECK(r == SizeOrError(LinkError::kOverflow));
    CHECK(std::all_of(storage.begin() + static_cast<std::ptrdiff_t>(cap), storage.end(),
                      [](std::uint8_t b) { return b == 0xA5; }));
  }
}

TEST_CASE("cobs encoder refuses a short output and never writes past it") {
  const Bytes in = concat({run(300), {0x00, 0x00}, run(10)});
  const std::size_t need = cobs_encoded_size(in);
  for (std::size_t cap = 0; cap < need; ++cap) {
    Bytes storage(cap + 16, 0xA5);
    CHECK(cobs_encode(in, std::span<std::uint8_t>(storage.data(), cap)) ==
          SizeOrError(LinkError::kTooLarge));
    CobsEncoder enc(std::span<std::uint8_t>(storage.data(), cap));
    enc.put(in);
    CHECK(enc.finish() == SizeOrError(LinkError::kTooLarge));
    CHECK(enc.size() == need);
    CHECK(std::all_of(storage.begin() + static_cast<std::ptrdiff_t>(cap), storage.end(),
                      [](std::uint8_t b) { return b == 0xA5; }));
  }
}

TEST_CASE("cobs encoder fed in pieces equals the one-shot encoding") {
  for (const auto& in : shapes()) {
    if (in.size() > 1100) continue;
    const Bytes whole = encode(in);
    for (std::size_t cut = 0; cut <= in.size(); ++cut) {
      Bytes out(whole.size());
      CobsEncoder enc(out);
      enc.put(std::span<const std::uint8_t>(in).first(cut));
      enc.put(std::span<const std::uint8_t>(in).subspan(cut));
      const auto r = enc.finish();
      if (r != SizeOrError(whole.size()) || out != whole)
        FAIL_CHECK("size " << in.size() << " cut " << cut);
    }
  }
}
