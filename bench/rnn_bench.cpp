#include "rnn_bench.h"

#include <dnnl.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "onednn_rnn.h"
#include "problem.h"
#include "rnnkit/error.h"
#include "rnnkit/threading.h"
#include "rnnkit/version.h"
#include "torch_runner.h"

namespace rnnkit::bench {

using json = nlohmann::json;

std::string SuiteRow::key() const {
  return cell + "-" + std::to_string(hidden) + "-" + std::to_string(batch) + "-" + std::to_string(steps);
}

double SuiteRow::forward_flops() const {
  const double G = cell == "lstm" ? 4 : cell == "gru" ? 3 : 1;
  return 2.0 * G * hidden * (hidden + hidden) * batch * steps;
}

namespace {

const char* kDefaultSuite = R"(
lstm 128 1 256
gru 128 1 256
rnn_tanh 128 1 256
lstm 512 1 25
lstm 512 4 25
gru 1024 1 1500
rnn_relu 1760 16 50
lstm 512 64 25
lstm 1024 128 25
)";

// The rows --quick runs when no --rows is given: the small-batch ones that take
// milliseconds.
const char* kQuickRows[] = {"lstm-128-1-256", "gru-128-1-256", "rnn_tanh-128-1-256",
                            "lstm-512-4-25"};

}  // namespace

std::vector<SuiteRow> parse_suite(std::istream& in) {
  std::vector<SuiteRow> rows;
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    const size_t hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    std::istringstream ls(line);
    SuiteRow r;
    if (!(ls >> r.cell)) continue;
    RNNKIT_CHECK(ls >> r.hidden >> r.batch >> r.steps, "bench suite line ", line_no,
                 ": expected 'cell hidden batch steps', got '", line, "'");
    RNNKIT_CHECK(r.hidden > 0 && r.batch > 0 && r.steps > 0, "bench suite line ", line_no,
                 ": sizes must be positive, got '", line, "'");
    cell_type(r.cell);  // throws for an unknown cell
    rows.push_back(r);
  }
  return rows;
}

std::vector<SuiteRow> default_suite() {
  std::istringstream in(kDefaultSuite);
  return parse_suite(in);
}

std::string usage() {
  return R"(usage: rnnkit bench [options]
Times rnnkit's recurrent kernels, oneDNN's RNN primitive, PyTorch and the sgemm
ceiling side by side on a suite of layers (input_size = hidden, one layer, one
direction, float32): forward inference, and forward training + backward.

  --threads N        threads for rnnkit and oneDNN (default: RNNKIT_NUM_THREADS, else all cores)
  --rows LIST        comma-separated row numbers (1-based) or substrings of row keys
                     such as lstm-128-1-256 (cell-hidden-batch-steps)
  --quick            small rows only (unless --rows) and shorter timing
  --suite FILE       rows 'cell hidden batch steps' (default: the built-in suite)
  --json             print one JSON object instead of the table
  --min-time S       seconds of timed calls per implementation and measurement (default 1)
  --reps-max N       most timed calls per measurement (default 500)
  --no-torch         skip PyTorch
  --python PATH      interpreter with torch (default /usr/bin/python3)
  --torch-threads L  torch.set_num_threads values to try (default 1,2)
  --blas-threads L   OPENBLAS_NUM_THREADS=OMP_NUM_THREADS values to try (default 1,2)
  --torch-budget S   seconds per PyTorch row and setting (default 2)
  --no-memory        skip the peak-memory measurements
  --bf16             also time inference in the two bfloat16 options (small-batch
                     rows): bfloat16 recurrent weights, and the bfloat16 products
                     (x, h and both weights rounded in the products); each with its
                     error against float32
  --train-split      also time the training step's forward and backward apart
                     (rows 'train fwd' and 'train bwd')
  --verbose          progress on stderr
)";
}

namespace {

struct Options {
  int threads = 0;
  std::vector<std::string> row_filters;
  bool quick = false, json = false, torch = true, memory = true, verbose = false, bf16 = false,
       train_split = false;
  std::string suite_file;
  double min_time_s = 1.0;
  int min_reps = 5, max_reps = 500, warmup = 2;
  TorchOptions torch_opt;
};

std::vector<int> parse_int_list(const std::string& s, const char* what) {
  std::vector<int> v;
  std::istringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    char* end = nullptr;
    const long n = std::strtol(item.c_str(), &end, 10);
    RNNKIT_CHECK(!item.empty() && *end == '\0' && n > 0, "bench: ", what,
                 " must be a comma-separated list of positive integers, got '", s, "'");
    v.push_back(static_cast<int>(n));
  }
  RNNKIT_CHECK(!v.empty(), "bench: ", what, " is empty");
  return v;
}

