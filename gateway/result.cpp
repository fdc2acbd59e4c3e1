#include "gateway/result.hpp"

namespace tollgate {

std::string_view error_name(Error e) {
  switch (e) {
    case v1::ERROR_UNSPECIFIED:
      return "unspecified";
    case v1::ERROR_MALFORMED:
      return "malformed";
    case v1::ERROR_TOO_LARGE:
      return "too large";
    case v1::ERROR_BAD_SIGNATURE:
      return "bad signature";
    case v1::ERROR_UNKNOWN_SIGNER:
      return "unknown signer";
    case v1::ERROR_ALGORITHM_NOT_ALLOWED:
      return "algorithm not allowed";
    case v1::ERROR_ALGORITHM_MISMATCH:
      return "algorithm does not match key";
    case v1::ERROR_KEY_TOO_WEAK:
      return "key too weak";
    case v1::ERROR_WRONG_TYPE:
      return "wrong object type";
    case v1::ERROR_REVOKED:
      return "revoked";
    case v1::ERROR_EXPIRED:
      return "expired";
    case v1::ERROR_NOT_YET_VALID:
      return "not yet valid";
    case v1::ERROR_WRONG_DEVICE:
      return "wrong device";
    case v1::ERROR_USES_EXHAUSTED:
      return "uses exhausted";
    case v1::ERROR_STALE_NONCE:
      return "stale nonce";
    case v1::ERROR_NO_VALID_TOKEN:
      return "no valid token";
    case v1::ERROR_ROLE_NOT_ALLOWED:
      return "role not allowed";
    case v1::ERROR_REQUEST_ID_REUSED:
      return "request id reused with other bytes";
    case v1::ERROR_AUTHORIZATION_NOT_INSTALLED:
      return "cloud authorization not installed";
    case v1::ERROR_WRONG_USER:
      return "wrong user";
    case v1::ERROR_RATE_LIMITED:
      return "rate limited";
    case v1::ERROR_UNKNOWN_COMMAND:
      return "unknown command";
    case v1::ERROR_BAD_ARGUMENT:
      return "bad argument";
    case v1::ERROR_COMMAND_FAILED:
      return "command failed";
    case v1::ERROR_STORAGE:
      return "storage failure";
    case v1::ERROR_LIMIT_REACHED:
      return "limit reached";
    case v1::ERROR_UNSUPPORTED_VERSION:
      return "unsupported version";
    case v1::ERROR_INTERNAL:
      return "internal error";
    case v1::ERROR_REQUEST_INTERRUPTED:
      return "request interrupted before its response was recorded";
    default:
      break;
  }
  return "unknown error";
}

}  // namespace tollgate
