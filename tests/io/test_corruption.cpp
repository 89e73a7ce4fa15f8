// Damaged files: truncation at every length, byte flips at every position and
// thousands of random ones, multi-byte damage and hostile headers. Loading
// must never crash (scripts/asan_io_tests.sh runs this under AddressSanitizer
// and UBSan) and must only ever throw rnnkit::Error. A checkpoint (and any
// file rnnkit::save wrote: it carries the content checksum) must refuse every
// damaged version; a plain safetensors file without the checksum may load
// when the damage is inside tensor data, which nothing but a checksum can see.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <functional>

#include "io/io_test_util.h"
#include "rnnkit/io/checkpoint.h"
#include "support/oracle.h"

using namespace rnnkit;
using namespace rnnkit::iotest;
using rnnkit::testing::fresh_seed;

namespace {

enum class Outcome { kError, kLoaded };

// Overwrites in place and then cuts to size: truncating to zero first would
// make ext4 flush on close (auto_da_alloc), which costs seconds over
// thousands of files.
void write_raw(const std::string& path, const std::string& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
  ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(bytes.size())), 0);
  ::close(fd);
}

uint64_t header_length(const std::string& bytes) {
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  return n;
}

// Loads `bytes` through a file with `load`; any exception other than
// rnnkit::Error fails the test with `what`.
Outcome try_load(const std::string& path, const std::string& bytes, const std::function<void(const std::string&)>& load,
                 const std::string& what) {
  write_raw(path, bytes);
  try {
    load(path);
    return Outcome::kLoaded;
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << what << ": the error does not name the file: " << msg;
    return Outcome::kError;
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": threw a non-rnnkit exception: " << e.what();
  } catch (...) {
    ADD_FAILURE() << what << ": threw something that is not a std::exception";
  }
  return Outcome::kError;
}

struct Region {
  uint64_t errors = 0, loaded = 0;
};

// A file's regions, for reporting: the length field, the header, the data.
int region_of(const std::string& bytes, uint64_t pos) {
  if (pos < 8) return 0;
  return pos < 8 + header_length(bytes) ? 1 : 2;
}
const char* kRegionNames[] = {"length field", "header", "data"};

struct Subject {
  const char* name;
  std::string bytes;
  std::function<void(const std::string&)> load;
  bool must_refuse_all;  // carries the checksum
};

std::vector<Subject> subjects(Generator& g) {
  io::TrainingCheckpoint c = random_checkpoint(g, 4);
  c.model.insert("big", randn({400}, kFloat32, &g));  // so data is a good part of the file
  TempDir dir;
  save_checkpoint(c, dir.file("c.safetensors"));
  StateDict sd = random_state(g, 4);
  sd.insert("big", randn({400}, kFloat32, &g));
  io::save_safetensors(sd, dir.file("s.safetensors"), {{"note", "plain save"}});
  return {
      {"checkpoint", io::read_file(dir.file("c.safetensors")), [](const std::string& p) { load_checkpoint(p); }, true},
      {"rnnkit::save file", io::read_file(dir.file("s.safetensors")), [](const std::string& p) { rnnkit::load(p); },
       true},
      {"safetensors without checksum", io::to_safetensors_bytes(sd, {{"note", "plain"}}),
       [](const std::string& p) { io::load_safetensors(p); }, false},
  };
}

TEST(Corruption, TruncationAtEveryLength) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Generator g(seed);
  TempDir dir;
  const std::string path = dir.file("t.safetensors");
  for (const Subject& s : subjects(g)) {
    SCOPED_TRACE(s.name);
    ASSERT_EQ(try_load(path, s.bytes, s.load, "intact"), Outcome::kLoaded);
    for (size_t len = 0; len < s.bytes.size(); ++len) {
      const Outcome o = try_load(path, s.bytes.substr(0, len), s.load, "truncated to " + std::to_string(len));
      // Truncation always breaks the layout, checksum or not.
      EXPECT_EQ(o, Outcome::kError) << "truncated to " << len << " of " << s.bytes.size() << " bytes loaded";
    }
    std::cout << "  " << s.name << ": " << s.bytes.size() << " truncations (every length), all refused\n";
  }
}

