// A word-level language model as in the classic PyTorch example:
// Embedding -> 2-layer LSTM with dropout -> Linear, trained with Adam,
// clip_grad_norm_ and StepLR with truncated backpropagation through time, on a
// synthetic stream whose next token follows a rule (so the loss visibly falls).
// Saves the weights (safetensors, loadable by PyTorch) and a full training
// checkpoint, then resumes from it.
//
//   ./language_model [steps] [checkpoint_dir]
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

#include "rnnkit/io/checkpoint.h"
#include "rnnkit/nn/dropout.h"
#include "rnnkit/nn/embedding.h"
#include "rnnkit/nn/linear.h"
#include "rnnkit/nn/loss.h"
#include "rnnkit/nn/rnn.h"
#include "rnnkit/rnnkit.h"

using namespace rnnkit;

class RNNModelImpl : public nn::Module {
 public:
  RNNModelImpl(int64_t ntoken, int64_t ninp, int64_t nhid, int64_t nlayers, double dropout)
      : Module("RNNModel") {
    drop = register_module("drop", nn::Dropout(dropout));
    encoder = register_module("encoder", nn::Embedding(ntoken, ninp));
    rnn = register_module("rnn", nn::LSTM(nn::LSTMOptions(ninp, nhid).num_layers(nlayers).dropout(dropout)));
    decoder = register_module("decoder", nn::Linear(nhid, ntoken));
  }
  // x [T, N] token ids -> logits [T*N, ntoken]; hidden is carried between calls.
  Tensor forward(const Tensor& x, nn::LSTMState* hidden) {
    Tensor emb = drop->forward(encoder->forward(x));
    auto [output, h_n, c_n] = rnn->forward(emb, *hidden);
    *hidden = {h_n.detach(), c_n.detach()};  // truncated BPTT
    Tensor out = drop->forward(output);
    return decoder->forward(out.reshape({-1, out.size(2)}));
  }
  nn::Dropout drop{nullptr};
  nn::Embedding encoder{nullptr};
  nn::LSTM rnn{nullptr};
  nn::Linear decoder{nullptr};
};
RNNKIT_MODULE(RNNModel);

// [bptt + 1, batch] windows of a stream where next = (5 * prev + 1) mod ntoken.
Tensor next_batch(Generator& gen, int64_t ntoken, int64_t bptt, int64_t batch) {
  Tensor data = empty({bptt + 1, batch}, kInt64);
  int64_t* d = data.data_ptr<int64_t>();
  for (int64_t b = 0; b < batch; ++b) {
    int64_t tok = static_cast<int64_t>(gen.next_below(ntoken));
    for (int64_t t = 0; t <= bptt; ++t, tok = (5 * tok + 1) % ntoken) d[t * batch + b] = tok;
  }
  return data;
}

int main(int argc, char** argv) {
  const int64_t steps = argc > 1 ? std::atoll(argv[1]) : 200;
  const std::string dir = argc > 2 ? argv[2] : "lm_checkpoints";
  const int64_t ntoken = 32, bptt = 12, batch = 16;
  manual_seed(7);
  RNNModel model(ntoken, 32, 64, 2, 0.2);
  std::cout << model << "\n";
  optim::Adam opt(model->parameters(), optim::AdamOptions(5e-3));
  optim::StepLR sched(opt, /*step_size=*/100, /*gamma=*/0.5);
  nn::CrossEntropyLoss criterion;
  Generator data_gen(11);
  nn::LSTMState hidden;
  for (int64_t step = 1; step <= steps; ++step) {
    Tensor data = next_batch(data_gen, ntoken, bptt, batch);
    opt.zero_grad();
    Tensor logits = model->forward(data.narrow(0, 0, bptt), &hidden);
    Tensor loss = criterion->forward(logits, data.narrow(0, 1, bptt).reshape({-1}));
    loss.backward();
    nn::utils::clip_grad_norm_(model->parameters(), 0.25);
    opt.step();
    sched.step();
    if (step % 25 == 0 || step == 1)
      std::printf("step %4lld  loss %.4f  lr %.5f\n", static_cast<long long>(step), loss.item(),
                  sched.get_last_lr()[0]);
  }
  std::system(("mkdir -p " + dir).c_str());
  // Weights only: a state_dict PyTorch can load (tools/pt2safetensors.py converts to .pt).
  rnnkit::save(model->state_dict(), dir + "/model.safetensors");
  // Everything needed to continue exactly where we stopped.
  io::TrainingCheckpoint ckpt;
  ckpt.model = model->state_dict();
  ckpt.optimizer = opt.state_dict();
  ckpt.scheduler = sched.state_dict();
  ckpt.step = steps;
  ckpt.rng = data_gen.state();
  io::save_checkpoint(ckpt, dir + "/checkpoint.safetensors");

  // Resume into fresh objects.
  RNNModel resumed(ntoken, 32, 64, 2, 0.2);
  optim::Adam opt2(resumed->parameters(), optim::AdamOptions(5e-3));
  optim::StepLR sched2(opt2, 100, 0.5);
  io::TrainingCheckpoint loaded = io::load_checkpoint(dir + "/checkpoint.safetensors");
  resumed->load_state_dict(loaded.model);
  opt2.load_state_dict(loaded.optimizer);
  sched2.load_state_dict(loaded.scheduler);
  std::printf("resumed at step %lld with lr %.5f from %s/checkpoint.safetensors\n",
              static_cast<long long>(loaded.step), sched2.get_last_lr()[0], dir.c_str());
  return 0;
}
