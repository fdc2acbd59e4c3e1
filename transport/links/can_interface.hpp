// SocketCAN interface facts and set-up: does this kernel speak AF_CAN, which
// index/MTU an interface has, and the controller settings libsocketcan exposes
// (bit rate, restart, state, bus error counters) for `tollgate-bus can-config`.
//
// Every failure carries a one-line message that names the interface and the
// operation, so a CLI can print it as is.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "transport/framing/link_error.hpp"

namespace tollgate::transport {

// Why a link, socket, interface or setting could not be opened or applied
// (used by every link's open() and by open_link() in endpoint.hpp).
struct LinkOpenError {
  LinkError code = LinkError::kIo;
  std::string message;  // one line, e.g. "vcan9: no such network interface"
};
template <class T>
using LinkOpenResult = std::variant<T, LinkOpenError>;  // index 0: value, index 1: error

// Empty when socket(AF_CAN) works here; otherwise the reason (e.g. "this kernel
// has no AF_CAN support (socket: Address family not supported by protocol)").
// Tests use it to skip with a clear message.
std::string af_can_unavailable_reason();

struct CanInterfaceInfo {
  unsigned index = 0;  // if_nametoindex
  unsigned mtu = 0;    // 16 (classic CAN) or 72 (CAN FD)
  bool fd_capable = false;
  bool up = false;  // IFF_UP
};
// Looks `name` up and checks that it is a CAN interface (ARPHRD_CAN).
LinkOpenResult<CanInterfaceInfo> lookup_can_interface(const std::string& name);

// Controller state as the kernel reports it (linux/can/netlink.h).
enum class CanState { kErrorActive, kErrorWarning, kErrorPassive, kBusOff, kStopped, kSleeping };
std::string_view can_state_name(CanState s);

struct CanBusErrorCounters {
  std::uint16_t tx = 0;
  std::uint16_t rx = 0;
};

struct CanBitTimingInfo {
  std::uint32_t bitrate = 0;       // bit/s
  std::uint32_t sample_point = 0;  // tenths of a percent (875 = 87.5 %)
};

// libsocketcan wrappers. Virtual interfaces (vcan) have no controller, so state,
// counters and bit timing fail on them with a message saying so. Changing
// settings needs CAP_NET_ADMIN.
struct Unit {};
// Stops the interface, sets the nominal bit rate, and starts it again if it was up.
LinkOpenResult<Unit> set_can_bitrate(const std::string& name, std::uint32_t bitrate);
// Restarts a controller that is bus-off (manual recovery).
LinkOpenResult<Unit> restart_can(const std::string& name);
LinkOpenResult<CanState> get_can_state(const std::string& name);
LinkOpenResult<CanBusErrorCounters> get_can_berr(const std::string& name);
LinkOpenResult<CanBitTimingInfo> get_can_bittiming(const std::string& name);

}  // namespace tollgate::transport
