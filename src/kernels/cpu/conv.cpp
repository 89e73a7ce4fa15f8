#include "kernels/cpu/conv.h"

#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "kernels/cpu/onednn.h"
#include "rnnkit/threading.h"

namespace rnnkit::kernels::cpu {

namespace {

using dnnl::memory;
using onednn::cpu_engine;
using onednn::thread_buffer;
using onednn::thread_stream;

// One tensor's move between its plain layout (the caller's) and the layout a
// primitive chose: a cached reorder, or none when the two agree.
struct Move {
  memory::desc plain, chosen;
  bool needed = false;
  dnnl::reorder reorder;    // when needed
  memory::desc scratchpad;  // the reorder's
};

Move make_move(const memory::desc& plain, const memory::desc& chosen, bool to_chosen) {
  Move m;
  m.plain = plain;
  m.chosen = chosen;
  m.needed = plain != chosen;
  if (m.needed) {
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const memory::desc& from = to_chosen ? plain : chosen;
    const memory::desc& to = to_chosen ? chosen : plain;
    const dnnl::reorder::primitive_desc pd(cpu_engine(), from, cpu_engine(), to, attr);
    m.reorder = dnnl::reorder(pd);
    m.scratchpad = pd.scratchpad_desc();
  }
  return m;
}

void execute(const dnnl::primitive& p, const memory::desc& scratchpad, std::unordered_map<int, memory> args) {
  const size_t bytes = scratchpad.get_size();
  args.emplace(DNNL_ARG_SCRATCHPAD,
               memory(scratchpad, cpu_engine(), bytes > 0 ? thread_buffer(onednn::kScratchpadBuffer, bytes) : nullptr));
  p.execute(thread_stream(), args);
}

// The memory the primitive reads for a plain input: the caller's, or its copy
// in the chosen layout (in the calling thread's buffer `slot`).
memory input_memory(const Move& m, const float* data, int slot) {
  memory plain(m.plain, cpu_engine(), const_cast<float*>(data));
  if (!m.needed) return plain;
  memory chosen(m.chosen, cpu_engine(), thread_buffer(slot, m.chosen.get_size()));
  execute(m.reorder, m.scratchpad, {{DNNL_ARG_FROM, plain}, {DNNL_ARG_TO, chosen}});
  return chosen;
}

// The memory the primitive writes for a plain output, and, once it has, the
// copy back into the caller's layout (finish_output).
memory output_memory(const Move& m, float* data, int slot) {
  if (!m.needed) return memory(m.plain, cpu_engine(), data);
  return memory(m.chosen, cpu_engine(), thread_buffer(slot, m.chosen.get_size()));
}
void finish_output(const Move& m, const memory& written, float* data) {
  if (!m.needed) return;
  memory plain(m.plain, cpu_engine(), data);
  execute(m.reorder, m.scratchpad, {{DNNL_ARG_FROM, written}, {DNNL_ARG_TO, plain}});
}

// The primitives of one shape (and thread count: oneDNN splits the work when it
// makes them), made together: the backward ones take the forward's as a hint.
struct ConvEntry {
  bool ok = false;
  dnnl::convolution_forward forward;
  dnnl::convolution_backward_data backward_data;
  dnnl::convolution_backward_weights backward_weights;
  memory::desc forward_scratch, data_scratch, weights_scratch;
  // forward: x in, w in, y out
  Move fwd_src, fwd_weights, fwd_dst;
  // backward data: dy in, w in, dx out
  Move bwd_dst, bwd_weights, bwd_src;
  // backward weights: x in, dy in, dw out
  Move bww_src, bww_dst, bww_weights;
};

using ConvKey = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                           bool, int>;

std::unique_ptr<ConvEntry> make_entry(const Conv1dDims& d) {
  const bool bias = d.has_bias;
  using tag = memory::format_tag;
  const auto f32 = memory::data_type::f32;
  auto entry = std::make_unique<ConvEntry>();
  const memory::dims src{d.N, d.C, d.L}, dst{d.N, d.O, d.Lout}, b{d.O};
  const memory::dims wei = d.groups > 1 ? memory::dims{d.groups, d.O / d.groups, d.C / d.groups, d.K}
                                        : memory::dims{d.O, d.C, d.K};
  const memory::desc src_plain(src, f32, tag::ncw), dst_plain(dst, f32, tag::ncw), bias_plain(b, f32, tag::a);
  const memory::desc wei_plain(wei, f32, d.groups > 1 ? tag::goiw : tag::oiw);
  const memory::desc src_any(src, f32, tag::any), dst_any(dst, f32, tag::any), wei_any(wei, f32, tag::any);
  const memory::dims strides{d.stride}, dilates{d.dilation - 1}, pad_l{d.pad_left}, pad_r{d.pad_right};
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  try {
    const auto fd = bias ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training,
                                                           dnnl::algorithm::convolution_direct, src_any, wei_any,
                                                           bias_plain, dst_any, strides, dilates, pad_l, pad_r)
                         : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training,
                                                           dnnl::algorithm::convolution_direct, src_any, wei_any,
                                                           dst_any, strides, dilates, pad_l, pad_r);
    const dnnl::convolution_forward::primitive_desc fpd(fd, attr, cpu_engine());
    const dnnl::convolution_backward_data::primitive_desc dpd(
        dnnl::convolution_backward_data::desc(dnnl::algorithm::convolution_direct, src_any, wei_any, dst_any, strides,
                                              dilates, pad_l, pad_r),
        attr, cpu_engine(), fpd);
    const auto wd = bias ? dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct, src_any,
                                                                    wei_any, bias_plain, dst_any, strides, dilates,
                                                                    pad_l, pad_r)
                         : dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct, src_any,
                                                                    wei_any, dst_any, strides, dilates, pad_l, pad_r);
    const dnnl::convolution_backward_weights::primitive_desc wpd(wd, attr, cpu_engine(), fpd);
    entry->forward = dnnl::convolution_forward(fpd);
    entry->backward_data = dnnl::convolution_backward_data(dpd);
    entry->backward_weights = dnnl::convolution_backward_weights(wpd);
    entry->forward_scratch = fpd.scratchpad_desc();
    entry->data_scratch = dpd.scratchpad_desc();
    entry->weights_scratch = wpd.scratchpad_desc();
    entry->fwd_src = make_move(src_plain, fpd.src_desc(), true);
    entry->fwd_weights = make_move(wei_plain, fpd.weights_desc(), true);
    entry->fwd_dst = make_move(dst_plain, fpd.dst_desc(), false);
    entry->bwd_dst = make_move(dst_plain, dpd.diff_dst_desc(), true);
    entry->bwd_weights = make_move(wei_plain, dpd.weights_desc(), true);
    entry->bwd_src = make_move(src_plain, dpd.diff_src_desc(), false);
    entry->bww_src = make_move(src_plain, wpd.src_desc(), true);
    entry->bww_dst = make_move(dst_plain, wpd.diff_dst_desc(), true);
    entry->bww_weights = make_move(wei_plain, wpd.diff_weights_desc(), false);
    entry->ok = true;
  } catch (const dnnl::error&) {
    entry->ok = false;  // cached as such: the caller's own path takes these dims
  }
  return entry;
}

