// Module header: the core of the library (errors, dtypes, devices, tensors, checks, backends, DLPack).
#pragma once

#include "ssm/core/backend.hpp"
#include "ssm/core/check.hpp"
#include "ssm/core/device.hpp"
#include "ssm/core/dlpack.hpp"
#include "ssm/core/dtype.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/macros.hpp"
#include "ssm/core/tensor.hpp"
