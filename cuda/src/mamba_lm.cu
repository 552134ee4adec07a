// ssm::cuda::MambaLMDevice: the Mamba LM's sequence of launches (cuda/kernels/mamba_lm_launches.cuh) on a CUDA
// device. The executor here owns the device memory, launches the kernels on the default stream, runs the GEMMs
// through cuBLAS (cublas.cuh's row-major GEMM) and the conv1d / selective scan through their ssm::cuda launchers.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../kernels/mamba_lm_launches.cuh"
#include "../kernels/selective_scan_fwd.cuh"
#include "cublas.cuh"
#include "cuda_check.cuh"
#include "ssm/cuda/causal_conv1d.hpp"
#include "ssm/cuda/mamba_lm.hpp"
#include "ssm/cuda/runtime.hpp"
#include "ssm/cuda/selective_scan.hpp"

namespace ssm::cuda {
namespace {

using detail::check_cublas;

class CudaExecutor {
 public:
  explicit CudaExecutor(int device) : device_(device) {
    ensure_device(device);
    detail::check_cuda(cudaSetDevice(device), "cudaSetDevice");
    check_cublas(cublasCreate(&handle_), "cublasCreate");
    // Plain f32 products (no TF32): the model's logits are compared with the CPU's to 1e-4.
    check_cublas(cublasSetMathMode(handle_, CUBLAS_PEDANTIC_MATH), "cublasSetMathMode");
  }
  ~CudaExecutor() {
    for (void* p : blocks_) device_free(p, device_);
    if (handle_) (void)cublasDestroy(handle_);
  }
  CudaExecutor(const CudaExecutor&) = delete;
  CudaExecutor& operator=(const CudaExecutor&) = delete;

  int device() const { return device_; }

  void* allocate(std::size_t bytes) {
    void* p = device_malloc(bytes, device_);
    blocks_.push_back(p);
    return p;
  }
  void upload(void* dst, const void* host, std::size_t bytes) {
    detail::check_cuda(cudaMemcpy(dst, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy (to the device)");
  }

  template <class... P, class... A>
  void launch(void (*kernel)(P...), kernels::LaunchDims grid, kernels::LaunchDims block, A... args) {
    kernel<<<dim3(grid.x, grid.y, grid.z), dim3(block.x, block.y, block.z)>>>(static_cast<P>(args)...);
    detail::check_cuda(cudaGetLastError(), "Mamba LM kernel launch");
  }

  void gemm(bool trans_A, bool trans_B, std::int64_t M, std::int64_t N, std::int64_t K, const float* A,
            std::int64_t lda, std::int64_t stride_A, const float* B, std::int64_t ldb, std::int64_t stride_B, float* C,
            std::int64_t ldc, std::int64_t stride_C, std::int64_t batch) {
    detail::gemm_row_major(handle_, trans_A, trans_B, M, N, K, A, lda, stride_A, B, ldb, stride_B, C, ldc, stride_C,
                           batch);
  }

  void scan(const ScanParams& p) { (void)selective_scan_forward(p, DType::f32); }
  void conv(const CausalConv1dParams& p) { causal_conv1d_forward(p, DType::f32); }
  void conv_update(const CausalConv1dUpdateParams& p) { causal_conv1d_update(p, DType::f32); }

 private:
  int device_;
  cublasHandle_t handle_ = nullptr;
  std::vector<void*> blocks_;
};

using Launches = kernels::MambaLMLaunches<CudaExecutor>;

void validate(const MambaLMWeights& w) {
  constexpr const char* op = "ssm::cuda::MambaLMDevice";
  const auto& s = w.shape;
  SSM_CHECK(s.d_model >= 1 && s.n_layer >= 1 && s.vocab >= 1 && s.d_state >= 1 && s.d_inner >= 1 && s.dt_rank >= 1,
            op, ": every size must be >= 1 (d_model ", s.d_model, ", n_layer ", s.n_layer, ", vocab ", s.vocab,
            ", d_state ", s.d_state, ", d_inner ", s.d_inner, ", dt_rank ", s.dt_rank, ")");
  SSM_CHECK(s.d_conv >= 2 && s.d_conv <= kernels::kConvMaxWidth, op, ": d_conv must be in [2, ",
            kernels::kConvMaxWidth, "] on CUDA, got ", s.d_conv);
  SSM_CHECK(s.d_state <= kernels::kScanMaxDstate, op, ": d_state must be <= ", kernels::kScanMaxDstate,
            " on CUDA, got ", s.d_state);
  SSM_CHECK(s.d_inner <= 65535, op, ": d_inner must be <= 65535 (a grid dimension), got ", s.d_inner);
  SSM_CHECK(static_cast<std::int64_t>(w.layers.size()) == s.n_layer, op, ": ", w.layers.size(),
            " layers of weights for n_layer = ", s.n_layer);
  SSM_CHECK(w.embedding && w.norm_f, op, ": embedding and norm_f must be set");
  for (std::size_t i = 0; i < w.layers.size(); ++i) {
    const auto& L = w.layers[i];
    SSM_CHECK(L.norm && L.in_proj_weight && L.conv_weight && L.x_proj_weight && L.dt_proj_weight && L.dt_proj_bias &&
                  L.A_log && L.D && L.out_proj_weight && (!s.bias || (L.in_proj_bias && L.out_proj_bias)) &&
                  (!s.conv_bias || L.conv_bias),
              op, ": layer ", i, " lacks a weight its shape needs");
  }
}

}  // namespace

struct MambaLMDevice::Impl {
  CudaExecutor exec;
  Launches lm;
  void* ws = nullptr;
  std::size_t ws_bytes = 0;