double parse_double(const std::string& s, const char* what) {
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  RNNKIT_CHECK(!s.empty() && *end == '\0' && v > 0, "bench: ", what,
               " must be a positive number, got '", s, "'");
  return v;
}

Options parse_options(const std::vector<std::string>& args) {
  Options o;
  bool min_time_given = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> const std::string& {
      RNNKIT_CHECK(i + 1 < args.size(), "bench: ", a, " needs a value");
      return args[++i];
    };
    if (a == "--threads") {
      o.threads = parse_int_list(value(), "--threads")[0];
    } else if (a == "--rows") {
      std::istringstream in(value());
      std::string item;
      while (std::getline(in, item, ','))
        if (!item.empty()) o.row_filters.push_back(item);
    } else if (a == "--quick") {
      o.quick = true;
    } else if (a == "--suite") {
      o.suite_file = value();
    } else if (a == "--json") {
      o.json = true;
    } else if (a == "--min-time") {
      o.min_time_s = parse_double(value(), "--min-time");
      min_time_given = true;
    } else if (a == "--reps-max") {
      o.max_reps = parse_int_list(value(), "--reps-max")[0];
    } else if (a == "--no-torch") {
      o.torch = false;
    } else if (a == "--python") {
      o.torch_opt.python = value();
    } else if (a == "--torch-threads") {
      o.torch_opt.torch_threads = parse_int_list(value(), "--torch-threads");
    } else if (a == "--blas-threads") {
      o.torch_opt.blas_threads = parse_int_list(value(), "--blas-threads");
    } else if (a == "--torch-budget") {
      o.torch_opt.budget_s = parse_double(value(), "--torch-budget");
    } else if (a == "--no-memory") {
      o.memory = false;
    } else if (a == "--bf16") {
      o.bf16 = true;
    } else if (a == "--train-split") {
      o.train_split = true;
    } else if (a == "--verbose") {
      o.verbose = true;
    } else {
      RNNKIT_CHECK(false, "bench: unknown option '", a, "' (see rnnkit bench --help)");
    }
  }
  if (o.quick) {
    if (!min_time_given) o.min_time_s = 0.25;
    o.min_reps = 3;
    o.torch_opt.reps = 3;
    o.torch_opt.budget_s = std::min(o.torch_opt.budget_s, 0.5);
  }
  o.torch_opt.memory = o.memory;
  o.torch_opt.verbose = o.verbose;
  return o;
}

