// Compile-time checks of the Tensor → TensorView lifetime rules (tensor.hpp). Built once per case with
// -DCASE_<name> by run_compile_check.cmake: CASE_ok must compile; every other case keeps a view of a
// temporary Tensor past the end of its statement and must be rejected through a deleted member.
#include <optional>
#include <vector>

#include <ssm/ops/selective_scan.hpp>

namespace {

int rank_of(const ssm::TensorView& v) { return v.rank(); }

}  // namespace

int main() {
  const std::vector<float> values = {1, 2, 3, 4};
  ssm::SelectiveScanInputs in;
  ssm::SelectiveScanOptions opt;
#if defined(CASE_ok)
  // The legitimate forms: the Tensor is named and outlives the views taken of it.
  const ssm::Tensor u = ssm::Tensor::from_vector<float>({1, 2, 2}, values);
  in.u = u;                                      // conversion of a named Tensor
  in.delta = u.view();                           // view() of a named Tensor
  in.D = u;                                      // into an optional<TensorView>
  in.z = u.view();
  ssm::TensorView v = u;                         // initialization from a named Tensor
  ssm::TensorView w(u);
  const ssm::SelectiveScanInputs agg{.u = u, .delta = u.view()};
  const ssm::SelectiveScanOutputs f{.chunk_states = ssm::Tensor::zeros({1, 1, 1, 1}, ssm::DType::f32)};
  opt.chunk_states = f.chunk_states.view();      // the result is named first
  // A temporary passed straight to a `const TensorView&` parameter lives until the call returns.
  const int r = rank_of(ssm::Tensor::zeros({2, 3}, ssm::DType::f32));
  ssm::copy(u.view(), ssm::Tensor::from_vector<float>({1, 2, 2}, values));
  (void)r, (void)v, (void)w, (void)agg;
#elif defined(CASE_assign_temporary)
  in.u = ssm::Tensor::from_vector<float>({1, 2, 2}, values);  // the first trap
#elif defined(CASE_assign_temporary_optional)
  in.D = ssm::Tensor::from_vector<float>({4}, values);
#elif defined(CASE_view_of_temporary)
  auto result = [] { return ssm::SelectiveScanOutputs{}; };
  opt.chunk_states = result().chunk_states.view();            // the second trap
#elif defined(CASE_init_from_temporary)
  const ssm::TensorView v = ssm::Tensor::zeros({2, 3}, ssm::DType::f32);
  (void)v;
#elif defined(CASE_aggregate_from_temporary)
  const ssm::SelectiveScanInputs agg{.u = ssm::Tensor::zeros({1, 2, 2}, ssm::DType::f32)};
  (void)agg;
#elif defined(CASE_member_of_temporary)
  auto result = [] { return ssm::SelectiveScanOutputs{}; };
  opt.chunk_states = result().chunk_states;                   // the member of a temporary is an xvalue
#else
#error "define one CASE_<name>"
#endif
  (void)in;
  (void)opt;
  return 0;
}
