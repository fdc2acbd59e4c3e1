#include "transport/links/can_interface.hpp"

// glibc's net/if.h must come before any linux/if.h (pulled in by libsocketcan).
#include <net/if.h>
#include <net/if_arp.h>

#include <libsocketcan.h>
#include <linux/can.h>
#include <linux/can/netlink.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace tollgate::transport {
namespace {

std::string errno_text(int err) {
  return std::strerror(err);
}

LinkOpenError io_error(const std::string& name, std::string_view what, int err) {
  std::string msg = name + ": " + std::string(what);
  if (err != 0) msg += ": " + errno_text(err);
  if (err == EPERM || err == EACCES) msg += " (needs CAP_NET_ADMIN)";
  return {LinkError::kIo, std::move(msg)};
}

// Small RAII fd so every early return closes it.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// libsocketcan reports failure as -1 and rarely sets errno, so the reason is
// found by checking the interface ourselves first.
LinkOpenResult<CanInterfaceInfo> checked(const std::string& name) {
  if (auto why = af_can_unavailable_reason(); !why.empty()) {
    return LinkOpenError{LinkError::kIo, name + ": " + why};
  }
  return lookup_can_interface(name);
}

}  // namespace

std::string af_can_unavailable_reason() {
  Fd s(::socket(PF_CAN, SOCK_RAW, CAN_RAW));
  if (s.get() >= 0) return {};
  return "this kernel has no AF_CAN support (socket(PF_CAN, SOCK_RAW, CAN_RAW): " +
         errno_text(errno) + "); load the can and can_raw modules or use a vbus: endpoint";
}

LinkOpenResult<CanInterfaceInfo> lookup_can_interface(const std::string& name) {
  if (name.empty()) return LinkOpenError{LinkError::kInvalidArgument, "empty CAN interface name"};
  if (name.size() >= IFNAMSIZ) {
    return LinkOpenError{
        LinkError::kInvalidArgument,
        name + ": interface name longer than " + std::to_string(IFNAMSIZ - 1) + " characters"};
  }
  CanInterfaceInfo info;
  info.index = ::if_nametoindex(name.c_str());
  if (info.index == 0) {
    return LinkOpenError{LinkError::kInvalidArgument,
                         name + ": no such network interface (" + errno_text(errno) + ")"};
  }
  // Any socket family answers the netdevice ioctls; AF_UNIX exists everywhere.
  Fd s(::socket(AF_UNIX, SOCK_DGRAM, 0));
  if (s.get() < 0) return io_error(name, "socket(AF_UNIX)", errno);
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, name.c_str(), name.size());
  if (::ioctl(s.get(), SIOCGIFHWADDR, &ifr) < 0) return io_error(name, "SIOCGIFHWADDR", errno);
  if (ifr.ifr_hwaddr.sa_family != ARPHRD_CAN) {
    return LinkOpenError{LinkError::kInvalidArgument, name + ": not a CAN interface (link type " +
                                                          std::to_string(ifr.ifr_hwaddr.sa_family) +
                                                          ")"};
  }
  if (::ioctl(s.get(), SIOCGIFMTU, &ifr) < 0) return io_error(name, "SIOCGIFMTU", errno);
  info.mtu = static_cast<unsigned>(ifr.ifr_mtu);
  info.fd_capable = info.mtu >= CANFD_MTU;
  if (::ioctl(s.get(), SIOCGIFFLAGS, &ifr) < 0) return io_error(name, "SIOCGIFFLAGS", errno);
  info.up = (ifr.ifr_flags & IFF_UP) != 0;
  return info;
}

std::string_view can_state_name(CanState s) {
  switch (s) {
    case CanState::kErrorActive:
      return "ERROR-ACTIVE";
    case CanState::kErrorWarning:
      return "ERROR-WARNING";
    case CanState::kErrorPassive:
      return "ERROR-PASSIVE";
    case CanState::kBusOff:
      return "BUS-OFF";
    case CanState::kStopped:
      return "STOPPED";
    case CanState::kSleeping:
      return "SLEEPING";
  }
  return "UNKNOWN";
}

LinkOpenResult<Unit> set_can_bitrate(const std::string& name, std::uint32_t bitrate) {
  auto info = checked(name);
  if (info.index() != 0) return std::get<1>(info);
  if (bitrate == 0 || bitrate > 1'000'000) {
    return LinkOpenError{LinkError::kInvalidArgument,
                         name + ": bit rate " + std::to_string(bitrate) +
                             " out of range (1..1000000 bit/s for the nominal phase)"};
  }
  const bool was_up = std::get<0>(info).up;
  // The kernel refuses bit timing changes on a running controller (EBUSY).
  if (was_up && can_do_stop(name.c_str()) != 0)
    return io_error(name, "stopping the interface", errno);
  if (can_set_bitrate(name.c_str(), bitrate) != 0) {
    const int err = errno;
    if (was_up) (void)can_do_start(name.c_str());
    return io_error(
        name,
        "setting the bit rate to " + std::to_string(bitrate) +
            " failed (virtual CAN has no bit timing; the controller may not support it)",
        err);
  }
  if (was_up && can_do_start(name.c_str()) != 0)
    return io_error(name, "starting the interface", errno);
  return Unit{};
}

LinkOpenResult<Unit> restart_can(const std::string& name) {
  auto info = checked(name);
  if (info.index() != 0) return std::get<1>(info);
  if (can_do_restart(name.c_str()) != 0) {
    return io_error(name,
                    "restart failed (the controller must be bus-off with restart-ms 0; virtual CAN "
                    "cannot restart)",
                    errno);
  }
  return Unit{};
}

LinkOpenResult<CanState> get_can_state(const std::string& name) {
  auto info = checked(name);
  if (info.index() != 0) return std::get<1>(info);
  int state = 0;
  if (can_get_state(name.c_str(), &state) != 0) {
    return io_error(name, "no controller state (virtual CAN has no controller)", 0);
  }
  switch (state) {
    case CAN_STATE_ERROR_ACTIVE:
      return CanState::kErrorActive;
    case CAN_STATE_ERROR_WARNING:
      return CanState::kErrorWarning;
    case CAN_STATE_ERROR_PASSIVE:
      return CanState::kErrorPassive;
    case CAN_STATE_BUS_OFF:
      return CanState::kBusOff;
    case CAN_STATE_STOPPED:
      return CanState::kStopped;
    case CAN_STATE_SLEEPING:
      return CanState::kSleeping;
    default:
      return LinkOpenError{LinkError::kIo, name + ": kernel reported unknown controller state " +
                                               std::to_string(state)};
  }
}

LinkOpenResult<CanBusErrorCounters> get_can_berr(const std::string& name) {
  auto info = checked(name);
  if (info.index() != 0) return std::get<1>(info);
  can_berr_counter bc{};
  if (can_get_berr_counter(name.c_str(), &bc) != 0) {
    return io_error(
        name, "no bus error counters (virtual CAN has none; some drivers do not report them)", 0);
  }
  return CanBusErrorCounters{bc.txerr, bc.rxerr};
}

LinkOpenResult<CanBitTimingInfo> get_can_bittiming(const std::string& name) {
  auto info = checked(name);
  if (info.index() != 0) return std::get<1>(info);
  can_bittiming bt{};
  if (can_get_bittiming(name.c_str(), &bt) != 0) {
    return io_error(name, "no bit timing (virtual CAN has none)", 0);
  }
  return CanBitTimingInfo{bt.bitrate, bt.sample_point};
}

}  // namespace tollgate::transport