  Impl(const MambaLMWeights& w, int device) : exec(device), lm(exec, w) {}
  ~Impl() { device_free(ws, exec.device()); }

  // ids (b, l) → validated i64 on the host.
  std::vector<std::int64_t> host_ids(const char* op, const TensorView& ids, std::int64_t rank) const {
    SSM_CHECK(ids.defined(), op, ": ids is undefined");
    SSM_CHECK(ids.rank() == rank, op, ": ids must have rank ", rank, ", got shape ", ids.shape().str());
    SSM_CHECK(ids.dtype() == DType::i64 || ids.dtype() == DType::i32, op, ": ids must be i32 or i64, got ",
              name(ids.dtype()));
    SSM_CHECK(ids.device().is_cpu() || ids.device() == Device::cuda(exec.device()), op, ": ids on ",
              ids.device().str(), ", the model is on ", Device::cuda(exec.device()).str());
    SSM_CHECK(ids.is_contiguous(), op, ": ids must be contiguous");
    Tensor h = Tensor::empty(ids.shape(), ids.dtype());  // host copy
    copy(h.view(), ids);
    std::vector<std::int64_t> out(static_cast<std::size_t>(h.numel()));
    for (std::size_t i = 0; i < out.size(); ++i)
      out[i] = ids.dtype() == DType::i64 ? h.data_as<std::int64_t>()[i] : h.data_as<std::int32_t>()[i];
    for (std::size_t i = 0; i < out.size(); ++i)
      SSM_CHECK(out[i] >= 0 && out[i] < lm.shape().vocab, op, ": ids[", i, "] = ", out[i], " is outside [0, ",
                lm.shape().vocab, ")");
    return out;
  }

  // The workspace for (b, l) followed by the ids, uploaded; returns the workspace and the device ids.
  std::pair<float*, std::int64_t*> stage(const std::vector<std::int64_t>& ids, std::int64_t b, std::int64_t l) {
    const std::size_t floats = static_cast<std::size_t>(Launches::workspace_floats(lm.shape(), b, l));
    const std::size_t need = floats * sizeof(float) + ids.size() * sizeof(std::int64_t);
    if (need > ws_bytes) {
      device_free(ws, exec.device());
      ws = nullptr;
      ws = device_malloc(need, exec.device());
      ws_bytes = need;
    }
    auto* f = static_cast<float*>(ws);
    auto* d_ids = reinterpret_cast<std::int64_t*>(f + floats);  // floats is even: 8-byte aligned
    exec.upload(d_ids, ids.data(), ids.size() * sizeof(std::int64_t));
    return {f, d_ids};
  }