std::vector<SuiteRow> select_rows(const Options& o) {
  std::vector<SuiteRow> all;
  if (o.suite_file.empty()) {
    all = default_suite();
  } else {
    std::ifstream in(o.suite_file);
    RNNKIT_CHECK(in.good(), "bench: cannot read the suite file '", o.suite_file, "'");
    all = parse_suite(in);
  }
  std::vector<std::string> filters = o.row_filters;
  if (filters.empty() && o.quick) filters.assign(std::begin(kQuickRows), std::end(kQuickRows));
  if (filters.empty()) return all;
  std::vector<SuiteRow> out;
  for (size_t i = 0; i < all.size(); ++i) {
    bool match = false;
    for (const auto& f : filters) {
      char* end = nullptr;
      const long n = std::strtol(f.c_str(), &end, 10);
      if (*end == '\0' && !f.empty())
        match = match || n == static_cast<long>(i + 1);
      else
        match = match || all[i].key().find(f) != std::string::npos;
    }
    if (match) out.push_back(all[i]);
  }
  RNNKIT_CHECK(!out.empty(), "bench: --rows matched no row of the suite");
  return out;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Stats {
  double median_ms = -1, p10_ms = -1, p90_ms = -1;
  int reps = 0;
};

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(pos);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

// Times the callables in turn (a b a b ...), so that a change of load on the
// machine touches all of them alike; returns the median per callable.
std::vector<Stats> time_alternating(const std::vector<std::function<void()>>& fns,
                                    const Options& o) {
  std::vector<double> last(fns.size(), 0.0);
  for (int w = 0; w < o.warmup; ++w)
    for (size_t i = 0; i < fns.size(); ++i) {
      const double t0 = now_s();
      fns[i]();
      last[i] = now_s() - t0;
    }
  const double slowest = *std::max_element(last.begin(), last.end());
  const int reps = static_cast<int>(
      std::clamp(std::ceil(o.min_time_s / std::max(slowest, 1e-7)), double(o.min_reps),
                 double(std::max(o.min_reps, o.max_reps))));
  std::vector<std::vector<double>> times(fns.size());
  for (int r = 0; r < reps; ++r)
    for (size_t i = 0; i < fns.size(); ++i) {
      const double t0 = now_s();
      fns[i]();
      times[i].push_back((now_s() - t0) * 1e3);
    }
  std::vector<Stats> out(fns.size());
  for (size_t i = 0; i < fns.size(); ++i) {
    out[i].median_ms = percentile(times[i], 0.5);
    out[i].p10_ms = percentile(times[i], 0.1);
    out[i].p90_ms = percentile(times[i], 0.9);
    out[i].reps = reps;
  }
  return out;
}

// GFLOP/s of a large square dnnl_sgemm, median of several calls.
double sgemm_ceiling(const Options& o, int64_t n) {
  std::vector<float> a(static_cast<size_t>(n * n), 0.5f), b(a.size(), 0.25f), c(a.size(), 0.f);
  auto call = [&] { dnnl_sgemm('N', 'N', n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n); };
  Options t = o;
  t.min_time_s = o.quick ? 0.3 : 1.0;
  t.min_reps = 5;
  const Stats s = time_alternating({call}, t)[0];
  return 2.0 * n * n * n / (s.median_ms * 1e-3) / 1e9;
}

double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, scale = 1;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    diff = std::max(diff, static_cast<double>(std::abs(a[i] - b[i])));
    scale = std::max(scale, static_cast<double>(std::abs(b[i])));
  }
  return diff / scale;
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  double a = -1, b = -1, c = -1;
  in >> a >> b >> c;
  std::ostringstream os;
  os << std::fixed << std::setprecision(2) << a << " " << b << " " << c;
  return os.str();
}

std::string isa_flags() {
  std::string s;
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) s += " avx512f";
  if (__builtin_cpu_supports("avx512bf16")) s += " avx512_bf16";
  if (__builtin_cpu_supports("avx2")) s += " avx2";
  if (__builtin_cpu_supports("fma")) s += " fma";
  return s.empty() ? " (no AVX2)" : s;
}

struct RowResult {
  SuiteRow row;
  Stats rk_fwd, rk_train, dn_fwd, dn_train;
  Stats rk_fwd_packing;  // inference that packs W_hh itself (small-batch rows only)
  Stats rk_fwd_bf16;     // inference with bfloat16 W_hh (--bf16, small-batch rows)
  double bf16_error = -1;  // its y against float32, relative
  Stats rk_fwd_bf16_products;       // inference in the bfloat16 products (--bf16)
  double bf16_products_error = -1;  // its y against float32, relative
  // The training step's forward and backward apart (--train-split).
  Stats rk_train_fwd, rk_train_bwd, dn_train_fwd, dn_train_bwd;
  double check_y = -1, check_dx = -1;  // rnnkit vs oneDNN, relative
  TorchTiming torch;
  int64_t rk_peak = -1, rk_buffers = -1, dn_peak = -1;
};

double gflops(double flops, double ms) { return ms > 0 ? flops / (ms * 1e-3) / 1e9 : -1; }

std::string fmt(double v, int prec, int width) {
  std::ostringstream os;
  if (v < 0)
    os << std::setw(width) << "-";
  else
    os << std::setw(width) << std::fixed << std::setprecision(prec) << v;
  return os.str();
}

