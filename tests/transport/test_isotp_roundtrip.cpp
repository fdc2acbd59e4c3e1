// Round trips with block sizes 0 and 8 (BS 1 is in test_isotp_roundtrip_bs1.cpp).
#include "tests/transport/test_isotp_sweep.hpp"

namespace tollgate::transport {
namespace {

TEST_CASE("every size from 1 to 4200 and 70000 round-trips in the minimum frames, BS 0 and 8") {
  for (bool fd : {false, true}) {
    for (bool padding : {true, false}) {
      for (std::uint8_t bs : {0, 8}) {
        CAPTURE(fd);
        CAPTURE(padding);
        CAPTURE(int{bs});
        test::sweep(fd, padding, bs);
      }
    }
  }
}

}  // namespace
}  // namespace tollgate::transport
