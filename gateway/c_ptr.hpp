// Ownership of C library objects (OpenSSL, SQLite) by std::unique_ptr: one
// deleter template, so every file spells an owned object the same way, e.g.
//   using BioPtr = CPtr<BIO, BIO_free_all>;
#pragma once

#include <memory>

namespace tollgate {

template <auto Free>
struct CFree {
  template <class T>
  void operator()(T* p) const {
    Free(p);
  }
};

template <class T, auto Free>
using CPtr = std::unique_ptr<T, CFree<Free>>;

}  // namespace tollgate
