#include "torch_runner.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "torch_bench_script.h"

extern char** environ;

namespace rnnkit::bench {

namespace {

using json = nlohmann::json;

// A file in $TMPDIR (or /tmp) holding the script; removed on destruction.
class TempScript {
 public:
  TempScript() {
    const char* dir = std::getenv("TMPDIR");
    path_ = std::string(dir != nullptr && *dir ? dir : "/tmp") + "/rnnkit_torch_bench_XXXXXX";
    std::vector<char> buf(path_.begin(), path_.end());
    buf.push_back('\0');
    const int fd = mkstemp(buf.data());
    if (fd < 0) {
      path_.clear();
      return;
    }
    path_ = buf.data();
    const size_t n = std::strlen(kTorchBenchScript);
    ok_ = write(fd, kTorchBenchScript, n) == static_cast<ssize_t>(n);
    close(fd);
  }
  ~TempScript() {
    if (!path_.empty()) unlink(path_.c_str());
  }
  bool ok() const { return ok_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  bool ok_ = false;
};

struct ProcessResult {
  int status = -1;
  std::string out, err;
};

// Runs argv with env (a full environment), capturing stdout, and stderr unless
// pass_stderr.
ProcessResult run_process(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                          bool pass_stderr) {
  ProcessResult r;
  int out_pipe[2], err_pipe[2];
  if (pipe(out_pipe) != 0) return r;
  if (pipe(err_pipe) != 0) {
    close(out_pipe[0]);
    close(out_pipe[1]);
    return r;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out_pipe[1], 1);
  if (!pass_stderr) posix_spawn_file_actions_adddup2(&fa, err_pipe[1], 2);
  for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]})
    posix_spawn_file_actions_addclose(&fa, fd);
  std::vector<char*> a, e;
  for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
  a.push_back(nullptr);
  for (const auto& s : env) e.push_back(const_cast<char*>(s.c_str()));
  e.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, a[0], &fa, nullptr, a.data(), e.data());
  posix_spawn_file_actions_destroy(&fa);
  close(out_pipe[1]);
  close(err_pipe[1]);
  if (rc != 0) {
    close(out_pipe[0]);
    close(err_pipe[0]);
    r.err = std::string("cannot start ") + argv[0] + ": " + std::strerror(rc);
    return r;
  }
  // Drain both pipes without letting either fill up.
  char buf[65536];
  bool out_open = true, err_open = true;
  while (out_open || err_open) {
    fd_set fds;
    FD_ZERO(&fds);
    if (out_open) FD_SET(out_pipe[0], &fds);
    if (err_open) FD_SET(err_pipe[0], &fds);
    if (select(std::max(out_pipe[0], err_pipe[0]) + 1, &fds, nullptr, nullptr, nullptr) < 0) break;
    for (auto [fd, open, dst] : {std::tuple{out_pipe[0], &out_open, &r.out},
                                 std::tuple{err_pipe[0], &err_open, &r.err}}) {
      if (!*open || !FD_ISSET(fd, &fds)) continue;
      const ssize_t n = read(fd, buf, sizeof buf);
      if (n <= 0)
        *open = false;
      else
        dst->append(buf, static_cast<size_t>(n));
    }
  }
  close(out_pipe[0]);
  close(err_pipe[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// The current environment without the variables named, plus extra.
std::vector<std::string> environment(const std::vector<std::string>& drop,
                                     const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  for (char** p = environ; p != nullptr && *p != nullptr; ++p) {
    const std::string kv = *p;
    const std::string name = kv.substr(0, kv.find('='));
    bool keep = true;
    for (const auto& d : drop) keep = keep && name != d;
    for (const auto& x : extra) keep = keep && name != x.substr(0, x.find('='));
    if (keep) env.push_back(kv);
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

std::string join(const std::vector<int>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s;
}

// The last line of out that parses as a JSON object.
json last_json(const std::string& out) {
  std::istringstream in(out);
  std::string line;
  json found;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] != '{') continue;
    try {
      found = json::parse(line);
    } catch (const json::exception&) {
    }
  }
  return found;
}

}  // namespace

