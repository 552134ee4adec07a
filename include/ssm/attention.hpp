// Module header: attention, the baseline the scan is compared with (docs/math.md §7): the attention op (materialized
// and tiled, forward and backward, KV cache), its double reference, the multi-head attention layer, and the
// hybrid stack that interleaves attention with other sequence mixers (Jamba: with Mamba blocks).
#pragma once

#include "ssm/models/hybrid.hpp"
#include "ssm/models/jamba.hpp"
#include "ssm/layers/attention.hpp"
#include "ssm/ops/attention.hpp"
#include "ssm/reference/attention.hpp"
