# Runs example_train twice with the same arguments and requires the same train.json, bit for bit, apart from the
# wall-clock "seconds": ctest's check that the same seed gives the same loss curve (every step's loss, accuracy,
# learning rate and gradient norm, and the evaluation). Called by examples/CMakeLists.txt:
#   cmake -DEXE=<example_train> -DDIR=<scratch dir> -DARGS=<arg;arg;...> -P check_train_determinism.cmake
foreach(run 1 2)
  execute_process(COMMAND ${EXE} ${ARGS} --out ${DIR}/run${run} RESULT_VARIABLE rc OUTPUT_QUIET ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "example_train ${ARGS} failed (${rc}): ${err}")
  endif()
  file(READ ${DIR}/run${run}/train.json text${run})
  string(REGEX REPLACE "\n *\"seconds\": [^\n]*" "" kept${run} "${text${run}}")
  if(kept${run} STREQUAL text${run})
    message(FATAL_ERROR "${DIR}/run${run}/train.json has no \"seconds\" line: its layout changed")
  endif()
endforeach()
string(FIND "${kept1}" "\"loss\"" has_loss)
if(has_loss LESS 0)
  message(FATAL_ERROR "${DIR}/run1/train.json logs no loss")
endif()
if(NOT kept1 STREQUAL kept2)
  message(FATAL_ERROR "example_train ${ARGS}: two runs with the same seed logged different curves (${DIR}/run1 and "
                      "${DIR}/run2)")
endif()
string(LENGTH "${kept1}" n)
message(STATUS "example_train ${ARGS}: the same train.json twice (${n} characters)")
