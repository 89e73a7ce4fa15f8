#include "support/oracle.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <mutex>
#include <random>

namespace rnnkit::testing {

namespace {

void write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    RNNKIT_CHECK(w > 0, "oracle: write to the PyTorch process failed: ", std::strerror(errno));
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void read_all(int fd, char* p, size_t n) {
  while (n > 0) {
    ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    RNNKIT_CHECK(r > 0, "oracle: the PyTorch process closed its pipe (did it crash? see stderr above)");
    p += r;
    n -= static_cast<size_t>(r);
  }
}

}  // namespace

Oracle::Oracle() {
  int in_pipe[2], out_pipe[2];
  RNNKIT_CHECK(::pipe(in_pipe) == 0 && ::pipe(out_pipe) == 0, "oracle: pipe failed");
  const char* py = std::getenv("RNNKIT_PYTHON");
  std::string python = py ? py : "/usr/bin/python3";
  pid_ = ::fork();
  RNNKIT_CHECK(pid_ >= 0, "oracle: fork failed");
  if (pid_ == 0) {
    ::dup2(in_pipe[0], 0);
    ::dup2(out_pipe[1], 1);
    ::close(in_pipe[1]);
    ::close(out_pipe[0]);
    // PyTorch at its most accurate and single-threaded: the reference, not a race.
    ::setenv("OMP_NUM_THREADS", "1", 1);
    ::execl(python.c_str(), python.c_str(), RNNKIT_ORACLE_SCRIPT, static_cast<char*>(nullptr));
    std::perror("oracle: exec python");
    std::_Exit(127);
  }
  ::close(in_pipe[0]);
  ::close(out_pipe[1]);
  to_child_ = in_pipe[1];
  from_child_ = out_pipe[0];
  ::signal(SIGPIPE, SIG_IGN);
}

Oracle::~Oracle() {
  if (to_child_ >= 0) ::close(to_child_);
  if (from_child_ >= 0) ::close(from_child_);
  if (pid_ > 0) ::waitpid(pid_, nullptr, 0);
}

StateDict Oracle::call(const std::string& case_name, const nlohmann::json& config, const StateDict& inputs) {
  io::Metadata md{{"case", case_name}, {"config", config.dump()}};
  std::string msg = io::to_safetensors_bytes(inputs, md);
  uint64_t n = msg.size();
  char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  write_all(to_child_, len, 8);
  write_all(to_child_, msg.data(), msg.size());
  read_all(from_child_, len, 8);
  uint64_t m = 0;
  for (int i = 0; i < 8; ++i) m |= static_cast<uint64_t>(static_cast<unsigned char>(len[i])) << (8 * i);
  std::string reply(m, '\0');
  read_all(from_child_, reply.data(), m);
  io::SafetensorsContent content = io::from_safetensors_bytes(reply, "oracle reply");
  auto err = content.metadata.find("error");
  if (err != content.metadata.end()) throw Error("oracle case '" + case_name + "' failed in PyTorch:\n" + err->second);
  return content.tensors;
}

Oracle& oracle() {
  static Oracle instance;
  return instance;
}

uint64_t fresh_seed() {
  if (const char* s = std::getenv("RNNKIT_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

double rel_error(const Tensor& got, const Tensor& want) {
  std::vector<double> a = got.to_vector<double>(), b = want.to_vector<double>();
  double num = 0, den = 1;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    const double d = std::abs(a[i] - b[i]);
    if (std::isnan(d)) return INFINITY;
    num = std::max(num, d);
    den = std::max(den, std::abs(b[i]));
  }
  return num / den;
}

::testing::AssertionResult close_to(const Tensor& got, const Tensor& want, double tol, const std::string& what) {
  if (!got.defined() || !want.defined())
    return ::testing::AssertionFailure() << what << ": " << (got.defined() ? "reference" : "result") << " is undefined";
  if (got.sizes() != want.sizes())
    return ::testing::AssertionFailure() << what << ": shape " << shape_str(got.sizes()) << " != PyTorch's "
                                         << shape_str(want.sizes());
  const double e = rel_error(got, want);
  record_error(what.substr(0, what.find('[')), e);
  if (e <= tol) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": relative error " << e << " > " << tol;
}

namespace {
struct ErrorReport {
  std::mutex mu;
  std::map<std::string, std::pair<double, int>> worst;
  ~ErrorReport() {
    if (worst.empty()) return;
    std::cout << "\nparity summary (max relative error vs PyTorch, count):\n";
    for (const auto& kv : worst)
      std::cout << "  " << kv.first << ": " << kv.second.first << " (" << kv.second.second << ")\n";
  }
};
ErrorReport& report() {
  static ErrorReport r;
  return r;
}
}  // namespace

void record_error(const std::string& label, double err) {
  auto& r = report();
  std::lock_guard<std::mutex> lock(r.mu);
  auto& w = r.worst[label];
  w.first = std::max(w.first, err);
  w.second++;
}

}  // namespace rnnkit::testing