  void finish() { detail::check_cuda(cudaDeviceSynchronize(), "Mamba LM (synchronize)"); }
};

MambaLMDevice::MambaLMDevice(const MambaLMWeights& weights, int device) {
  validate(weights);
  impl_ = std::make_unique<Impl>(weights, device);
  impl_->finish();
}
MambaLMDevice::~MambaLMDevice() = default;
MambaLMDevice::MambaLMDevice(MambaLMDevice&&) noexcept = default;
MambaLMDevice& MambaLMDevice::operator=(MambaLMDevice&&) noexcept = default;

const MambaLMShape& MambaLMDevice::shape() const { return impl_->lm.shape(); }
Device MambaLMDevice::device() const { return Device::cuda(impl_->exec.device()); }

Tensor MambaLMDevice::logits(const TensorView& ids) const {
  const auto host = impl_->host_ids("MambaLMDevice::logits", ids, 2);
  const std::int64_t b = ids.size(0), l = ids.size(1), V = shape().vocab;
  Tensor out = Tensor::empty({b, l, V}, DType::f32, device());  // (b, l, V)
  if (b * l == 0) return out;
  auto [ws, d_ids] = impl_->stage(host, b, l);
  impl_->lm.run(Launches::Mode::logits_all, d_ids, b, l, ws, {}, out.data_as<float>());
  impl_->finish();
  return out;
}

MambaDeviceCache MambaLMDevice::make_cache(std::int64_t b) const {
  SSM_CHECK(b >= 1, "MambaLMDevice::make_cache: b must be >= 1, got ", b);
  const auto& s = shape();
  MambaDeviceCache c;
  c.b = b;
  c.conv_state = Tensor::zeros({s.n_layer, b, s.d_inner, s.d_conv}, DType::f32, device());
  c.ssm_state = Tensor::zeros({s.n_layer, b, s.d_inner, s.d_state}, DType::f32, device());
  return c;
}

Tensor MambaLMDevice::prefill(const TensorView& ids, MambaDeviceCache& cache) const {
  const auto host = impl_->host_ids("MambaLMDevice::prefill", ids, 2);
  const std::int64_t b = ids.size(0), l = ids.size(1);
  SSM_CHECK(b >= 1 && l >= 1, "MambaLMDevice::prefill: ids must hold at least one token per sequence, got shape ",
            ids.shape().str());
  cache = make_cache(b);
  Tensor out = Tensor::empty({b, shape().vocab}, DType::f32, device());  // (b, V)
  auto [ws, d_ids] = impl_->stage(host, b, l);
  impl_->lm.run(Launches::Mode::prefill, d_ids, b, l, ws,
                {cache.conv_state.data_as<float>(), cache.ssm_state.data_as<float>()}, out.data_as<float>());
  impl_->finish();
  cache.seqlen = l;
  return out;
}

Tensor MambaLMDevice::step(const TensorView& ids, MambaDeviceCache& cache) const {
  const auto host = impl_->host_ids("MambaLMDevice::step", ids, 1);
  const auto& s = shape();
  const std::int64_t b = ids.size(0);
  const Dims conv_shape{s.n_layer, b, s.d_inner, s.d_conv}, ssm_shape{s.n_layer, b, s.d_inner, s.d_state};
  const bool fits = b == cache.b && b >= 1 && cache.conv_state.defined() && cache.ssm_state.defined() &&
                    cache.conv_state.shape() == conv_shape && cache.ssm_state.shape() == ssm_shape &&
                    cache.conv_state.device() == device() && cache.ssm_state.device() == device();
  SSM_CHECK(fits, "MambaLMDevice::step: ", b, " ids for a cache that is not this model's cache of ", b,
            " sequences (make it with make_cache or prefill)");
  Tensor out = Tensor::empty({b, s.vocab}, DType::f32, device());  // (b, V)
  auto [ws, d_ids] = impl_->stage(host, b, 1);
  impl_->lm.run(Launches::Mode::step, d_ids, b, 1, ws,
                {cache.conv_state.data_as<float>(), cache.ssm_state.data_as<float>()}, out.data_as<float>());
  impl_->finish();
  ++cache.seqlen;
  return out;
}

}  // namespace ssm::cuda
