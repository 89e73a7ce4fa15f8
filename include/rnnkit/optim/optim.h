#pragma once
// Umbrella header of rnnkit::optim: optimizers, LR schedulers, and (for the
// usual training loop) gradient clipping from rnnkit::nn::utils.
#include "rnnkit/nn/utils/clip_grad.h"
#include "rnnkit/optim/adagrad.h"
#include "rnnkit/optim/adam.h"
#include "rnnkit/optim/adamw.h"
#include "rnnkit/optim/lr_scheduler.h"
#include "rnnkit/optim/optimizer.h"
#include "rnnkit/optim/rmsprop.h"
#include "rnnkit/optim/sgd.h"