TEST(Corruption, TruncationOfABigCheckpointAtEveryBoundary) {
  Generator g(fresh_seed());
  io::TrainingCheckpoint c = random_checkpoint(g);
  c.model.insert("big", randn({256 * 1024}, kFloat32, &g));  // 1 MB
  TempDir dir;
  const std::string src = dir.file("big.safetensors"), path = dir.file("t.safetensors");
  save_checkpoint(c, src);
  const std::string bytes = io::read_file(src);
  const uint64_t data_start = 8 + header_length(bytes);
  std::vector<uint64_t> cuts;
  for (uint64_t i = 0; i <= data_start + 16; ++i) cuts.push_back(i);  // every byte of length field and header
  for (const auto& t : io::inspect_safetensors(src).tensors)
    for (uint64_t at : {data_start + t.data_begin, data_start + t.data_end})
      for (int d = -2; d <= 2; ++d) cuts.push_back(at + d);
  for (int i = 0; i < 200; ++i) cuts.push_back(g.next_below(bytes.size()));
  int refused = 0;
  for (uint64_t len : cuts) {
    if (len >= bytes.size()) continue;
    ASSERT_EQ(try_load(path, bytes.substr(0, len), [](const std::string& p) { load_checkpoint(p); },
                       "truncated to " + std::to_string(len)),
              Outcome::kError)
        << "truncated to " << len;
    ++refused;
  }
  std::cout << "  1 MB checkpoint: " << refused << " truncations at header and tensor boundaries and random points, "
            << "all refused\n";
}

TEST(Corruption, ByteFlips) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Generator g(seed);
  TempDir dir;
  const std::string path = dir.file("f.safetensors");
  for (const Subject& s : subjects(g)) {
    SCOPED_TRACE(s.name);
    Region regions[3];
    auto flip = [&](std::string bytes, const std::vector<uint64_t>& positions, const std::string& what) {
      for (uint64_t pos : positions) bytes[pos] ^= static_cast<char>(1 + g.next_below(255));  // never a no-op
      const Outcome o = try_load(path, bytes, s.load, what);
      Region& r = regions[region_of(s.bytes, positions[0])];
      (o == Outcome::kError ? r.errors : r.loaded)++;
      if (s.must_refuse_all) EXPECT_EQ(o, Outcome::kError) << what << " loaded";
    };
    // Every position once, then random positions, then 2-16 bytes at once.
    for (uint64_t pos = 0; pos < s.bytes.size(); ++pos) flip(s.bytes, {pos}, "flip at " + std::to_string(pos));
    for (int i = 0; i < 2000; ++i) {
      const uint64_t pos = g.next_below(s.bytes.size());
      flip(s.bytes, {pos}, "flip at " + std::to_string(pos));
    }
    for (int i = 0; i < 1000; ++i) {
      std::vector<uint64_t> positions(1 + g.next_below(16));
      for (auto& p : positions) p = g.next_below(s.bytes.size());
      flip(s.bytes, positions, "multi-byte flip starting at " + std::to_string(positions[0]));
    }
    uint64_t total = 0;
    std::cout << "  " << s.name << " (" << s.bytes.size() << " bytes):";
    for (int r = 0; r < 3; ++r) {
      std::cout << " " << kRegionNames[r] << " " << regions[r].errors << " refused/" << regions[r].loaded << " loaded;";
      total += regions[r].errors + regions[r].loaded;
    }
    std::cout << " " << total << " damaged files\n";
    if (!s.must_refuse_all) EXPECT_GT(regions[2].loaded, 0u) << "without a checksum, data flips load (the control)";
  }
}

