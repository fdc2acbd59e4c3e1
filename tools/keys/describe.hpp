// Human-readable and JSON views of signed objects and keys, for `inspect`.
//
// One JSON tree is built per object, with values already in display form (UUIDs
// canonical, times ISO 8601 UTC, key ids and signatures hex, algorithm and error
// names); the text view is rendered from that same tree, so both always show the
// same fields. Bodies are walked by protobuf reflection, so fields added to the
// schema later appear without changes here.
#pragma once

#include <boost/json.hpp>
#include <string>

#include "gateway/crypto.hpp"
#include "gateway/signed.hpp"

namespace tollgate::keys {

// {"type", "signer_key_id", "algorithm", "signature", "body_size", "body": {...}}.
// A body that does not parse as its type's message is shown as hex with a note.
boost::json::object describe_signed(const v1::Signed& s);

// {"algorithm", "bits", "key_id", "spki_der"}.
boost::json::object describe_public_key(const crypto::PublicKey& key);

// Indented "name: value" lines; long DER blobs are left to the JSON view.
std::string render_text(const boost::json::object& obj);

}  // namespace tollgate::keys
