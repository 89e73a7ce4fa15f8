// safetensors reader and writer.
//
// Reading goes in two stages so that a corrupted file is refused before any
// tensor is allocated: parse_header validates the header completely against
// the file's size (every tensor's bytes lie inside the data section, tile it
// exactly, and match dtype x shape), then read_tensors copies each tensor's
// bytes straight from the file into its storage (pread: one copy, no mmap,
// so a file truncated under us is an error and not a SIGBUS).
#include "rnnkit/io/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>

#include "tensor/native.h"

namespace rnnkit::io {

namespace {

// The reference implementation refuses larger headers too.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

const char* st_dtype(Dtype d) {
  switch (d) {
    case Dtype::Float32: return "F32";
    case Dtype::Float64: return "F64";
    case Dtype::Int64: return "I64";
    case Dtype::Bool: return "BOOL";
    case Dtype::BFloat16: return "BF16";
    case Dtype::Float16: return "F16";
  }
  return "?";
}

bool rnnkit_dtype(const std::string& s, Dtype* d) {
  if (s == "F32") *d = Dtype::Float32;
  else if (s == "F64") *d = Dtype::Float64;
  else if (s == "I64") *d = Dtype::Int64;
  else if (s == "BOOL") *d = Dtype::Bool;
  else return false;
  return true;
}

// Bytes per element of every dtype the reference implementation writes; 0 = unknown.
uint64_t st_dtype_size(const std::string& s) {
  static const std::pair<const char*, uint64_t> kSizes[] = {
      {"BOOL", 1}, {"U8", 1}, {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2}, {"U16", 2}, {"F16", 2},
      {"BF16", 2}, {"I32", 4}, {"U32", 4}, {"F32", 4},    {"I64", 8},     {"U64", 8}, {"F64", 8}};
  for (const auto& [name, size] : kSizes)
    if (s == name) return size;
  return 0;
}

// A short, printable excerpt of untrusted text for error messages.
std::string excerpt(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < 40; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    out += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
  }
  return s.size() > 40 ? out + "..." : out;
}

uint64_t load_u64le(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

// ------------------------------------------------------------- byte sources

class Source {
 public:
  virtual ~Source() = default;
  virtual uint64_t size() const = 0;
  // Exactly n bytes at offset, or rnnkit::Error.
  virtual void read(uint64_t offset, void* dst, size_t n) const = 0;
};

class MemorySource final : public Source {
 public:
  explicit MemorySource(const std::string& bytes) : bytes_(bytes) {}
  uint64_t size() const override { return bytes_.size(); }
  void read(uint64_t offset, void* dst, size_t n) const override {
    if (n > 0) std::memcpy(dst, bytes_.data() + offset, n);
  }

 private:
  const std::string& bytes_;
};

class FileSource final : public Source {
 public:
  explicit FileSource(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    RNNKIT_CHECK(fd_ >= 0, "load '", path, "': cannot open file: ", std::strerror(errno));
    struct stat st;
    if (::fstat(fd_, &st) != 0) {
      const int err = errno;
      ::close(fd_);
      throw Error("load '" + path + "': cannot stat file: " + std::strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd_);
      throw Error("load '" + path + "': " + (S_ISDIR(st.st_mode) ? "is a folder" : "is not a regular file") +
                  ", expected a safetensors file");
    }
    size_ = static_cast<uint64_t>(st.st_size);
  }
  ~FileSource() override { ::close(fd_); }
  FileSource(const FileSource&) = delete;
  FileSource& operator=(const FileSource&) = delete;

  uint64_t size() const override { return size_; }
  void read(uint64_t offset, void* dst, size_t n) const override {
    char* p = static_cast<char*>(dst);
    while (n > 0) {
      const ssize_t r = ::pread(fd_, p, n, static_cast<off_t>(offset));
      if (r < 0 && errno == EINTR) continue;
      RNNKIT_CHECK(r >= 0, "load '", path_, "': read error: ", std::strerror(errno));
      RNNKIT_CHECK(r > 0, "load '", path_, "': the file became shorter while it was read (is another process ",
                   "writing it in place?)");
      p += r;
      offset += static_cast<uint64_t>(r);
      n -= static_cast<size_t>(r);
    }
  }

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

// ------------------------------------------------------------------- header

struct Entry {
  std::string name;
  std::string dtype;
  uint64_t element_size = 0;
  Shape shape;
  uint64_t begin = 0, end = 0;  // inside the data section
};

struct Header {
  Metadata metadata;
  std::vector<Entry> entries;  // header order
  uint64_t header_bytes = 0;
  uint64_t data_start = 0;
  bool space_padded = false;  // only spaces follow the JSON object
};

using json = nlohmann::json;

json parse_json(const std::string& text, const std::string& where, std::vector<std::string>* key_order) {
  // A valid header nests three deep ({} > {} > []); refusing deeper nesting
  // keeps a hostile header from building a huge tree. The callback also
  // records the top-level keys in file order (json objects sort their keys).
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) {
    if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) && depth >= 3)
      throw Error(where + ": header nests deeper than a safetensors header can (corrupted file)");
    if (event == json::parse_event_t::key && depth == 1) key_order->push_back(parsed.get<std::string>());
    return true;
  };
  try {
    return json::parse(text, callback);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(where + ": header is not valid JSON (" + e.what() + "): corrupted or not a safetensors file");
  }
}

