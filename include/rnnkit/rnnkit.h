#pragma once
// Umbrella header: everything a user of rnnkit needs.
#include "rnnkit/autograd/node.h"
#include "rnnkit/dtype.h"
#include "rnnkit/error.h"
#include "rnnkit/generator.h"
#include "rnnkit/ops.h"
#include "rnnkit/tensor.h"
#include "rnnkit/version.h"
#include "rnnkit/nn/module.h"
#include "rnnkit/state_dict.h"
#include "rnnkit/io/safetensors.h"