// "ok" or the names of the targets the row misses (docs/PERFORMANCE.md).
std::string targets(const RowResult& r, bool train, double ceiling) {
  const double rk = train ? r.rk_train.median_ms : r.rk_fwd.median_ms;
  const double dn = train ? r.dn_train.median_ms : r.dn_fwd.median_ms;
  const double tt = train ? r.torch.train_ms : r.torch.fwd_ms;
  const double flops = r.row.forward_flops() * (train ? 3 : 1);
  std::string miss;
  if (r.row.batch >= 16) {
    if (dn > 0 && rk / dn > 1.0) miss += " <=oneDNN";
    if (gflops(flops, rk) < 0.85 * ceiling) miss += " 85%ceil";
  }
  if (r.row.batch <= 4 && !train && dn > 0 && rk / dn > 0.5) miss += " 2x-oneDNN";
  if (tt > 0 && tt / rk < 3.0) miss += " 3x-torch";
  return miss.empty() ? "ok" : "MISS" + miss;
}

void print_table(std::ostream& out, const std::vector<RowResult>& res, const json& machine,
                 double ceiling, bool have_torch, bool have_memory) {
  out << "machine: " << machine["cpu"].get<std::string>() << ", " << machine["cores"].get<int>()
      << " cores," << machine["isa"].get<std::string>() << "; load "
      << machine["load_before"].get<std::string>() << " (before) / "
      << machine["load_after"].get<std::string>() << " (after)\n";
  out << "rnnkit " << machine["rnnkit"].get<std::string>() << ", "
      << machine["threads"].get<int>() << " threads; oneDNN "
      << machine["onednn"].get<std::string>() << "; PyTorch "
      << machine["torch"].get<std::string>() << " (BLAS: " << machine["torch_blas"].get<std::string>()
      << ")\n";
  out << "sgemm ceiling: " << fmt(ceiling, 1, 0) << " GFLOP/s (dnnl_sgemm " << machine["ceiling_n"].get<int>()
      << "^3, median)\n";
  out << "times are medians; 't/oneDNN' = rnnkit time / oneDNN time; 'x torch' = PyTorch time / "
         "rnnkit time;\nGFLOP/s counts the GEMM work: forward 2*G*H*(I+H)*N*T, forward+backward 3x "
         "that;\nfwd = inference with W_hh (and W_ih where taken) packed beforehand (rnn_pack_weights,\n"
         "rnn_pack_input_weights; as oneDNN's weights are reordered beforehand), fwd* = the same call\n"
         "packing W_hh itself, fwd bf16 = bfloat16-packed W_hh, fwd bf16p = the bfloat16 products\n"
         "(x, h and both weights rounded to bfloat16 in the products; --bf16),\n"
         "train fwd / train bwd = the training step's two calls timed apart (--train-split)\n\n";
  out << std::left << std::setw(22) << "row" << std::setw(9) << "pass" << std::right
      << std::setw(10) << "rnnkit ms" << std::setw(9) << "us/step" << std::setw(9) << "GFLOP/s"
      << std::setw(7) << "%ceil" << std::setw(11) << "oneDNN ms" << std::setw(9) << "GFLOP/s"
      << std::setw(11) << "torch ms" << std::setw(9) << "GFLOP/s" << std::setw(10) << "t/oneDNN"
      << std::setw(9) << "x torch" << "  targets\n";
  for (const RowResult& r : res) {
    for (int train = 0; train < 2; ++train) {
      const Stats& rk = train ? r.rk_train : r.rk_fwd;
      const Stats& dn = train ? r.dn_train : r.dn_fwd;
      const double tt = train ? r.torch.train_ms : r.torch.fwd_ms;
      const double flops = r.row.forward_flops() * (train ? 3 : 1);
      const double g = gflops(flops, rk.median_ms);
      out << std::left << std::setw(22) << (train ? "" : r.row.key()) << std::setw(9)
          << (train ? "fwd+bwd" : "fwd") << std::right << fmt(rk.median_ms, 3, 10)
          << fmt(rk.median_ms * 1e3 / r.row.steps, 2, 9) << fmt(g, 1, 9)
          << fmt(100 * g / ceiling, 0, 6) << "%" << fmt(dn.median_ms, 3, 11)
          << fmt(gflops(flops, dn.median_ms), 1, 9) << fmt(have_torch ? tt : -1, 2, 11)
          << fmt(have_torch ? gflops(flops, tt) : -1, 2, 9)
          << fmt(dn.median_ms > 0 ? rk.median_ms / dn.median_ms : -1, 3, 10)
          << fmt(have_torch && tt > 0 ? tt / rk.median_ms : -1, 1, 9) << "  "
          << targets(r, train, ceiling) << "\n";
      if (train && r.rk_train_fwd.median_ms > 0)
        for (int part = 0; part < 2; ++part) {
          const Stats& rp = part == 0 ? r.rk_train_fwd : r.rk_train_bwd;
          const Stats& dp = part == 0 ? r.dn_train_fwd : r.dn_train_bwd;
          const double pf = r.row.forward_flops() * (part == 0 ? 1 : 2);
          out << std::left << std::setw(22) << "" << std::setw(9) << (part == 0 ? "train fwd" : "train bwd")
              << std::right << fmt(rp.median_ms, 3, 10) << fmt(rp.median_ms * 1e3 / r.row.steps, 2, 9)
              << fmt(gflops(pf, rp.median_ms), 1, 9) << fmt(100 * gflops(pf, rp.median_ms) / ceiling, 0, 6)
              << "%" << fmt(dp.median_ms, 3, 11) << fmt(gflops(pf, dp.median_ms), 1, 9) << std::setw(20) << ""
              << fmt(dp.median_ms > 0 ? rp.median_ms / dp.median_ms : -1, 3, 10) << "\n";
        }
      if (!train && r.rk_fwd_packing.median_ms > 0) {
        const Stats& pk = r.rk_fwd_packing;
        out << std::left << std::setw(22) << "" << std::setw(9) << "fwd*" << std::right
            << fmt(pk.median_ms, 3, 10) << fmt(pk.median_ms * 1e3 / r.row.steps, 2, 9)
            << fmt(gflops(flops, pk.median_ms), 1, 9)
            << fmt(100 * gflops(flops, pk.median_ms) / ceiling, 0, 6) << "%" << std::setw(40) << ""
            << fmt(dn.median_ms > 0 ? pk.median_ms / dn.median_ms : -1, 3, 10) << "\n";
      }
      const std::pair<const char*, std::pair<const Stats*, double>> bf16_rows[] = {
          {"fwd bf16", {&r.rk_fwd_bf16, r.bf16_error}},
          {"fwd bf16p", {&r.rk_fwd_bf16_products, r.bf16_products_error}}};
      for (const auto& [pass, stats_error] : bf16_rows) {
        const Stats& bf = *stats_error.first;
        if (train || bf.median_ms <= 0) continue;
        std::ostringstream err;
        err << std::scientific << std::setprecision(1) << stats_error.second;
        out << std::left << std::setw(22) << "" << std::setw(9) << pass << std::right
            << fmt(bf.median_ms, 3, 10) << fmt(bf.median_ms * 1e3 / r.row.steps, 2, 9)
            << fmt(gflops(flops, bf.median_ms), 1, 9)
            << fmt(100 * gflops(flops, bf.median_ms) / ceiling, 0, 6) << "%" << std::setw(40) << ""
            << fmt(dn.median_ms > 0 ? bf.median_ms / dn.median_ms : -1, 3, 10)
            << "           error vs float32 " << err.str() << "\n";
      }
    }
  }
  out << "\nagreement with oneDNN (max|diff| / max(max|ref|, 1)): ";
  double worst_y = 0, worst_dx = 0;
  for (const RowResult& r : res) {
    worst_y = std::max(worst_y, r.check_y);
    worst_dx = std::max(worst_dx, r.check_dx);
  }
  out << std::scientific << std::setprecision(1) << "y " << worst_y << ", dx " << worst_dx
      << std::defaultfloat << " (worst row)\n";
  if (have_torch) {
    out << "PyTorch settings (torch threads / BLAS threads) that won:";
    for (const RowResult& r : res)
      out << " " << r.row.key() << " [" << r.torch.fwd_setting << "; " << r.torch.train_setting
          << "]";
    out << "\n";
  }
  if (have_memory) {
    out << "\npeak memory of a training step, MB (resident-set growth; weights, x and dy exist "
           "before):\n";
    out << std::left << std::setw(22) << "row" << std::right << std::setw(10) << "rnnkit"
        << std::setw(10) << "(buffers)" << std::setw(10) << "oneDNN" << std::setw(10) << "PyTorch"
        << std::setw(14) << "rnnkit/torch\n";
    for (const RowResult& r : res) {
      const double mb = 1.0 / (1 << 20);
      out << std::left << std::setw(22) << r.row.key() << std::right
          << fmt(r.rk_peak >= 0 ? r.rk_peak * mb : -1, 1, 10)
          << fmt(r.rk_buffers >= 0 ? r.rk_buffers * mb : -1, 1, 10)
          << fmt(r.dn_peak >= 0 ? r.dn_peak * mb : -1, 1, 10)
          << fmt(r.torch.peak_train_bytes >= 0 ? r.torch.peak_train_bytes * mb : -1, 1, 10)
          << fmt(r.torch.peak_train_bytes > 0 && r.rk_peak >= 0
                     ? double(r.rk_peak) / double(r.torch.peak_train_bytes)
                     : -1,
                 2, 13)
          << "\n";
    }
  }
}