const ConvEntry* conv_entry(const Conv1dDims& d) {
  static std::mutex mutex;
  static std::map<ConvKey, std::unique_ptr<ConvEntry>> cache;
  const ConvKey key{d.N, d.C, d.L, d.O, d.K, d.groups, d.stride, d.dilation, d.pad_left, d.pad_right, d.has_bias,
                    rnnkit::get_num_threads()};
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = cache[key];
  if (slot == nullptr) {
    onednn::use_rnnkit_threads();
    slot = make_entry(d);
  }
  return slot->ok ? slot.get() : nullptr;
}

// One plain operand of a primitive: its argument, its move between layouts,
// the caller's data and the thread buffer for its copy in the chosen layout.
struct Operand {
  int arg;
  const Move* move;
  const float* data;  // written for the output
  int slot;
};

// Runs p on two inputs and one output (each moved through the layout p
// chose), with an [O] bias-shaped operand passed as is under bias_arg when
// bias is given (read for the forward, written for the weights' backward), and
// waits for it.
void run(const dnnl::primitive& p, const memory::desc& scratchpad, const Operand& in0, const Operand& in1,
         const Operand& out, int bias_arg, const float* bias, int64_t O) {
  onednn::use_rnnkit_threads();
  float* out_data = const_cast<float*>(out.data);
  const memory dst = output_memory(*out.move, out_data, out.slot);
  std::unordered_map<int, memory> args{{in0.arg, input_memory(*in0.move, in0.data, in0.slot)},
                                       {in1.arg, input_memory(*in1.move, in1.data, in1.slot)},
                                       {out.arg, dst}};
  if (bias != nullptr)
    args.emplace(bias_arg, memory(memory::desc({O}, memory::data_type::f32, memory::format_tag::a), cpu_engine(),
                                  const_cast<float*>(bias)));
  execute(p, scratchpad, std::move(args));
  finish_output(*out.move, dst, out_data);
  thread_stream().wait();
}

}  // namespace

bool conv1d_forward(const Conv1dDims& d, const float* x, const float* w, const float* b, float* y) {
  if (d.has_bias != (b != nullptr)) return false;
  const ConvEntry* e = conv_entry(d);
  if (e == nullptr) return false;
  run(e->forward, e->forward_scratch, {DNNL_ARG_SRC, &e->fwd_src, x, onednn::kConvSourceBuffer},
      {DNNL_ARG_WEIGHTS, &e->fwd_weights, w, onednn::kConvWeightsBuffer},
      {DNNL_ARG_DST, &e->fwd_dst, y, onednn::kConvDestBuffer}, DNNL_ARG_BIAS, b, d.O);
  return true;
}

bool conv1d_backward_data(const Conv1dDims& d, const float* dy, const float* w, float* dx) {
  const ConvEntry* e = conv_entry(d);
  if (e == nullptr) return false;
  run(e->backward_data, e->data_scratch, {DNNL_ARG_DIFF_DST, &e->bwd_dst, dy, onednn::kConvDestBuffer},
      {DNNL_ARG_WEIGHTS, &e->bwd_weights, w, onednn::kConvWeightsBuffer},
      {DNNL_ARG_DIFF_SRC, &e->bwd_src, dx, onednn::kConvSourceBuffer}, 0, nullptr, d.O);
  return true;
}

bool conv1d_backward_weights(const Conv1dDims& d, const float* dy, const float* x, float* dw, float* db) {
  const ConvEntry* e = conv_entry(d);
  if (e == nullptr) return false;
  std::vector<float> unwanted_db;  // the primitive writes db whenever the layer has a bias
  if (d.has_bias && db == nullptr) {
    unwanted_db.resize(static_cast<size_t>(d.O));
    db = unwanted_db.data();
  }
  run(e->backward_weights, e->weights_scratch, {DNNL_ARG_SRC, &e->bww_src, x, onednn::kConvSourceBuffer},
      {DNNL_ARG_DIFF_DST, &e->bww_dst, dy, onednn::kConvDestBuffer},
      {DNNL_ARG_DIFF_WEIGHTS, &e->bww_weights, dw, onednn::kConvWeightsBuffer}, DNNL_ARG_DIFF_BIAS,
      d.has_bias ? db : nullptr, d.O);
  return true;
}

}  // namespace rnnkit::kernels::cpu
