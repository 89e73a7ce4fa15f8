#pragma once
// safetensors: 8-byte little-endian header length, a JSON header mapping each
// name to {dtype, shape, data_offsets} (plus optional "__metadata__" of
// string -> string), then the raw little-endian tensor bytes. Readable and
// writable by the reference implementation. Parsing validates everything
// (sizes, offsets, overlaps, dtypes, shapes) and throws rnnkit::Error naming
// the source and the key; it never reads out of bounds.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "rnnkit/state_dict.h"

namespace rnnkit::io {

using Metadata = std::map<std::string, std::string>;

struct SafetensorsContent {
  StateDict tensors;
  Metadata metadata;
};

// Serialises tensors (any strides; written contiguous) into safetensors bytes.
std::string to_safetensors_bytes(const StateDict& tensors, const Metadata& metadata = {});
// Parses bytes; `source` names the origin (a path) in error messages.
SafetensorsContent from_safetensors_bytes(const std::string& bytes, const std::string& source);

// Writes atomically: a temporary file in the same folder, fsync, rename, fsync
// of the folder. A crash leaves either the old file or the new one.
void write_file_atomic(const std::string& path, const std::string& bytes);
std::string read_file(const std::string& path);

void save_safetensors(const StateDict& tensors, const std::string& path, const Metadata& metadata = {});
SafetensorsContent load_safetensors(const std::string& path);

}  // namespace rnnkit::io

namespace rnnkit {
// rnnkit::save(model->state_dict(), "model.safetensors")
inline void save(const StateDict& state, const std::string& path) { io::save_safetensors(state, path); }
inline StateDict load(const std::string& path) { return io::load_safetensors(path).tensors; }
}  // namespace rnnkit
