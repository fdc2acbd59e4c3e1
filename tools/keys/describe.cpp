#include "tools/keys/describe.hpp"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <google/protobuf/reflection.h>

#include <algorithm>
#include <memory>
#include <string_view>

#include "tools/keys/cli_support.hpp"

namespace tollgate::keys {

namespace json = boost::json;
namespace pb = google::protobuf;

namespace {

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// The schema's naming conventions carry the meaning the wire types do not:
// UUIDs, key ids, SPKI keys and Unix times are all plain bytes / int64 on the wire.
bool is_time_field(std::string_view name) {
  return ends_with(name, "_at") || name == "not_before" || name == "not_after" || name == "time" ||
         ends_with(name, "_time");
}
bool is_uuid_field(std::string_view name) {
  return name == "token_id" || name == "device_id" || name == "user_id";
}
bool is_public_key_field(std::string_view name) {
  return ends_with(name, "public_key");
}

json::value bytes_value(std::string_view field, const std::string& raw) {
  const ByteView b = as_bytes(raw);
  if (is_uuid_field(field) && b.size() == 16) return json::string(uuid_to_string(b));
  if (is_public_key_field(field) && !b.empty()) {
    auto key = crypto::PublicKey::from_spki_der(b);
    if (key) return describe_public_key(*key);
    json::object bad;
    bad["error"] = "not a supported SPKI public key";
    bad["spki_der"] = hex(b);
    return bad;
  }
  return json::string(hex(b));
}

json::value describe_message(const pb::Message& m);

json::value scalar_value(const pb::Message& m, const pb::FieldDescriptor* f, int index) {
  const pb::Reflection* r = m.GetReflection();
  const bool rep = f->is_repeated();
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT32:
      return rep ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f);
    case pb::FieldDescriptor::CPPTYPE_UINT32:
      return rep ? r->GetRepeatedUInt32(m, f, index) : r->GetUInt32(m, f);
    case pb::FieldDescriptor::CPPTYPE_INT64: {
      const std::int64_t v = rep ? r->GetRepeatedInt64(m, f, index) : r->GetInt64(m, f);
      if (is_time_field(f->name())) return json::string(format_iso8601(v));
      return v;
    }
    case pb::FieldDescriptor::CPPTYPE_UINT64:
      return rep ? r->GetRepeatedUInt64(m, f, index) : r->GetUInt64(m, f);
    case pb::FieldDescriptor::CPPTYPE_BOOL:
      return rep ? r->GetRepeatedBool(m, f, index) : r->GetBool(m, f);
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      return rep ? r->GetRepeatedDouble(m, f, index) : r->GetDouble(m, f);
    case pb::FieldDescriptor::CPPTYPE_FLOAT:
      return rep ? r->GetRepeatedFloat(m, f, index) : r->GetFloat(m, f);
    case pb::FieldDescriptor::CPPTYPE_ENUM: {
      const int v = rep ? r->GetRepeatedEnumValue(m, f, index) : r->GetEnumValue(m, f);
      if (f->enum_type() == v1::Error_descriptor()) {
        return json::string(v == 0 ? "none" : describe_error(static_cast<Error>(v)));
      }
      if (const auto* ev = f->enum_type()->FindValueByNumber(v)) return json::string(ev->name());
      return json::string("unknown value " + std::to_string(v));
    }
    case pb::FieldDescriptor::CPPTYPE_STRING: {
      const std::string s = rep ? r->GetRepeatedString(m, f, index) : r->GetString(m, f);
      if (f->type() == pb::FieldDescriptor::TYPE_BYTES) return bytes_value(f->name(), s);
      return json::string(s);
    }
    case pb::FieldDescriptor::CPPTYPE_MESSAGE:
      return describe_message(rep ? r->GetRepeatedMessage(m, f, index) : r->GetMessage(m, f));
  }
  return nullptr;
}

