// The emulated backend's launchers (cuda/emu/launchers.hpp) by kernel family, as explicit-instantiation lists:
// SSM_EMU_<FAMILY>_INSTANCES(template) in cuda/emu/instances/<family>.cpp compiles a family once; launchers.hpp
// declares all of them `extern template` when SSM_EXTERN_INSTANCES is set (ssm/core/instances.hpp).
//
// Each family's file includes only its own kernels (and this header, which includes none), so a change to one
// family's kernels recompiles that file and the backend's table (instances/backend.cpp, backend.hpp) alone: the
// mutation suite (tools/mutation_suite.py) plants each fault in one kernel and rebuilds only those. A new launcher
// joins its family's list; a new family gets a list here, a file in instances/, its launch header in launchers.hpp
// and a place in SSM_EMU_LAUNCH_INSTANCES.
#pragma once

// kernels/launch/cast.cuh, embedding.cuh, glu.cuh, linear.cuh, rms_norm.cuh, rotary.cuh: the small dense ops.
#define SSM_EMU_DENSE_INSTANCES(PREFIX)                                                                                \
  PREFIX void ssm::kernels::cast_from_f32_launches(::ssm::emu::HostExecutor&, const float*, void*, ::ssm::DType,       \
                                                   std::int64_t, const char*);                                         \
  PREFIX void ssm::kernels::linear_launches(::ssm::emu::HostExecutor&, const ::ssm::LinearParams&, const char*);       \
  PREFIX void ssm::kernels::rms_norm_launches(::ssm::emu::HostExecutor&, const ::ssm::RmsNormParams&, const char*);    \
  PREFIX void ssm::kernels::rotary_launches(::ssm::emu::HostExecutor&, const ::ssm::RotaryParams&, const char*);      \
  PREFIX void ssm::kernels::glu_launches(::ssm::emu::HostExecutor&, const ::ssm::GluParams&, const char*);            \
  PREFIX void ssm::kernels::embedding_launches(::ssm::emu::HostExecutor&, const ::ssm::EmbeddingParams&, const char*);

// kernels/launch/selective_scan.cuh, selective_state_update.cuh.
#define SSM_EMU_SCAN_INSTANCES(PREFIX)                                                                                 \
  PREFIX std::string ssm::kernels::selective_scan_forward_launches(::ssm::emu::HostExecutor&,                          \
                                                                   const ::ssm::ScanParams&, ::ssm::DType,             \
                                                                   const ::ssm::ScanForwardOptions&, const char*);     \
  PREFIX void ssm::kernels::selective_scan_backward_launches(::ssm::emu::HostExecutor&, const ::ssm::ScanParams&,      \
                                                             ::ssm::DType, const ::ssm::ScanDeviceGradParams&,         \
                                                             const char*);                                             \
  PREFIX void ssm::kernels::selective_state_update_launches(::ssm::emu::HostExecutor&,                                 \
                                                            const ::ssm::SelectiveStateUpdateParams&, const char*);

// kernels/launch/causal_conv1d.cuh.
#define SSM_EMU_CONV1D_INSTANCES(PREFIX)                                                                               \
  PREFIX void ssm::kernels::causal_conv1d_forward_launches(                                                            \
      ::ssm::emu::HostExecutor&, const ::ssm::CausalConv1dParams&, ::ssm::DType, const char*);                         \
  PREFIX void ssm::kernels::causal_conv1d_backward_launches(                                                           \
      ::ssm::emu::HostExecutor&, const ::ssm::CausalConv1dParams&, const ::ssm::CausalConv1dGradParams&, ::ssm::DType, \
      const char*);                                                                                                    \
  PREFIX void ssm::kernels::causal_conv1d_update_launches(                                                             \
      ::ssm::emu::HostExecutor&, const ::ssm::CausalConv1dUpdateParams&, ::ssm::DType, const char*);

// kernels/attention.cuh.
#define SSM_EMU_ATTENTION_INSTANCES(PREFIX)                                                                            \
  PREFIX void ssm::kernels::attention_forward_launches(::ssm::emu::HostExecutor&, ::ssm::AttentionParams);             \
  PREFIX void ssm::kernels::attention_backward_launches(::ssm::emu::HostExecutor&, const ::ssm::AttentionParams&,      \
                                                        const ::ssm::AttentionGradParams&);

