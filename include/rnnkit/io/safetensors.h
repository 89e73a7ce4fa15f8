#pragma once
// safetensors: 8-byte little-endian header length N, N bytes of JSON header
// mapping each tensor name to {dtype, shape, data_offsets} (plus an optional
// "__metadata__" object of string -> string) padded with spaces, then the raw
// little-endian, C-order tensor bytes. Files written here are read by the
// reference implementation (the `safetensors` Python package) and the other
// way round.
//
// Reading validates everything before touching tensor data (header size,
// JSON shape, dtypes, shapes, offset overflow, overlaps, gaps, trailing
// bytes, BOOL values) and throws rnnkit::Error naming the file and the key;
// it never reads out of bounds and never allocates more than the file holds.
//
// Integrity: rnnkit writes a content checksum into the metadata under
// kChecksumKey (the reference implementation keeps unknown metadata and
// ignores it). When a file carries it, loading recomputes and compares it, so
// flipped bytes inside tensor data are caught too. The checksum covers the
// content, not the byte layout (see docs/CHECKPOINTS.md for its definition),
// so a file re-saved by another writer with the same tensors and metadata
// still verifies.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "rnnkit/state_dict.h"

namespace rnnkit::nn {
class Module;
}

namespace rnnkit::io {

using Metadata = std::map<std::string, std::string>;

// Metadata key of the content checksum: 8 lowercase hex digits of a CRC-32.
inline constexpr const char* kChecksumKey = "rnnkit.crc32";

struct SafetensorsContent {
  StateDict tensors;  // in the header's order (a state_dict's order for files rnnkit wrote)
  Metadata metadata;  // without kChecksumKey, which loading consumes
};

// One header entry, as inspect_safetensors reports it.
struct TensorInfo {
  std::string name;
  std::string dtype;   // safetensors spelling: "F32", "I64", "BF16", ...
  Shape shape;
  uint64_t data_begin = 0, data_end = 0;  // byte range inside the data section
};

struct SafetensorsInfo {
  std::vector<TensorInfo> tensors;  // header order
  Metadata metadata;                // as stored, kChecksumKey included
  uint64_t header_bytes = 0;        // N (the JSON header with its padding)
  uint64_t file_bytes = 0;
};

// ---- files ----

// Writes atomically (temporary file beside `path`, fsync, rename, fsync of
// the folder), with the content checksum. Tensors may have any strides; they
// are stored contiguous. CPU tensors of float32/float64/int64/bool.
void save_safetensors(const StateDict& tensors, const std::string& path, const Metadata& metadata = {});
// Reads and validates a whole file. require_checksum: the file must carry
// kChecksumKey (rnnkit's own checkpoints do); otherwise it is checked when present.
SafetensorsContent load_safetensors(const std::string& path, bool require_checksum = false);
// Reads and validates only the header (names, dtypes, shapes, metadata), so
// it also lists dtypes rnnkit cannot hold (F16, BF16, I32, ...).
SafetensorsInfo inspect_safetensors(const std::string& path);

// ---- into modules ----

// Checks `loaded` (from `source`, a path) against `expected` (a module's or
// optimizer's own state_dict): every expected key present with the same shape
// and dtype and, when strict, no other key. Throws one rnnkit::Error that
// names the source and lists every missing, unexpected and mismatched key.
void check_state_dict(const StateDict& expected, const StateDict& loaded, const std::string& source,
                      bool strict = true);
// Loads a safetensors file into a module after check_state_dict.
void load_into(nn::Module& module, const std::string& path, bool strict = true);

// ---- bytes (the oracle's wire format, tests) ----

// checksum: add kChecksumKey (save_safetensors always does).
std::string to_safetensors_bytes(const StateDict& tensors, const Metadata& metadata = {}, bool checksum = false);
// `source` names the origin (a path) in error messages.
SafetensorsContent from_safetensors_bytes(const std::string& bytes, const std::string& source,
                                          bool require_checksum = false);

// ---- atomic files ----

struct ByteSpan {
  const void* data;
  size_t size;
};
// Writes the concatenation of `pieces` to `path` atomically: the destination
// is at every moment either its old complete content or the new one. The
// temporary file is "<path>.tmp.<pid>.<16 hex>"; a writer killed before the
// rename leaves one behind, which remove_stale_temp_files deletes.
void write_file_atomic(const std::string& path, const std::vector<ByteSpan>& pieces);
void write_file_atomic(const std::string& path, const std::string& bytes);
// Whole file; throws rnnkit::Error naming the path (missing, a folder, read error).
std::string read_file(const std::string& path);
// Deletes the temporary files that write_file_atomic left in `dir` when its
// process died (their pid is no longer running on this machine). Returns the
// paths removed.
std::vector<std::string> remove_stale_temp_files(const std::string& dir);

// CRC-32 as zlib computes it (polynomial 0xEDB88320): crc32(p, n, crc32(q, m))
// continues a running value, so Python's zlib.crc32 gives the same numbers.
uint32_t crc32(const void* data, size_t size, uint32_t crc = 0);

}  // namespace rnnkit::io

namespace rnnkit {
// rnnkit::save(model->state_dict(), "model.safetensors")
inline void save(const StateDict& state, const std::string& path) { io::save_safetensors(state, path); }
inline StateDict load(const std::string& path) { return io::load_safetensors(path).tensors; }
// libtorch's torch::load(model, path) spelling: rnnkit::load(*model, "model.safetensors").
inline void load(nn::Module& module, const std::string& path) { io::load_into(module, path); }
}  // namespace rnnkit
