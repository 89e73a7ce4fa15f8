#include "onednn_rnn.h"

#include <algorithm>
#include <cstring>
#include <dnnl.hpp>
#include <sstream>
#include <unordered_map>

#include "rnnkit/error.h"

namespace rnnkit::bench {

namespace {

using dnnl::algorithm;
using dnnl::memory;
using dnnl::prop_kind;
using dnnl::rnn_direction;
using tag = memory::format_tag;
using dt = memory::data_type;

enum class Kind { Vanilla, Lstm, LbrGru };

memory::desc md(const memory::dims& dims, tag t) { return memory::desc(dims, dt::f32, t); }

// PyTorch's gate index for each of oneDNN's gates: oneDNN's GRU is (u, r, o) =
// PyTorch's (z, r, n); LSTM (i, f, c, o) and the Elman cell agree.
int torch_gate(Kind kind, int g) {
  if (kind == Kind::LbrGru && g < 2) return 1 - g;
  return g;
}

std::string isa_name(dnnl::cpu_isa isa) {
  switch (isa) {
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    case dnnl::cpu_isa::avx2: return "avx2";
    default: return "isa " + std::to_string(static_cast<int>(isa));
  }
}

}  // namespace

std::string onednn_version_line() {
  const dnnl_version_t* v = dnnl_version();
  std::ostringstream os;
  os << v->major << "." << v->minor << "." << v->patch << " ("
     << (v->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP" : "non-OpenMP") << " runtime, "
     << isa_name(dnnl::get_effective_cpu_isa()) << ")";
  return os.str();
}

struct OnednnRnn::Impl {
  const Problem& p;
  Kind kind;
  int64_t T, N, H, G, Gb;  // Gb: bias gates (lbr_gru has 4)
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};

  // User-layout data.
  memory src_layer, dst_layer_inf, dst_iter_inf, dst_iter_c_inf;
  memory w_layer_user, w_iter_user, bias;
  // Inference.
  dnnl::primitive fwd_inf;
  memory w_layer_inf, w_iter_inf;
  // Training.
  dnnl::primitive fwd_train, bwd;
  memory w_layer_train, w_iter_train, w_layer_bwd, w_iter_bwd, workspace;
  memory dst_layer, dst_iter, dst_iter_c;
  memory diff_src_layer, diff_w_layer, diff_w_iter, diff_bias, diff_dst_layer, diff_dst_iter,
      diff_dst_iter_c;

  explicit Impl(const Problem& prob, bool build_inference = true);

  memory::dims layer_dims() const { return {T, N, H}; }
  memory::dims iter_dims() const { return {1, 1, N, H}; }
  memory::dims weights_dims() const { return {1, 1, H, G, H}; }
  memory::dims bias_dims() const { return {1, 1, Gb, H}; }

  memory reorder_to(const memory& from, const memory::desc& want) {
    if (from.get_desc() == want) return from;
    memory to(want, eng);
    dnnl::reorder(from, to).execute(strm, const_cast<memory&>(from), to);
    strm.wait();
    return to;
  }

  // Forward primitive descriptor for prop (inference or training).
  dnnl::rnn_primitive_desc_base forward_pd(prop_kind prop) const {
    const memory::desc src = md(layer_dims(), tag::tnc), dst = md(layer_dims(), tag::tnc);
    const memory::desc iter = md(iter_dims(), tag::ldnc), none;
    const memory::desc wl = md(weights_dims(), tag::any), wi = md(weights_dims(), tag::any);
    const memory::desc b = md(bias_dims(), tag::ldgo);
    const auto dir = rnn_direction::unidirectional_left2right;
    switch (kind) {
      case Kind::Vanilla: {
        const algorithm act =
            p.row.cell == "rnn_relu" ? algorithm::eltwise_relu : algorithm::eltwise_tanh;
        dnnl::vanilla_rnn_forward::desc d(prop, act, dir, src, none, wl, wi, b, dst, iter);
        return dnnl::vanilla_rnn_forward::primitive_desc(d, eng);
      }
      case Kind::Lstm: {
        dnnl::lstm_forward::desc d(prop, dir, src, none, none, wl, wi, b, dst, iter, iter);
        return dnnl::lstm_forward::primitive_desc(d, eng);
      }
      case Kind::LbrGru: {
        dnnl::lbr_gru_forward::desc d(prop, dir, src, none, wl, wi, b, dst, iter);
        return dnnl::lbr_gru_forward::primitive_desc(d, eng);
      }
    }
    return {};
  }

  dnnl::rnn_primitive_desc_base backward_pd(const dnnl::rnn_primitive_desc_base& fwd) const {
    const memory::desc src = md(layer_dims(), tag::tnc), dst = md(layer_dims(), tag::tnc);
    const memory::desc iter = md(iter_dims(), tag::ldnc), none;
    const memory::desc wl = md(weights_dims(), tag::any), wi = md(weights_dims(), tag::any);
    const memory::desc b = md(bias_dims(), tag::ldgo);
    const auto dir = rnn_direction::unidirectional_left2right;
    const auto bwd_prop = prop_kind::backward;
    switch (kind) {
      case Kind::Vanilla: {
        const algorithm act =
            p.row.cell == "rnn_relu" ? algorithm::eltwise_relu : algorithm::eltwise_tanh;
        dnnl::vanilla_rnn_backward::desc d(bwd_prop, act, dir, src, none, wl, wi, b, dst, iter, src,
                                           none, wl, wi, b, dst, iter);
        return dnnl::vanilla_rnn_backward::primitive_desc(
            d, eng, dnnl::vanilla_rnn_forward::primitive_desc(fwd.get()));
      }
      case Kind::Lstm: {
        dnnl::lstm_backward::desc d(bwd_prop, dir, src, none, none, wl, wi, b, dst, iter, iter, src,
                                    none, none, wl, wi, b, dst, iter, iter);
        return dnnl::lstm_backward::primitive_desc(d, eng,
                                                   dnnl::lstm_forward::primitive_desc(fwd.get()));
      }
      case Kind::LbrGru: {
        dnnl::lbr_gru_backward::desc d(bwd_prop, dir, src, none, wl, wi, b, dst, iter, src, none, wl,
                                       wi, b, dst, iter);
        return dnnl::lbr_gru_backward::primitive_desc(
            d, eng, dnnl::lbr_gru_forward::primitive_desc(fwd.get()));
      }
    }
    return {};
  }

  void build_training();
  void forward_inference();
  void train_forward();
  void train_backward();
};

OnednnRnn::Impl::Impl(const Problem& prob, bool build_inference) : p(prob) {
  const std::string& c = p.row.cell;
  kind = c == "lstm" ? Kind::Lstm : c == "gru" ? Kind::LbrGru : Kind::Vanilla;
  T = p.row.steps, N = p.row.batch, H = p.row.hidden, G = p.G;
  Gb = kind == Kind::LbrGru ? 4 : G;

  // Weights [G*H, H] (PyTorch) -> ldigo [1, 1, H_in, G, H_out].
  w_layer_user = memory(md(weights_dims(), tag::ldigo), eng);
  w_iter_user = memory(md(weights_dims(), tag::ldigo), eng);
  bias = memory(md(bias_dims(), tag::ldgo), eng);
  float* wl = static_cast<float*>(w_layer_user.get_data_handle());
  float* wi = static_cast<float*>(w_iter_user.get_data_handle());
  float* b = static_cast<float*>(bias.get_data_handle());
  for (int64_t i = 0; i < H; ++i)
    for (int64_t g = 0; g < G; ++g)
      for (int64_t o = 0; o < H; ++o) {
        const int64_t src_row = torch_gate(kind, static_cast<int>(g)) * H + o;
        wl[(i * G + g) * H + o] = p.w_ih[src_row * H + i];
        wi[(i * G + g) * H + o] = p.w_hh[src_row * H + i];
      }
  for (int64_t g = 0; g < G; ++g)
    for (int64_t o = 0; o < H; ++o) {
      const int64_t r = torch_gate(kind, static_cast<int>(g)) * H + o;
      // lbr_gru: gate 2 is the input-side candidate bias, gate 3 the recurrent one.
      b[g * H + o] = (kind == Kind::LbrGru && g == 2) ? p.b_ih[r] : p.b_ih[r] + p.b_hh[r];
    }
  if (kind == Kind::LbrGru)
    for (int64_t o = 0; o < H; ++o) b[3 * H + o] = p.b_hh[2 * H + o];

  src_layer = memory(md(layer_dims(), tag::tnc), eng);
  std::memcpy(src_layer.get_data_handle(), p.x.data(), p.x.size() * sizeof(float));

  if (build_inference) {
    const auto pd = forward_pd(prop_kind::forward_inference);
    fwd_inf = dnnl::primitive(pd);
    w_layer_inf = reorder_to(w_layer_user, pd.weights_layer_desc());
    w_iter_inf = reorder_to(w_iter_user, pd.weights_iter_desc());
    dst_layer_inf = memory(pd.dst_layer_desc(), eng);
    dst_iter_inf = memory(pd.dst_iter_desc(), eng);
    if (kind == Kind::Lstm) dst_iter_c_inf = memory(pd.dst_iter_c_desc(), eng);
  }
}

void OnednnRnn::Impl::build_training() {
  const auto fpd = forward_pd(prop_kind::forward_training);
  const auto bpd = backward_pd(fpd);
  fwd_train = dnnl::primitive(fpd);
  bwd = dnnl::primitive(bpd);
  w_layer_train = reorder_to(w_layer_user, fpd.weights_layer_desc());
  w_iter_train = reorder_to(w_iter_user, fpd.weights_iter_desc());
  w_layer_bwd = reorder_to(w_layer_user, bpd.weights_layer_desc());
  w_iter_bwd = reorder_to(w_iter_user, bpd.weights_iter_desc());
  workspace = memory(fpd.workspace_desc(), eng);
  dst_layer = memory(fpd.dst_layer_desc(), eng);
  dst_iter = memory(fpd.dst_iter_desc(), eng);
  if (kind == Kind::Lstm) dst_iter_c = memory(fpd.dst_iter_c_desc(), eng);
  diff_src_layer = memory(bpd.diff_src_layer_desc(), eng);
  diff_w_layer = memory(bpd.diff_weights_layer_desc(), eng);
  diff_w_iter = memory(bpd.diff_weights_iter_desc(), eng);
  diff_bias = memory(bpd.diff_bias_desc(), eng);
  diff_dst_layer = memory(bpd.diff_dst_layer_desc(), eng);
  diff_dst_iter = memory(bpd.diff_dst_iter_desc(), eng);
  if (kind == Kind::Lstm) diff_dst_iter_c = memory(bpd.diff_dst_iter_c_desc(), eng);
  // Gradients start at zero (oneDNN accumulates into them, as rnnkit does); no
  // gradient arrives through h_n/c_n.
  for (memory* m : {&diff_w_layer, &diff_w_iter, &diff_bias, &diff_dst_iter, &diff_dst_iter_c})
    if (*m) std::memset(m->get_data_handle(), 0, m->get_desc().get_size());
  const memory dy_user(md(layer_dims(), tag::tnc), eng, const_cast<float*>(p.dy.data()));
  diff_dst_layer = reorder_to(dy_user, bpd.diff_dst_layer_desc());
}

OnednnRnn::OnednnRnn(const Problem& p) : impl_(std::make_unique<Impl>(p)) { impl_->build_training(); }

OnednnRnn::~OnednnRnn() = default;

void OnednnRnn::forward_inference() { impl_->forward_inference(); }

void OnednnRnn::train_step() {
  impl_->train_forward();
  impl_->train_backward();
}

void OnednnRnn::train_forward() { impl_->train_forward(); }

void OnednnRnn::train_backward() { impl_->train_backward(); }

void OnednnRnn::Impl::forward_inference() {
  Impl& m = *this;
  std::unordered_map<int, memory> args = {{DNNL_ARG_SRC_LAYER, m.src_layer},
                                          {DNNL_ARG_WEIGHTS_LAYER, m.w_layer_inf},
                                          {DNNL_ARG_WEIGHTS_ITER, m.w_iter_inf},
                                          {DNNL_ARG_BIAS, m.bias},
                                          {DNNL_ARG_DST_LAYER, m.dst_layer_inf},
                                          {DNNL_ARG_DST_ITER, m.dst_iter_inf}};
  if (m.kind == Kind::Lstm) args[DNNL_ARG_DST_ITER_C] = m.dst_iter_c_inf;
  m.fwd_inf.execute(m.strm, args);
  m.strm.wait();
}

void OnednnRnn::Impl::train_forward() {
  Impl& m = *this;
  std::unordered_map<int, memory> fa = {{DNNL_ARG_SRC_LAYER, m.src_layer},
                                        {DNNL_ARG_WEIGHTS_LAYER, m.w_layer_train},
                                        {DNNL_ARG_WEIGHTS_ITER, m.w_iter_train},
                                        {DNNL_ARG_BIAS, m.bias},
                                        {DNNL_ARG_DST_LAYER, m.dst_layer},
                                        {DNNL_ARG_DST_ITER, m.dst_iter},
                                        {DNNL_ARG_WORKSPACE, m.workspace}};
  if (m.kind == Kind::Lstm) fa[DNNL_ARG_DST_ITER_C] = m.dst_iter_c;
  m.fwd_train.execute(m.strm, fa);
  m.strm.wait();
}

void OnednnRnn::Impl::train_backward() {
  Impl& m = *this;
  std::unordered_map<int, memory> ba = {{DNNL_ARG_SRC_LAYER, m.src_layer},
                                        {DNNL_ARG_WEIGHTS_LAYER, m.w_layer_bwd},
                                        {DNNL_ARG_WEIGHTS_ITER, m.w_iter_bwd},
                                        {DNNL_ARG_BIAS, m.bias},
                                        {DNNL_ARG_DST_LAYER, m.dst_layer},
                                        {DNNL_ARG_DST_ITER, m.dst_iter},
                                        {DNNL_ARG_WORKSPACE, m.workspace},
                                        {DNNL_ARG_DIFF_SRC_LAYER, m.diff_src_layer},
                                        {DNNL_ARG_DIFF_WEIGHTS_LAYER, m.diff_w_layer},
                                        {DNNL_ARG_DIFF_WEIGHTS_ITER, m.diff_w_iter},
                                        {DNNL_ARG_DIFF_BIAS, m.diff_bias},
                                        {DNNL_ARG_DIFF_DST_LAYER, m.diff_dst_layer},
                                        {DNNL_ARG_DIFF_DST_ITER, m.diff_dst_iter}};
  if (m.kind == Kind::Lstm) {
    ba[DNNL_ARG_DST_ITER_C] = m.dst_iter_c;
    ba[DNNL_ARG_DIFF_DST_ITER_C] = m.diff_dst_iter_c;
  }
  m.bwd.execute(m.strm, ba);
  m.strm.wait();
}

std::vector<float> OnednnRnn::y() const {
  const float* d = static_cast<const float*>(impl_->dst_layer_inf.get_data_handle());
  return std::vector<float>(d, d + impl_->p.dy.size());
}

std::vector<float> OnednnRnn::dx() const {
  const float* d = static_cast<const float*>(impl_->diff_src_layer.get_data_handle());
  return std::vector<float>(d, d + impl_->p.x.size());
}

int64_t OnednnRnn::peak_training_bytes(const Problem& p) {
  // Weights in PyTorch's layout and x exist before; the primitives, their
  // weight copies, workspace, outputs and gradients are the step's.
  auto m = std::make_unique<Impl>(p, false);
  return peak_rss_growth([&] {
    m->build_training();
    m->train_forward();
    m->train_backward();
  });
}

}  // namespace rnnkit::bench