// kernels/launch/ssd.cuh.
#define SSM_EMU_SSD_INSTANCES(PREFIX)                                                                                  \
  PREFIX void ssm::kernels::ssd_forward_launches(::ssm::emu::HostExecutor&, const ::ssm::SsdParams&,                   \
                                                 const ::ssm::kernels::SsdPlan&, const ::ssm::kernels::SsdWorkspace&); \
  PREFIX void ssm::kernels::ssd_backward_launches(                                                                     \
      ::ssm::emu::HostExecutor&, const ::ssm::SsdParams&, const ::ssm::SsdGradParams&, const ::ssm::kernels::SsdPlan&, \
      const ::ssm::kernels::SsdWorkspace&, const ::ssm::kernels::SsdGradWorkspace&);

// kernels/launch/linear_attention.cuh.
#define SSM_EMU_LINEAR_ATTENTION_INSTANCES(PREFIX)                                                             \
  PREFIX void ssm::kernels::linear_attention_forward_launches(                                                 \
      ::ssm::emu::HostExecutor&, const ::ssm::LinearAttentionParams&, const ::ssm::kernels::LaPlan&, void*);   \
  PREFIX void ssm::kernels::linear_attention_backward_launches(                                                \
      ::ssm::emu::HostExecutor&, const ::ssm::LinearAttentionParams&, const ::ssm::LinearAttentionGradParams&, \
      const ::ssm::kernels::LaPlan&, void*);

// kernels/launch/delta_rule.cuh.
#define SSM_EMU_DELTA_RULE_INSTANCES(PREFIX)                                                                       \
  PREFIX void ssm::kernels::delta_rule_forward_launches(::ssm::emu::HostExecutor&, const ::ssm::DeltaRuleParams&,  \
                                                        const ::ssm::kernels::DrPlan&, void*);                     \
  PREFIX void ssm::kernels::delta_rule_backward_launches(::ssm::emu::HostExecutor&, const ::ssm::DeltaRuleParams&, \
                                                         const ::ssm::DeltaRuleGradParams&,                        \
                                                         const ::ssm::kernels::DrPlan&, void*);

// kernels/launch/rwkv7.cuh.
#define SSM_EMU_RWKV7_INSTANCES(PREFIX)                                                                              \
  PREFIX void ssm::kernels::rwkv7_forward_launches(::ssm::emu::HostExecutor&, const ::ssm::Rwkv7Params&,             \
                                                   const ::ssm::kernels::Rwkv7Plan&, void*);                         \
  PREFIX void ssm::kernels::rwkv7_backward_launches(::ssm::emu::HostExecutor&, const ::ssm::Rwkv7Params&,            \
                                                    const ::ssm::Rwkv7GradParams&, const ::ssm::kernels::Rwkv7Plan&, \
                                                    void*);

// kernels/launch/ttt_linear.cuh.
#define SSM_EMU_TTT_LINEAR_INSTANCES(PREFIX)                                                                       \
  PREFIX void ssm::kernels::ttt_linear_forward_launches(::ssm::emu::HostExecutor&, const ::ssm::TttLinearParams&,  \
                                                        const ::ssm::kernels::TttPlan&, void*);                    \
  PREFIX void ssm::kernels::ttt_linear_backward_launches(::ssm::emu::HostExecutor&, const ::ssm::TttLinearParams&, \
                                                         const ::ssm::TttLinearGradParams&,                        \
                                                         const ::ssm::kernels::TttPlan&, void*);

// kernels/launch/moe.cuh.
#define SSM_EMU_MOE_INSTANCES(PREFIX)                                                                                  \
  PREFIX void ssm::kernels::moe_forward_launches(::ssm::emu::HostExecutor&, const ::ssm::MoeParams&,                   \
                                                 const ::ssm::kernels::MoePlan&, void*);

// kernels/launch/long_conv.cuh.
#define SSM_EMU_LONG_CONV_INSTANCES(PREFIX) \
  PREFIX void ssm::kernels::long_conv_launches(::ssm::emu::HostExecutor&, const ::ssm::LongConvParams&, const char*);

#define SSM_EMU_LAUNCH_INSTANCES(PREFIX)     \
  SSM_EMU_DENSE_INSTANCES(PREFIX)            \
  SSM_EMU_LONG_CONV_INSTANCES(PREFIX)        \
  SSM_EMU_SCAN_INSTANCES(PREFIX)             \
  SSM_EMU_CONV1D_INSTANCES(PREFIX)           \
  SSM_EMU_ATTENTION_INSTANCES(PREFIX)        \
  SSM_EMU_SSD_INSTANCES(PREFIX)              \
  SSM_EMU_LINEAR_ATTENTION_INSTANCES(PREFIX) \
  SSM_EMU_DELTA_RULE_INSTANCES(PREFIX)       \
  SSM_EMU_RWKV7_INSTANCES(PREFIX)            \
  SSM_EMU_TTT_LINEAR_INSTANCES(PREFIX)       \
  SSM_EMU_MOE_INSTANCES(PREFIX)
