// Round trips with block size 1: a flow control after every consecutive frame.
#include "tests/transport/test_isotp_sweep.hpp"

namespace tollgate::transport {
namespace {

TEST_CASE("every size from 1 to 4200 and 70000 round-trips in the minimum frames, BS 1") {
  for (bool fd : {false, true}) {
    for (bool padding : {true, false}) {
      for (std::uint8_t bs : {1}) {
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