json::value describe_message(const pb::Message& m) {
  json::object out;
  const pb::Descriptor* d = m.GetDescriptor();
  const pb::Reflection* r = m.GetReflection();
  // Every field of the schema, set or not, in declaration order ("every field":
  // a zero use count is information too). Unset oneof members are not fields of this object.
  for (int i = 0; i < d->field_count(); ++i) {
    const pb::FieldDescriptor* f = d->field(i);
    if (f->containing_oneof() != nullptr && !r->HasField(m, f)) continue;
    if (f->is_map()) {
      json::object map;
      const pb::Descriptor* entry = f->message_type();
      for (int j = 0; j < r->FieldSize(m, f); ++j) {
        const pb::Message& e = r->GetRepeatedMessage(m, f, j);
        const json::value key = scalar_value(e, entry->map_key(), 0);
        map[key.is_string() ? std::string_view(key.as_string()) : json::serialize(key)] =
            scalar_value(e, entry->map_value(), 0);
      }
      out[f->name()] = std::move(map);
    } else if (f->is_repeated()) {
      json::array items;
      for (int j = 0; j < r->FieldSize(m, f); ++j) items.push_back(scalar_value(m, f, j));
      out[f->name()] = std::move(items);
    } else {
      out[f->name()] = scalar_value(m, f, 0);
    }
  }
  // Bytes the schema does not know about would be invisible otherwise.
  if (const auto& unknown = r->GetUnknownFields(m); !unknown.empty()) {
    out["unknown_fields"] = unknown.field_count();
  }
  return out;
}

// The message a Signed body holds, by type; found by name so the tool keeps
// compiling while the schema grows.
const pb::Descriptor* body_descriptor(ObjectType type) {
  std::string name = object_type_name(type);
  if (name.find(' ') != std::string::npos) return nullptr;
  return pb::DescriptorPool::generated_pool()->FindMessageTypeByName("tollgate.v1." + name);
}

void render(const json::object& obj, int indent, std::string& out);

void render_scalar(const json::value& v, std::string& out) {
  if (v.is_string()) {
    out += std::string_view(v.as_string());
  } else if (v.is_null()) {
    out += "(none)";
  } else {
    out += json::serialize(v);
  }
}

void render(const json::object& obj, int indent, std::string& out) {
  std::size_t width = 0;
  for (const auto& kv : obj) width = std::max(width, kv.key().size());
  const std::string pad(static_cast<std::size_t>(indent), ' ');
  for (const auto& kv : obj) {
    const std::string_view key = kv.key();
    // DER blobs are hundreds of hex digits; the key id names the key in text.
    if (key == "spki_der") continue;
    out += pad;
    out += key;
    out += ':';
    const json::value& v = kv.value();
    if (v.is_object()) {
      out += '\n';
      render(v.as_object(), indent + 2, out);
      continue;
    }
    out.append(width - key.size() + 1, ' ');
    if (v.is_array()) {
      const json::array& a = v.as_array();
      if (a.empty()) {
        out += "(none)\n";
        continue;
      }
      const bool flat =
          std::all_of(a.begin(), a.end(), [](const json::value& e) { return !e.is_structured(); });
      if (flat) {
        for (std::size_t i = 0; i < a.size(); ++i) {
          if (i > 0) out += ", ";
          render_scalar(a[i], out);
        }
        out += '\n';
      } else {
        out += '\n';
        for (const auto& e : a) {
          out += pad + "  -\n";
          if (e.is_object()) render(e.as_object(), indent + 4, out);
        }
      }
      continue;
    }
    render_scalar(v, out);
    out += '\n';
  }
}

}  // namespace

json::object describe_public_key(const crypto::PublicKey& key) {
  json::object o;
  o["algorithm"] = std::string(crypto::algorithm_name(key.algorithm()));
  o["bits"] = key.bits();
  o["key_id"] = key_id_hex(key.id());
  o["spki_der"] = hex(key.spki_der());
  return o;
}

json::object describe_signed(const v1::Signed& s) {
  json::object o;
  o["type"] = object_type_name(s.type());
  o["signer_key_id"] = hex(as_bytes(s.signer_key_id()));
  o["algorithm"] = std::string(crypto::algorithm_name(s.algorithm()));
  o["signature"] = hex(as_bytes(s.signature()));
  o["body_size"] = s.body().size();
  o["signature_checked"] = false;
  const pb::Descriptor* d = body_descriptor(s.type());
  std::unique_ptr<pb::Message> body;
  if (d != nullptr) {
    if (const pb::Message* proto = pb::MessageFactory::generated_factory()->GetPrototype(d)) {
      body.reset(proto->New());
    }
  }
  if (body && body->ParseFromString(s.body())) {
    o["body"] = describe_message(*body);
  } else {
    json::object raw;
    raw["error"] = body ? "body does not parse as " + object_type_name(s.type())
                        : std::string("no schema for this object type");
    raw["hex"] = hex(as_bytes(s.body()));
    o["body"] = std::move(raw);
  }
  return o;
}

std::string render_text(const json::object& obj) {
  std::string out;
  render(obj, 0, out);
  return out;
}

}  // namespace tollgate::keys