TorchResult run_torch(const std::vector<SuiteRow>& rows, const TorchOptions& opt) {
  TorchResult res;
  res.rows.assign(rows.size(), TorchTiming{});
  if (rows.empty()) {
    res.ok = true;
    return res;
  }
  TempScript script;
  if (!script.ok()) {
    res.error = "cannot write the PyTorch script to a temporary file";
    return res;
  }
  json jrows = json::array();
  for (const auto& r : rows)
    jrows.push_back({{"cell", r.cell}, {"hidden", r.hidden}, {"batch", r.batch}, {"steps", r.steps}});
  const std::vector<std::string> drop = {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                         "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                         "MALLOC_MMAP_THRESHOLD_", "RNNKIT_NUM_THREADS"};
  bool any = false;
  for (size_t bi = 0; bi < opt.blas_threads.size(); ++bi) {
    const std::string k = std::to_string(opt.blas_threads[bi]);
    const auto env = environment(drop, {"OPENBLAS_NUM_THREADS=" + k, "OMP_NUM_THREADS=" + k});
    const ProcessResult pr =
        run_process({opt.python, script.path(), "--mode", "time", "--rows", jrows.dump(),
                     "--threads", join(opt.torch_threads), "--reps", std::to_string(opt.reps),
                     "--budget", std::to_string(opt.budget_s)},
                    env, opt.verbose);
    const json j = last_json(pr.out);
    if (pr.status != 0 || !j.contains("rows")) {
      res.error = "PyTorch run failed (exit " + std::to_string(pr.status) + "): " +
                  pr.err.substr(pr.err.size() > 600 ? pr.err.size() - 600 : 0);
      if (!any) return res;
      break;
    }
    any = true;
    res.version = j.value("torch", "");
    std::string blas;
    for (const auto& b : j["blas"]) blas += (blas.empty() ? "" : ", ") + b.get<std::string>();
    res.blas = blas.empty() ? "none found in the process maps" : blas;
    for (const auto& jr : j["rows"]) {
      for (size_t i = 0; i < rows.size(); ++i) {
        if (jr["cell"] != rows[i].cell || jr["hidden"] != rows[i].hidden ||
            jr["batch"] != rows[i].batch || jr["steps"] != rows[i].steps)
          continue;
        TorchTiming& t = res.rows[i];
        const std::string setting =
            "torch " + std::to_string(jr["threads"].get<int>()) + " / BLAS " + k;
        const double f = jr["fwd_ms"], tr = jr["train_ms"];
        if (t.fwd_ms < 0 || f < t.fwd_ms) {
          t.fwd_ms = f;
          t.fwd_setting = setting;
          t.fwd_reps = jr["fwd_reps"];
        }
        if (t.train_ms < 0 || tr < t.train_ms) {
          t.train_ms = tr;
          t.train_setting = setting;
          t.train_reps = jr["train_reps"];
        }
      }
    }
    // OPENBLAS_NUM_THREADS only matters to OpenBLAS.
    if (res.blas.find("openblas") == std::string::npos) break;
  }
  if (opt.memory) {
    // One process per row: in a process that ran other rows, malloc hands out
    // blocks that are already resident and the growth would not show.
    const auto env = environment(drop, {"OPENBLAS_NUM_THREADS=1", "OMP_NUM_THREADS=1",
                                        "MALLOC_MMAP_THRESHOLD_=65536", "MALLOC_TRIM_THRESHOLD_=0"});
    for (size_t i = 0; i < rows.size(); ++i) {
      const ProcessResult pr =
          run_process({opt.python, script.path(), "--mode", "memory", "--rows",
                       json::array({jrows[i]}).dump(), "--threads", "1"},
                      env, opt.verbose);
      const json j = last_json(pr.out);
      if (pr.status == 0 && j.contains("rows") && !j["rows"].empty())
        res.rows[i].peak_train_bytes = j["rows"][0]["peak_train_bytes"];
    }
  }
  res.ok = true;
  return res;
}

}  // namespace rnnkit::bench
