// safetensors reader/writer and atomic file writes.
#include "rnnkit/io/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "tensor/native.h"

namespace rnnkit {

// ---------------------------------------------------------------- StateDict

void StateDict::insert(const std::string& key, const Tensor& value) {
  auto it = index_.find(key);
  if (it != index_.end()) {
    items_[it->second].second = value;
    return;
  }
  index_[key] = items_.size();
  items_.emplace_back(key, value);
}

const Tensor* StateDict::find(const std::string& key) const {
  auto it = index_.find(key);
  return it == index_.end() ? nullptr : &items_[it->second].second;
}

const Tensor& StateDict::at(const std::string& key) const {
  const Tensor* t = find(key);
  RNNKIT_CHECK(t != nullptr, "StateDict: no entry named '", key, "'");
  return *t;
}

Tensor& StateDict::at(const std::string& key) {
  auto it = index_.find(key);
  RNNKIT_CHECK(it != index_.end(), "StateDict: no entry named '", key, "'");
  return items_[it->second].second;
}

bool StateDict::erase(const std::string& key) {
  auto it = index_.find(key);
  if (it == index_.end()) return false;
  items_.erase(items_.begin() + static_cast<std::ptrdiff_t>(it->second));
  index_.clear();
  for (size_t i = 0; i < items_.size(); ++i) index_[items_[i].first] = i;
  return true;
}

std::vector<std::string> StateDict::keys() const {
  std::vector<std::string> k;
  for (const auto& it : items_) k.push_back(it.first);
  return k;
}

namespace io {

namespace {

constexpr uint64_t kMaxHeaderBytes = 100u * 1024u * 1024u;  // as the reference implementation

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

bool parse_st_dtype(const std::string& s, Dtype* d) {
  if (s == "F32") *d = Dtype::Float32;
  else if (s == "F64") *d = Dtype::Float64;
  else if (s == "I64") *d = Dtype::Int64;
  else if (s == "BOOL") *d = Dtype::Bool;
  else return false;
  return true;
}

}  // namespace

std::string to_safetensors_bytes(const StateDict& tensors, const Metadata& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json md = nlohmann::ordered_json::object();
    for (const auto& kv : metadata) md[kv.first] = kv.second;
    header["__metadata__"] = md;
  }
  // The reference implementation orders data by dtype alignment then name;
  // any order is valid as long as offsets tile the buffer. Keep insertion order.
  uint64_t offset = 0;
  std::vector<Tensor> contiguous;
  for (const auto& [name, t] : tensors) {
    RNNKIT_CHECK(!name.empty(), "save: tensor names must be non-empty");
    RNNKIT_CHECK(name != "__metadata__", "save: '__metadata__' is reserved and cannot name a tensor");
    RNNKIT_CHECK(t.defined(), "save: tensor '", name, "' is undefined");
    Tensor c = native::contiguous(t.detach());
    const uint64_t nbytes = c.nbytes();
    header[name] = {{"dtype", st_dtype(c.dtype())}, {"shape", c.sizes()}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    contiguous.push_back(c);
  }
  std::string h = header.dump();
  while (h.size() % 8 != 0) h.push_back(' ');
  std::string out;
  out.reserve(8 + h.size() + offset);
  uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += h;
  for (const Tensor& c : contiguous) out.append(static_cast<const char*>(c.raw_data()), c.nbytes());
  return out;
}

SafetensorsContent from_safetensors_bytes(const std::string& bytes, const std::string& source) {
  const std::string where = "load '" + source + "'";
  RNNKIT_CHECK(bytes.size() >= 8, where, ": file is truncated (", bytes.size(),
               " bytes; a safetensors file starts with an 8-byte header length)");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  RNNKIT_CHECK(n <= kMaxHeaderBytes, where, ": header length ", n, " exceeds the limit of ", kMaxHeaderBytes,
               " bytes (not a safetensors file, or corrupted)");
  RNNKIT_CHECK(n <= bytes.size() - 8, where, ": header length ", n, " runs past the end of the file (",
               bytes.size(), " bytes): the file is truncated or not safetensors");
  RNNKIT_CHECK(n >= 2 && bytes[8] == '{', where, ": header does not start with '{': not a safetensors file");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(n));
  } catch (const std::exception& e) {
    throw Error(where + ": header is not valid JSON (" + e.what() + ")");
  }
  RNNKIT_CHECK(header.is_object(), where, ": header must be a JSON object");
  const uint64_t data_size = bytes.size() - 8 - n;
  const char* data = bytes.data() + 8 + n;
  SafetensorsContent content;
  struct Span {
    uint64_t begin, end;
    std::string name;
  };
  std::vector<Span> spans;
  struct Parsed {
    uint64_t offset;
    std::string name;
    Tensor tensor;
  };
  std::vector<Parsed> parsed;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      RNNKIT_CHECK(v.is_object(), where, ": '__metadata__' must be an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        RNNKIT_CHECK(m.value().is_string(), where, ": metadata value '", m.key(), "' must be a string");
        content.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string key = where + ": tensor '" + name + "'";
    RNNKIT_CHECK(v.is_object() && v.contains("dtype") && v.contains("shape") && v.contains("data_offsets"), key,
                 ": entry must be an object with dtype, shape and data_offsets");
    RNNKIT_CHECK(v["dtype"].is_string(), key, ": dtype must be a string");
    Dtype dtype;
    RNNKIT_CHECK(parse_st_dtype(v["dtype"].get<std::string>(), &dtype), key, ": unsupported dtype '",
                 v["dtype"].get<std::string>(), "' (rnnkit reads F32, F64, I64, BOOL)");
    RNNKIT_CHECK(v["shape"].is_array(), key, ": shape must be an array");
    Shape shape;
    uint64_t numel = 1;
    for (const auto& d : v["shape"]) {
      RNNKIT_CHECK(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0), key,
                   ": shape entries must be non-negative integers");
      const uint64_t s = d.get<uint64_t>();
      RNNKIT_CHECK(s < (uint64_t{1} << 48) && (s == 0 || numel <= (uint64_t{1} << 62) / s), key,
                   ": shape ", v["shape"].dump(), " overflows");
      numel *= s;
      shape.push_back(static_cast<int64_t>(s));
    }
    const auto& offs = v["data_offsets"];
    RNNKIT_CHECK(offs.is_array() && offs.size() == 2 && offs[0].is_number_unsigned() && offs[1].is_number_unsigned(),
                 key, ": data_offsets must be two non-negative integers");
    const uint64_t b = offs[0].get<uint64_t>(), e = offs[1].get<uint64_t>();
    RNNKIT_CHECK(b <= e && e <= data_size, key, ": data_offsets [", b, ", ", e, "] lie outside the data buffer of ",
                 data_size, " bytes (file truncated or corrupted)");
    RNNKIT_CHECK(e - b == numel * element_size(dtype), key, ": data_offsets span ", e - b,
                 " bytes but shape ", v["shape"].dump(), " of ", v["dtype"].get<std::string>(), " needs ",
                 numel * element_size(dtype));
    spans.push_back({b, e, name});
    Tensor t = empty(shape, TensorOptions(dtype));
    if (e > b) std::memcpy(t.raw_data(), data + b, e - b);
    if (dtype == Dtype::Bool) {
      const unsigned char* p = static_cast<const unsigned char*>(t.raw_data());
      for (uint64_t i = 0; i < numel; ++i)
        RNNKIT_CHECK(p[i] <= 1, key, ": BOOL value ", int(p[i]), " at element ", i, " is neither 0 nor 1");
    }
    parsed.push_back({b, name, t});
  }
  // Offsets must tile the buffer exactly: no gaps, no overlaps.
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t cursor = 0;
  for (const Span& s : spans) {
    RNNKIT_CHECK(s.begin == cursor, where, ": tensor '", s.name, "' data starts at byte ", s.begin, " but ",
                 s.begin < cursor ? "overlaps the previous tensor" : "leaves a gap after the previous tensor",
                 " (expected offset ", cursor, ")");
    cursor = s.end;
  }
  RNNKIT_CHECK(cursor == data_size, where, ": the data buffer has ", data_size, " bytes but the tensors cover ",
               cursor, " (trailing bytes: corrupted file)");
  // The parsed JSON object is sorted by key; data offsets keep the order the
  // tensors were written in, which is the order a state_dict had.
  std::sort(parsed.begin(), parsed.end(), [](const Parsed& a, const Parsed& b) {
    return a.offset != b.offset ? a.offset < b.offset : a.name < b.name;
  });
  for (auto& p : parsed) content.tensors.insert(p.name, p.tensor);
  return content;
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  RNNKIT_CHECK(!path.empty(), "save: path is empty");
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  std::random_device rd;
  const std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(rd());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  RNNKIT_CHECK(fd >= 0, "save '", path, "': cannot create temporary file '", tmp, "': ", std::strerror(errno));
  size_t written = 0;
  while (written < bytes.size()) {
    ssize_t w = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw Error("save '" + path + "': write failed: " + std::strerror(err));
    }
    written += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw Error("save '" + path + "': fsync/close failed: " + std::strerror(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw Error("save '" + path + "': rename into place failed: " + std::strerror(err));
  }
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  RNNKIT_CHECK(in.good(), "load '", path, "': cannot open file: ", std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  RNNKIT_CHECK(!in.bad(), "load '", path, "': read error");
  return ss.str();
}

void save_safetensors(const StateDict& tensors, const std::string& path, const Metadata& metadata) {
  write_file_atomic(path, to_safetensors_bytes(tensors, metadata));
}

SafetensorsContent load_safetensors(const std::string& path) {
  return from_safetensors_bytes(read_file(path), path);
}

}  // namespace io
}  // namespace rnnkit
