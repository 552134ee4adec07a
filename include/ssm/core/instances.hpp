// The CPU kernels' entry points compiled once: an opt-in for programs that include many of the library's headers.
//
// The library is header-only, so every translation unit that includes an op instantiates that op's CPU kernels for
// every input type, whether or not it calls the op: the op's entry is an inline function, and the compiler
// instantiates each template an inline function's body names. With Eigen's expression templates inside, that costs
// much: a file that only includes ssm/ops/delta_rule.hpp took 45 s to compile (g++ 12, -O1), 36 s of it template
// instantiation, and one that only includes ssm/layers.hpp 95 s.
//
// A program may instead compile each kernel once. Define SSM_EXTERN_INSTANCES=1 and compile the files of
// src/instances/ into the program with its own flags (the CMake target ssm_instances does this
// for the project's tests, benchmarks, examples and ssm-generate): each kernel header then declares its entry points
// `extern template` (at its end, under `#if SSM_EXTERN_INSTANCES`), as core/eigen.hpp does for Eigen's product
// kernels, and the compiler leaves their bodies to those files. The code that runs is the same: the entry points are
// large functions, called once per op call, never inlined. A program that does neither gets the header-only
// behaviour. Within one program, files with and without SSM_EXTERN_INSTANCES may be mixed (the latter instantiate
// the kernels themselves, as before); a file with it links only where the src/instances/ files are linked too.
#pragma once

#include "ssm/core/dtype.hpp"

#ifndef SSM_EXTERN_INSTANCES
#define SSM_EXTERN_INSTANCES 0
#endif

/// Expands M(PREFIX, In) for each input type the CPU kernels take: f32, f64, f16 and bf16 (the last two computed in
/// f32). PREFIX is `extern template` in the headers and `template` in src/instances/.
#define SSM_FOR_EACH_INPUT(M, PREFIX) \
  M(PREFIX, float) M(PREFIX, double) M(PREFIX, ::ssm::half) M(PREFIX, ::ssm::bfloat16)

/// Expands M(PREFIX, T) for the two compute types (f32, f64).
#define SSM_FOR_EACH_COMPUTE(M, PREFIX) M(PREFIX, float) M(PREFIX, double)
