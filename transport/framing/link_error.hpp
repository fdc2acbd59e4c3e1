// Transport failures, each its own value. The transport never sees keys or
// protocol meaning: these say only what happened to bytes and frames.
#pragma once

#include <string_view>

namespace tollgate::transport {

enum class LinkError {
  kTimeoutAs,        // N_As: a frame we queued did not go out in time
  kTimeoutBs,        // N_Bs: no flow control from the receiver in time
  kTimeoutCr,        // N_Cr: no consecutive frame from the sender in time
  kWrongSequence,    // consecutive frame with an unexpected sequence number
  kOverflow,         // message larger than the receiver's cap (ours, or the peer sent FC OVERFLOW)
  kUnexpectedFrame,  // a frame that makes no sense in the current state
  kWaitLimit,        // more than WFTmax flow-control WAIT frames
  kTransmitFailed,   // the frame source refused or failed a frame
  kBadCrc,           // CRC-32C over the message did not match
  kMalformedFrame,   // framing-level decode error (bad COBS, bad PCI, short frame)
  kTooLarge,         // message exceeds what this link may send
  kDeadline,         // the caller's send/receive deadline passed
  kClosed,           // the link or its peer went away
  kIo,               // an operating-system I/O error (see the log for errno)
  kInvalidArgument,  // bad endpoint, option or configuration
};

constexpr std::string_view link_error_name(LinkError e) {
  switch (e) {
    case LinkError::kTimeoutAs: return "N_As timeout";
    case LinkError::kTimeoutBs: return "N_Bs timeout";
    case LinkError::kTimeoutCr: return "N_Cr timeout";
    case LinkError::kWrongSequence: return "wrong sequence number";
    case LinkError::kOverflow: return "overflow";
    case LinkError::kUnexpectedFrame: return "unexpected frame";
    case LinkError::kWaitLimit: return "too many WAIT flow controls";
    case LinkError::kTransmitFailed: return "transmit failed";
    case LinkError::kBadCrc: return "bad CRC";
    case LinkError::kMalformedFrame: return "malformed frame";
    case LinkError::kTooLarge: return "message too large";
    case LinkError::kDeadline: return "deadline passed";
    case LinkError::kClosed: return "link closed";
    case LinkError::kIo: return "I/O error";
    case LinkError::kInvalidArgument: return "invalid argument";
  }
  return "unknown link error";
}

}  // namespace tollgate::transport