Shape parse_shape(const json& v, const std::string& key) {
  RNNKIT_CHECK(v.is_array(), key, ": shape must be an array of non-negative integers");
  Shape shape;
  uint64_t nonzero_product = 1;
  for (const json& d : v) {
    RNNKIT_CHECK(d.is_number_unsigned(), key, ": shape entries must be non-negative integers");
    const uint64_t s = d.get<uint64_t>();
    // Strides are products of sizes: keep every product within int64.
    const uint64_t limit = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    RNNKIT_CHECK(s <= limit && (s == 0 || nonzero_product <= limit / s), key, ": shape overflows (dimension ",
                 shape.size(), " is ", s, ")");
    if (s != 0) nonzero_product *= s;
    shape.push_back(static_cast<int64_t>(s));
  }
  return shape;
}

Header parse_header(const Source& src, const std::string& where) {
  const uint64_t file_size = src.size();
  RNNKIT_CHECK(file_size >= 8, where, ": file is truncated (", file_size,
               " bytes; a safetensors file starts with an 8-byte header length)");
  unsigned char len[8];
  src.read(0, len, 8);
  const uint64_t n = load_u64le(len);
  RNNKIT_CHECK(n <= kMaxHeaderBytes, where, ": header length ", n, " exceeds the limit of ", kMaxHeaderBytes,
               " bytes: corrupted or not a safetensors file");
  RNNKIT_CHECK(n <= file_size - 8, where, ": header length ", n, " runs past the end of the file (", file_size,
               " bytes): the file is truncated or not safetensors");
  RNNKIT_CHECK(n >= 2, where, ": header length ", n, " is too small for a JSON object: corrupted file");
  std::string text(n, '\0');
  src.read(8, text.data(), n);
  RNNKIT_CHECK(text[0] == '{', where, ": header does not start with '{': not a safetensors file");

  Header h;
  h.header_bytes = n;
  h.data_start = 8 + n;
  const size_t last = text.find_last_not_of(' ');
  h.space_padded = last != std::string::npos && text[last] == '}';
  const uint64_t data_size = file_size - h.data_start;
  std::vector<std::string> order;
  const json header = parse_json(text, where, &order);
  RNNKIT_CHECK(header.is_object(), where, ": header must be a JSON object");
  std::vector<std::string> sorted_order = order;
  std::sort(sorted_order.begin(), sorted_order.end());
  const auto dup = std::adjacent_find(sorted_order.begin(), sorted_order.end());
  RNNKIT_CHECK(dup == sorted_order.end(), where, ": header names '", *dup, "' twice");

  for (const std::string& name : order) {
    const json& v = header.at(name);
    if (name == "__metadata__") {
      RNNKIT_CHECK(v.is_object(), where, ": '__metadata__' must be an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        RNNKIT_CHECK(m.value().is_string(), where, ": metadata '", m.key(), "' must be a string");
        h.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string key = where + ": tensor '" + name + "'";
    RNNKIT_CHECK(v.is_object(), key, ": entry must be an object with dtype, shape and data_offsets");
    const auto dtype = v.find("dtype"), shape = v.find("shape"), offsets = v.find("data_offsets");
    RNNKIT_CHECK(dtype != v.end() && shape != v.end() && offsets != v.end(), key,
                 ": entry must have dtype, shape and data_offsets");
    Entry e;
    e.name = name;
    RNNKIT_CHECK(dtype->is_string(), key, ": dtype must be a string");
    e.dtype = dtype->get<std::string>();
    e.element_size = st_dtype_size(e.dtype);
    RNNKIT_CHECK(e.element_size != 0, key, ": unknown dtype '", excerpt(e.dtype), "'");
    e.shape = parse_shape(*shape, key);
    RNNKIT_CHECK(offsets->is_array() && offsets->size() == 2 && (*offsets)[0].is_number_unsigned() &&
                     (*offsets)[1].is_number_unsigned(),
                 key, ": data_offsets must be two non-negative integers");
    e.begin = (*offsets)[0].get<uint64_t>();
    e.end = (*offsets)[1].get<uint64_t>();
    RNNKIT_CHECK(e.begin <= e.end && e.end <= data_size, key, ": data_offsets [", e.begin, ", ", e.end,
                 "] lie outside the data section of ", data_size, " bytes (file truncated or corrupted)");
    uint64_t numel = 1;
    for (int64_t s : e.shape) numel *= static_cast<uint64_t>(s);  // bounded by parse_shape
    RNNKIT_CHECK(numel <= (e.end - e.begin) / e.element_size && numel * e.element_size == e.end - e.begin, key,
                 ": data_offsets span ", e.end - e.begin, " bytes but shape ", shape_str(e.shape), " of ", e.dtype,
                 " needs ", numel, " x ", e.element_size);
    h.entries.push_back(std::move(e));
  }

  // The tensors' bytes must tile the data section: no gaps, no overlaps, no tail.
  std::vector<const Entry*> by_offset;
  for (const Entry& e : h.entries) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t cursor = 0;
  for (const Entry* e : by_offset) {
    RNNKIT_CHECK(e->begin == cursor, where, ": tensor '", e->name, "' data starts at byte ", e->begin, " but ",
                 e->begin < cursor ? "overlaps the previous tensor" : "leaves a gap after the previous tensor",
                 " (expected offset ", cursor, "): corrupted file");
    cursor = e->end;
  }
  RNNKIT_CHECK(cursor == data_size, where, ": the data section has ", data_size, " bytes but the tensors cover ",
               cursor, ": the file is corrupted or has trailing bytes");
  return h;
}

// ----------------------------------------------------------------- checksum

// The content digest (docs/CHECKPOINTS.md): CRC-32 over the metadata without
// the checksum itself, sorted by key, then each tensor's name, dtype, shape
// and the CRC-32 of its bytes, sorted by name. Strings are length-prefixed.
class Digest {
 public:
  void tag(char c) { crc_ = crc32(&c, 1, crc_); }
  void u64(uint64_t v) {
    unsigned char b[8];
    for (int i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>(v >> (8 * i));
    crc_ = crc32(b, 8, crc_);
  }
  void u32(uint32_t v) {
    unsigned char b[4];
    for (int i = 0; i < 4; ++i) b[i] = static_cast<unsigned char>(v >> (8 * i));
    crc_ = crc32(b, 4, crc_);
  }
  void str(const std::string& s) {
    u64(s.size());
    crc_ = crc32(s.data(), s.size(), crc_);
  }
  uint32_t value() const { return crc_; }

 private:
  uint32_t crc_ = 0;
};

struct DigestItem {
  const std::string* name;
  const std::string* dtype;
  const Shape* shape;
  uint32_t data_crc;
};

uint32_t content_digest(const Metadata& metadata, std::vector<DigestItem> items) {
  Digest d;
  for (const auto& [k, v] : metadata) {
    if (k == kChecksumKey) continue;
    d.tag('M');
    d.str(k);
    d.str(v);
  }
  std::sort(items.begin(), items.end(), [](const DigestItem& a, const DigestItem& b) { return *a.name < *b.name; });
  for (const DigestItem& it : items) {
    d.tag('T');
    d.str(*it.name);
    d.str(*it.dtype);
    d.u64(it.shape->size());
    for (int64_t s : *it.shape) d.u64(static_cast<uint64_t>(s));
    d.u32(it.data_crc);
  }
  return d.value();
}

// Whether turning a into b takes more than `limit` single-character
// insertions, deletions or substitutions (Levenshtein distance).
bool edit_distance_above(const std::string& a, const std::string& b, size_t limit) {
  const size_t gap = a.size() > b.size() ? a.size() - b.size() : b.size() - a.size();
  if (gap > limit) return true;
  std::vector<size_t> row(b.size() + 1), next(b.size() + 1);
  std::iota(row.begin(), row.end(), size_t{0});
  for (size_t i = 1; i <= a.size(); ++i) {
    next[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      next[j] = std::min({row[j] + 1, next[j - 1] + 1, row[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    row.swap(next);
  }
  return row[b.size()] > limit;
}

std::string hex8(uint32_t v) {
  char buf[9];
  std::snprintf(buf, sizeof buf, "%08x", v);
  return buf;
}

bool parse_hex8(const std::string& s, uint32_t* v) {
  if (s.size() != 8) return false;
  uint32_t x = 0;
  for (char c : s) {
    int d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else return false;
    x = (x << 4) | static_cast<uint32_t>(d);
  }
  *v = x;
  return true;
}

// --------------------------------------------------------------------- load

SafetensorsContent read_tensors(const Source& src, const std::string& where, bool require_checksum) {
  Header h = parse_header(src, where);
  const auto stored_it = h.metadata.find(kChecksumKey);
  const bool checked = stored_it != h.metadata.end();
  RNNKIT_CHECK(checked || !require_checksum, where, ": no '", kChecksumKey,
               "' checksum in the metadata: not a file written by rnnkit, or its metadata was dropped");
  if (!checked) {
    // The checksum's own key may be what was damaged; a key within a few
    // edits of it would otherwise switch the verification off. Edits, not
    // just substitutions: a flipped byte can form a JSON escape and shorten
    // the key ("rnnkit" with its first 'n' turned into a backslash reads "r\nkit").
    for (const auto& kv : h.metadata)
      RNNKIT_CHECK(edit_distance_above(kv.first, kChecksumKey, 4), where, ": metadata key '", excerpt(kv.first),
                   "' looks like a damaged '", kChecksumKey, "' (corrupted file)");
  }
  uint32_t stored = 0;
  if (checked) {
    RNNKIT_CHECK(parse_hex8(stored_it->second, &stored), where, ": metadata '", kChecksumKey,
                 "' must be 8 lowercase hex digits, got '", excerpt(stored_it->second), "' (corrupted file)");
    // rnnkit and the reference implementation pad with spaces only; any
    // other byte after the JSON is damage the checksum cannot see.
    RNNKIT_CHECK(h.space_padded, where, ": header padding holds bytes other than spaces (corrupted file)");
  }
  std::vector<Dtype> dtypes(h.entries.size());
  for (size_t i = 0; i < h.entries.size(); ++i)
    RNNKIT_CHECK(rnnkit_dtype(h.entries[i].dtype, &dtypes[i]), where, ": tensor '", h.entries[i].name,
                 "': dtype ", h.entries[i].dtype, " is not supported by rnnkit (it reads F32, F64, I64, BOOL; ",
                 "convert with tools/pt2safetensors.py --float32)");

  std::vector<size_t> file_order(h.entries.size());
  std::iota(file_order.begin(), file_order.end(), size_t{0});
  std::sort(file_order.begin(), file_order.end(),
            [&](size_t a, size_t b) { return h.entries[a].begin < h.entries[b].begin; });
  std::vector<Tensor> tensors(h.entries.size());
  std::vector<uint32_t> crcs(h.entries.size(), 0);
  for (size_t i : file_order) {
    const Entry& e = h.entries[i];
    Tensor t = empty(e.shape, TensorOptions(dtypes[i]));
    const size_t nbytes = static_cast<size_t>(e.end - e.begin);
    if (nbytes > 0) src.read(h.data_start + e.begin, t.raw_data(), nbytes);
    if (checked) crcs[i] = crc32(t.raw_data(), nbytes);
    tensors[i] = t;
  }
  if (checked) {
    std::vector<DigestItem> items;
    for (size_t i = 0; i < h.entries.size(); ++i)
      items.push_back({&h.entries[i].name, &h.entries[i].dtype, &h.entries[i].shape, crcs[i]});
    const uint32_t computed = content_digest(h.metadata, items);
    RNNKIT_CHECK(computed == stored, where, ": checksum mismatch (stored ", hex8(stored), ", computed ",
                 hex8(computed), "): the file is corrupted");
  }
  for (size_t i = 0; i < h.entries.size(); ++i) {
    if (dtypes[i] != Dtype::Bool) continue;
    // Any other byte in a C++ bool is undefined behaviour.
    const unsigned char* p = static_cast<const unsigned char*>(tensors[i].const_raw_data());
    for (size_t k = 0; k < static_cast<size_t>(tensors[i].nbytes()); ++k)
      RNNKIT_CHECK(p[k] <= 1, where, ": tensor '", h.entries[i].name, "': BOOL value ", int(p[k]), " at element ",
                   k, " is neither 0 nor 1 (corrupted file)");
  }
  SafetensorsContent content;
  for (size_t i = 0; i < h.entries.size(); ++i) content.tensors.insert(h.entries[i].name, tensors[i]);
  h.metadata.erase(kChecksumKey);
  content.metadata = std::move(h.metadata);
  return content;
}

// -------------------------------------------------------------------- write

struct Serialized {
  std::string head;            // 8-byte length + padded JSON header
  std::vector<Tensor> data;    // contiguous, in file order
};

Serialized serialize(const StateDict& tensors, const Metadata& metadata, bool checksum) {
  for (const auto& kv : metadata)
    RNNKIT_CHECK(kv.first != kChecksumKey, "save: metadata key '", kChecksumKey, "' is reserved for rnnkit's checksum");
  const size_t n = tensors.size();
  std::vector<Tensor> contiguous(n);
  for (size_t i = 0; i < n; ++i) {
    const auto& [name, t] = tensors.items()[i];
    RNNKIT_CHECK(!name.empty(), "save: tensor names must be non-empty");
    RNNKIT_CHECK(name != "__metadata__", "save: '__metadata__' is reserved and cannot name a tensor");
    RNNKIT_CHECK(t.defined(), "save: tensor '", name, "' is undefined");
    RNNKIT_CHECK(t.device().is_cpu(), "save: tensor '", name, "' is on ", t.device(), "; move it to the CPU first");
    contiguous[i] = native::contiguous(t.detach());
  }
  // Data grouped by element size, largest first (as the reference
  // implementation does), so every tensor starts aligned to its element and
  // readers that view the file in place can; the header keeps the state_dict order.
  std::vector<size_t> file_order(n);
  std::iota(file_order.begin(), file_order.end(), size_t{0});
  std::stable_sort(file_order.begin(), file_order.end(), [&](size_t a, size_t b) {
    return element_size(contiguous[a].dtype()) > element_size(contiguous[b].dtype());
  });
  std::vector<uint64_t> begin(n);
  uint64_t offset = 0;
  for (size_t i : file_order) {
    begin[i] = offset;
    offset += contiguous[i].nbytes();
  }
  Metadata md = metadata;
  std::vector<std::string> dtype_names(n);
  for (size_t i = 0; i < n; ++i) dtype_names[i] = st_dtype(contiguous[i].dtype());
  if (checksum) {
    std::vector<DigestItem> items;
    for (size_t i = 0; i < n; ++i)
      items.push_back({&tensors.items()[i].first, &dtype_names[i], &contiguous[i].sizes(),
                       crc32(contiguous[i].const_raw_data(), contiguous[i].nbytes())});
    md[kChecksumKey] = hex8(content_digest(metadata, items));
  }
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!md.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& kv : md) m[kv.first] = kv.second;
    header["__metadata__"] = m;
  }
  for (size_t i = 0; i < n; ++i)
    header[tensors.items()[i].first] = {{"dtype", dtype_names[i]},
                                        {"shape", contiguous[i].sizes()},
                                        {"data_offsets", {begin[i], begin[i] + contiguous[i].nbytes()}}};
  std::string text;
  try {
    text = header.dump();
  } catch (const std::exception& e) {
    throw Error(std::string("save: a tensor name or metadata string is not valid UTF-8 (") + e.what() + ")");
  }
  while (text.size() % 8 != 0) text.push_back(' ');
  Serialized s;
  s.head.resize(8);
  for (int i = 0; i < 8; ++i) s.head[i] = static_cast<char>((static_cast<uint64_t>(text.size()) >> (8 * i)) & 0xff);
  s.head += text;
  for (size_t i : file_order) s.data.push_back(contiguous[i]);
  return s;
}

}  // namespace

// ------------------------------------------------------------------ public

std::string to_safetensors_bytes(const StateDict& tensors, const Metadata& metadata, bool checksum) {
  Serialized s = serialize(tensors, metadata, checksum);
  size_t total = s.head.size();
  for (const Tensor& t : s.data) total += t.nbytes();
  std::string out;
  out.reserve(total);
  out += s.head;
  for (const Tensor& t : s.data) out.append(static_cast<const char*>(t.const_raw_data()), t.nbytes());
  return out;
}

SafetensorsContent from_safetensors_bytes(const std::string& bytes, const std::string& source,
                                          bool require_checksum) {
  MemorySource src(bytes);
  return read_tensors(src, "load '" + source + "'", require_checksum);
}

void save_safetensors(const StateDict& tensors, const std::string& path, const Metadata& metadata) {
  Serialized s = serialize(tensors, metadata, /*checksum=*/true);
  std::vector<ByteSpan> pieces{{s.head.data(), s.head.size()}};
  for (const Tensor& t : s.data)
    if (t.nbytes() > 0) pieces.push_back({t.const_raw_data(), t.nbytes()});
  write_file_atomic(path, pieces);
}

SafetensorsContent load_safetensors(const std::string& path, bool require_checksum) {
  FileSource src(path);
  return read_tensors(src, "load '" + path + "'", require_checksum);
}

SafetensorsInfo inspect_safetensors(const std::string& path) {
  FileSource src(path);
  Header h = parse_header(src, "load '" + path + "'");
  SafetensorsInfo info;
  for (const Entry& e : h.entries) info.tensors.push_back({e.name, e.dtype, e.shape, e.begin, e.end});
  info.metadata = std::move(h.metadata);
  info.header_bytes = h.header_bytes;
  info.file_bytes = src.size();
  return info;
}

}  // namespace rnnkit::io