// Bursts of zeros or random bytes, like a torn sector or a bad block.
TEST(Corruption, OverwrittenRuns) {
  Generator g(fresh_seed());
  TempDir dir;
  const std::string path = dir.file("b.safetensors");
  for (const Subject& s : subjects(g)) {
    SCOPED_TRACE(s.name);
    for (int i = 0; i < 1000; ++i) {
      std::string bytes = s.bytes;
      const uint64_t pos = g.next_below(bytes.size());
      const uint64_t len = std::min<uint64_t>(1 + g.next_below(512), bytes.size() - pos);
      const bool zeros = g.next_below(2) == 0;
      for (uint64_t k = pos; k < pos + len; ++k) bytes[k] = zeros ? '\0' : static_cast<char>(g.next_u64());
      if (bytes == s.bytes) continue;
      const Outcome o = try_load(path, bytes, s.load, "run at " + std::to_string(pos));
      if (s.must_refuse_all) EXPECT_EQ(o, Outcome::kError) << "run of " << len << " at " << pos << " loaded";
    }
  }
}

// Headers built from JSON pieces and from edits of a real header: hostile
// numbers, wrong types, deep nesting. Only rnnkit::Error, never a crash.
TEST(Corruption, HostileHeaders) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Generator g(seed);
  TempDir dir;
  const std::string path = dir.file("h.safetensors");
  StateDict sd;
  sd.insert("a", randn({2, 3}, kFloat32, &g));
  sd.insert("b", from_vector(std::vector<int64_t>{1, 0}).to(kBool));
  const std::string good = io::to_safetensors_bytes(sd, {{"k", "v"}});
  const std::string header = good.substr(8, header_length(good)), data = good.substr(8 + header_length(good));
  const std::vector<std::string> pieces = {
      "{", "}", "[", "]", ",", ":", "\"a\"", "\"b\"", "\"dtype\"", "\"shape\"", "\"data_offsets\"", "\"__metadata__\"",
      "\"F32\"", "\"BOOL\"", "\"I64\"", "\"F16\"", "0", "1", "2", "6", "24", "26", "-1", "1e400", "1.5",
      "18446744073709551615", "18446744073709551616", "9223372036854775807", "4294967296", "null", "true", "\"\\u0000\"",
      "\"\\ud800\"", " ", "\"\xc3\x28\""};
  auto load = [](const std::string& p) { io::load_safetensors(p); };
  auto with_length = [](const std::string& h, const std::string& d) {
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((static_cast<uint64_t>(h.size()) >> (8 * i)) & 0xff);
    return out + h + d;
  };
  int loaded = 0, total = 0;
  for (int i = 0; i < 1500; ++i) {
    std::string h = "{";
    const int n = 1 + static_cast<int>(g.next_below(40));
    for (int k = 0; k < n; ++k) h += pieces[g.next_below(pieces.size())];
    loaded += try_load(path, with_length(h, data), load, "random header " + h) == Outcome::kLoaded;
    ++total;
  }
  // Replace one token of the real header (a number, a string, a bracket) with a piece.
  for (int i = 0; i < 1500; ++i) {
    std::string h = header;
    const size_t at = g.next_below(h.size());
    const size_t len = 1 + g.next_below(6);
    h.replace(at, std::min(len, h.size() - at), pieces[g.next_below(pieces.size())]);
    loaded += try_load(path, with_length(h, data), load, "edited header " + h) == Outcome::kLoaded;
    ++total;
  }
  // Deep nesting and a huge declared length that the file does not have.
  loaded += try_load(path, with_length("{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}", ""), load,
                     "deep nesting") == Outcome::kLoaded;
  loaded += try_load(path, with_length(std::string(1 << 20, ' '), ""), load, "spaces") == Outcome::kLoaded;
  std::cout << "  " << total << " hostile headers: " << loaded << " still formed a valid file\n";
}

}  // namespace
