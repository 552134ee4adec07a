// The parts of the module ssm._ext, one file each; module.cpp calls them in order.
#pragma once

#include <nanobind/nanobind.h>

namespace ssm::python {

void bind_arrays(nanobind::module_& m);            // arrays.cpp: to_numpy
void bind_errors(nanobind::module_& m);            // errors.cpp: ssm::Error -> ssm.Error (a ValueError)
void bind_backends(nanobind::module_& m);          // backends.cpp: backends()
void bind_selective_scan(nanobind::module_& m);    // ops_selective_scan.cpp
void bind_ssd(nanobind::module_& m);               // ops_ssd.cpp
void bind_linear_attention(nanobind::module_& m);  // ops_linear_attention.cpp
void bind_delta_rule(nanobind::module_& m);        // ops_delta_rule.cpp
void bind_hyena(nanobind::module_& m);             // ops_hyena.cpp
void bind_moe(nanobind::module_& m);               // ops_moe.cpp
void bind_rwkv4(nanobind::module_& m);             // ops_rwkv4.cpp
void bind_rwkv7(nanobind::module_& m);             // ops_rwkv7.cpp
void bind_ttt_linear(nanobind::module_& m);        // ops_ttt_linear.cpp
void bind_dense(nanobind::module_& m);             // ops_dense.cpp: causal_conv1d, attention, rms_norm, linear
void bind_layers(nanobind::module_& m);            // layers.cpp: MambaBlock, Mamba2Block, DeltaNet, LinearAttention
void bind_train(nanobind::module_& m);             // train.cpp: Trainer (a StackLM with AdamW)
void bind_models(nanobind::module_& m);            // models.cpp: MambaLM, Mamba2LM, RwkvLM
void bind_tokenizer(nanobind::module_& m);         // tokenizer.cpp
void bind_inspect(nanobind::module_& m);              // inspect.cpp: view_info and the export probe (tests)

}  // namespace ssm::python