json stats_json(const Stats& s) {
  return {{"median_ms", s.median_ms}, {"p10_ms", s.p10_ms}, {"p90_ms", s.p90_ms}, {"reps", s.reps}};
}

}  // namespace

int run_cli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  for (const auto& a : args)
    if (a == "--help" || a == "-h") {
      out << usage();
      return 0;
    }
  const Options o = parse_options(args);
  const std::vector<SuiteRow> rows = select_rows(o);
  if (o.threads > 0) rnnkit::set_num_threads(o.threads);
  const int threads = rnnkit::get_num_threads();
  omp_set_num_threads(threads);  // oneDNN's team

  json machine = {{"cpu", cpu_model()},
                  {"cores", static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN))},
                  {"isa", isa_flags()},
                  {"load_before", load_average()},
                  {"rnnkit", rnnkit::version()},
                  {"threads", threads},
                  {"onednn", onednn_version_line()},
                  {"torch", "not run"},
                  {"torch_blas", "-"}};
  const int64_t ceiling_n = 2048;
  machine["ceiling_n"] = ceiling_n;

  std::vector<RowResult> results(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) results[i].row = rows[i];
  if (o.memory) {
    // First, while the heap is fresh: a block that malloc recycles from an
    // earlier free is already resident and would not show as growth.
    use_mmap_for_large_allocations();
    {
      // Start the thread team and oneDNN's caches outside the measurements.
      const Problem warm(SuiteRow{rows[0].cell, 8, 1, 2});
      RnnkitRnn(warm).train_step();
      OnednnRnn(warm).train_step();
    }
    for (RowResult& r : results) {
      if (o.verbose) err << "bench: memory " << r.row.key() << "\n";
      const Problem p(r.row);
      r.rk_buffers = RnnkitRnn::training_buffer_bytes(p);
      r.rk_peak = RnnkitRnn::peak_training_bytes(p);
      r.dn_peak = OnednnRnn::peak_training_bytes(p);
    }
    keep_freed_memory();
  }
  if (o.verbose) err << "bench: sgemm ceiling\n";
  double ceiling = sgemm_ceiling(o, ceiling_n);
  for (RowResult& r : results) {
    const SuiteRow& row = r.row;
    if (o.verbose) err << "bench: " << row.key() << "\n";
    const Problem p(row);
    RnnkitRnn rk(p);
    OnednnRnn dn(p);
    std::vector<std::function<void()>> fwd_fns = {[&] { rk.forward_inference(true); },
                                                  [&] { dn.forward_inference(); }};
    if (rk.packs_weights()) fwd_fns.push_back([&] { rk.forward_inference(false); });
    const bool bf16 = o.bf16 && rk.packs_bf16();
    const bool bf16_products = o.bf16 && rk.packs_bf16_products();
    if (bf16) fwd_fns.push_back([&] { rk.forward_inference_bf16(); });
    if (bf16_products)
      fwd_fns.push_back([&] { rk.forward_inference_bf16(kernels::cpu::PackedPrecision::kBFloat16Products); });
    const auto fwd = time_alternating(fwd_fns, o);
    r.rk_fwd = fwd[0];
    r.dn_fwd = fwd[1];
    if (rk.packs_weights()) r.rk_fwd_packing = fwd[2];
    if (bf16 || bf16_products) {
      rk.forward_inference(true);
      const std::vector<float> y32 = rk.y();
      size_t next = rk.packs_weights() ? 3 : 2;
      if (bf16) {
        r.rk_fwd_bf16 = fwd[next++];
        rk.forward_inference_bf16();
        r.bf16_error = rel_diff(rk.y(), y32);
      }
      if (bf16_products) {
        r.rk_fwd_bf16_products = fwd[next++];
        rk.forward_inference_bf16(kernels::cpu::PackedPrecision::kBFloat16Products);
        r.bf16_products_error = rel_diff(rk.y(), y32);
      }
      rk.forward_inference(true);
    }
    r.check_y = rel_diff(rk.y(), dn.y());
    const auto train = time_alternating({[&] { rk.train_step(); }, [&] { dn.train_step(); }}, o);
    r.rk_train = train[0];
    r.dn_train = train[1];
    if (o.train_split) {
      // In this order each backward follows its own library's forward.
      const auto parts = time_alternating({[&] { rk.train_forward(); }, [&] { rk.train_backward(); },
                                           [&] { dn.train_forward(); }, [&] { dn.train_backward(); }},
                                          o);
      r.rk_train_fwd = parts[0];
      r.rk_train_bwd = parts[1];
      r.dn_train_fwd = parts[2];
      r.dn_train_bwd = parts[3];
    }
    r.check_dx = rel_diff(rk.dx(), dn.dx());
  }
  ceiling = std::max(ceiling, sgemm_ceiling(o, ceiling_n));


  bool have_torch = false;
  if (o.torch) {
    if (o.verbose) err << "bench: PyTorch\n";
    const TorchResult tr = run_torch(rows, o.torch_opt);
    if (tr.ok) {
      have_torch = true;
      machine["torch"] = tr.version;
      machine["torch_blas"] = tr.blas;
      for (size_t i = 0; i < results.size(); ++i) results[i].torch = tr.rows[i];
    } else {
      machine["torch"] = "failed: " + tr.error;
      err << "bench: PyTorch not measured: " << tr.error << "\n";
    }
  }
  machine["load_after"] = load_average();
  machine["ceiling_gflops"] = ceiling;

  if (o.json) {
    json j = {{"machine", machine}, {"rows", json::array()}};
    for (const RowResult& r : results) {
      json jr = {{"row", r.row.key()},
                 {"cell", r.row.cell},
                 {"hidden", r.row.hidden},
                 {"batch", r.row.batch},
                 {"steps", r.row.steps},
                 {"forward_flops", r.row.forward_flops()},
                 {"rnnkit", {{"fwd", stats_json(r.rk_fwd)}, {"train", stats_json(r.rk_train)},
                             {"fwd_packing_in_call", stats_json(r.rk_fwd_packing)},
                             {"fwd_bf16", stats_json(r.rk_fwd_bf16)},
                             {"fwd_bf16_error", r.bf16_error},
                             {"fwd_bf16_products", stats_json(r.rk_fwd_bf16_products)},
                             {"fwd_bf16_products_error", r.bf16_products_error},
                             {"train_fwd", stats_json(r.rk_train_fwd)}, {"train_bwd", stats_json(r.rk_train_bwd)},
                             {"peak_train_bytes", r.rk_peak}, {"train_buffer_bytes", r.rk_buffers}}},
                 {"onednn", {{"fwd", stats_json(r.dn_fwd)}, {"train", stats_json(r.dn_train)},
                             {"train_fwd", stats_json(r.dn_train_fwd)}, {"train_bwd", stats_json(r.dn_train_bwd)},
                             {"peak_train_bytes", r.dn_peak}}},
                 {"agreement", {{"y", r.check_y}, {"dx", r.check_dx}}},
                 {"targets", {{"fwd", targets(r, false, ceiling)}, {"train", targets(r, true, ceiling)}}}};
      if (have_torch)
        jr["torch"] = {{"fwd_ms", r.torch.fwd_ms},       {"train_ms", r.torch.train_ms},
                       {"fwd_setting", r.torch.fwd_setting}, {"train_setting", r.torch.train_setting},
                       {"fwd_reps", r.torch.fwd_reps},   {"train_reps", r.torch.train_reps},
                       {"peak_train_bytes", r.torch.peak_train_bytes}};
      j["rows"].push_back(jr);
    }
    out << j.dump(2) << "\n";
  } else {
    print_table(out, results, machine, ceiling, have_torch, o.memory);
  }
  return 0;
}

}  // namespace rnnkit::bench
