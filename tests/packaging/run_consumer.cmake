# Script mode: install this build (find_package mode) or point at the sources (add_subdirectory mode),
# then configure, build and run tests/packaging/consumer. Fails with the failing step's output.
function(run_step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "packaging (${MODE}): ${what} failed (${rc}):\n${out}\n${err}")
  endif()
  message(STATUS "${what}: ok\n${out}")
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
set(consumer_src ${CMAKE_CURRENT_LIST_DIR}/consumer)
set(configure_args -S ${consumer_src} -B ${WORK_DIR}/build -G ${GENERATOR} -DCONSUMER_MODE=${MODE}
                   -DEXPECT_CUDA=${EXPECT_CUDA})
if(UNOPTIMIZED)
  # -O0 (NDEBUG kept, as in a Release build): for a compiler whose warnings do not depend on the optimizer (clang's
  # come from its front end)
  list(APPEND configure_args -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS_DEBUG=-O0 -DNDEBUG")
else()
  list(APPEND configure_args -DCMAKE_BUILD_TYPE=Release)
endif()
if(LAUNCHER)
  # ccache keys relative to the checkout (as scripts/build.sh sets them), so another clone reuses the objects
  list(APPEND configure_args -DCMAKE_CXX_COMPILER_LAUNCHER=${LAUNCHER})
  set(ENV{CCACHE_BASEDIR} ${SSM_SOURCE_DIR})
  set(ENV{CCACHE_NOHASHDIR} true)
endif()
if(CXX_COMPILER)
  # The consumer is built with this compiler (clang++ here, whatever built the library), -Werror included.
  list(APPEND configure_args -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
endif()
if(MODE STREQUAL "find_package")
  run_step("install" ${CMAKE_COMMAND} --install ${SSM_BINARY_DIR} --prefix ${WORK_DIR}/prefix)
  list(APPEND configure_args -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix)
else()
  list(APPEND configure_args -DSSM_SOURCE_DIR=${SSM_SOURCE_DIR} -DSSM_ENABLE_CUDA=${EXPECT_CUDA})
endif()
run_step("configure consumer" ${CMAKE_COMMAND} ${configure_args})
run_step("build consumer" ${CMAKE_COMMAND} --build ${WORK_DIR}/build)
run_step("run consumer" ${WORK_DIR}/build/consumer)
if(MODE STREQUAL "find_package" AND EXPECT_TOOLS)
  # The installed program runs from the prefix on the tiny checkpoint (and its tokenizer).
  run_step("run installed ssm-generate" ${WORK_DIR}/prefix/bin/ssm-generate --model ${TINY_CHECKPOINT}
           --prompt "installed" -n 4)
endif()
if(EXPECT_CUDA)
  run_step("run CUDA consumer" ${WORK_DIR}/build/consumer_cuda)
endif()
