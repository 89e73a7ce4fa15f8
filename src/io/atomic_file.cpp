// Atomic file replacement and whole-file reads (POSIX).
//
// write_file_atomic: write a temporary file in the destination's folder (so
// rename stays within one filesystem), fsync it, rename it over the
// destination (atomic on POSIX), then fsync the folder so the rename itself
// survives a power loss. A process killed at any point leaves the destination
// untouched or fully replaced; at worst a temporary file stays behind.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>

#include "rnnkit/io/safetensors.h"

namespace rnnkit::io {

namespace {

constexpr const char* kTempMarker = ".tmp.";

std::string errno_text(int err) { return std::strerror(err); }

std::string parent_dir(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string random_hex16() {
  std::random_device rd;
  const uint64_t v = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// Owns the temporary file until it is renamed into place.
struct TempFile {
  std::string path;
  int fd = -1;
  bool renamed = false;
  ~TempFile() {
    if (fd >= 0) ::close(fd);
    if (!renamed) ::unlink(path.c_str());
  }
};

void write_all(int fd, const char* p, size_t n, const std::string& path) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    RNNKIT_CHECK(w > 0, "save '", path, "': write failed: ", errno_text(w < 0 ? errno : EIO));
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void fsync_dir(const std::string& dir, const std::string& path) {
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  RNNKIT_CHECK(dfd >= 0, "save '", path, "': written, but opening its folder '", dir,
               "' to make the rename durable failed: ", errno_text(errno));
  const int rc = ::fsync(dfd);
  const int err = errno;
  ::close(dfd);
  // Some filesystems cannot fsync a folder (EINVAL); the rename is then as
  // durable as that filesystem makes it.
  RNNKIT_CHECK(rc == 0 || err == EINVAL, "save '", path, "': written, but fsync of its folder '", dir,
               "' failed: ", errno_text(err));
}

bool all_of(const std::string& s, size_t begin, size_t end, int (*pred)(int)) {
  if (begin >= end) return false;
  for (size_t i = begin; i < end; ++i)
    if (!pred(static_cast<unsigned char>(s[i]))) return false;
  return true;
}

int is_lower_hex(int c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

// "<name>.tmp.<pid>.<16 hex>" -> pid, or -1 when `file` is not such a name.
long temp_file_pid(const std::string& file) {
  if (file.size() < 16 + 2) return -1;
  const size_t hex_begin = file.size() - 16;
  if (file[hex_begin - 1] != '.' || !all_of(file, hex_begin, file.size(), is_lower_hex)) return -1;
  const size_t pid_end = hex_begin - 1;
  const size_t marker = file.rfind(kTempMarker, pid_end);
  if (marker == std::string::npos || marker == 0) return -1;
  const size_t pid_begin = marker + std::strlen(kTempMarker);
  if (pid_begin >= pid_end || pid_end - pid_begin > 9 || !all_of(file, pid_begin, pid_end, ::isdigit)) return -1;
  return std::stol(file.substr(pid_begin, pid_end - pid_begin));
}

}  // namespace

void write_file_atomic(const std::string& path, const std::vector<ByteSpan>& pieces) {
  RNNKIT_CHECK(!path.empty(), "save: path is empty");
  RNNKIT_CHECK(path.back() != '/', "save '", path, "': path names a folder, expected a file");
  const std::string dir = parent_dir(path);
  TempFile tmp;
  tmp.path = path + kTempMarker + std::to_string(::getpid()) + "." + random_hex16();
  tmp.fd = ::open(tmp.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  RNNKIT_CHECK(tmp.fd >= 0, "save '", path, "': cannot create the temporary file '", tmp.path,
               "': ", errno_text(errno));
  // Replacing a file keeps its permissions.
  struct stat old;
  if (::stat(path.c_str(), &old) == 0 && S_ISREG(old.st_mode)) ::fchmod(tmp.fd, old.st_mode & 07777);
  for (const ByteSpan& piece : pieces) write_all(tmp.fd, static_cast<const char*>(piece.data), piece.size, path);
  RNNKIT_CHECK(::fsync(tmp.fd) == 0, "save '", path, "': fsync failed: ", errno_text(errno));
  const int rc = ::close(tmp.fd);
  tmp.fd = -1;
  RNNKIT_CHECK(rc == 0, "save '", path, "': close failed: ", errno_text(errno));
  RNNKIT_CHECK(::rename(tmp.path.c_str(), path.c_str()) == 0, "save '", path,
               "': renaming the temporary file into place failed: ", errno_text(errno));
  tmp.renamed = true;
  fsync_dir(dir, path);
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  write_file_atomic(path, std::vector<ByteSpan>{{bytes.data(), bytes.size()}});
}

std::string read_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  RNNKIT_CHECK(fd >= 0, "load '", path, "': cannot open file: ", errno_text(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw Error("load '" + path + "': cannot stat file: " + errno_text(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error("load '" + path + "': " + (S_ISDIR(st.st_mode) ? "is a folder" : "is not a regular file") +
                ", expected a file");
  }
  std::string out;
  out.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  for (;;) {
    const ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      const int err = errno;
      ::close(fd);
      throw Error("load '" + path + "': read error: " + errno_text(err));
    }
    if (r == 0) break;
    out.append(buf, static_cast<size_t>(r));
  }
  ::close(fd);
  return out;
}

std::vector<std::string> remove_stale_temp_files(const std::string& dir) {
  std::vector<std::string> removed;
  DIR* d = ::opendir(dir.c_str());
  RNNKIT_CHECK(d != nullptr, "remove_stale_temp_files: cannot open folder '", dir, "': ", errno_text(errno));
  const long self = ::getpid();
  std::vector<std::string> stale;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    const long pid = temp_file_pid(name);
    // A temporary file of this process may be in flight on another thread.
    if (pid <= 0 || pid == self) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    stale.push_back(dir + "/" + name);
  }
  ::closedir(d);
  for (const std::string& p : stale)
    if (::unlink(p.c_str()) == 0) removed.push_back(p);
  return removed;
}

}  // namespace rnnkit::io
