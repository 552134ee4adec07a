# Script mode: compiles SOURCE with -fsyntax-only and -DCASE_${CASE}. EXPECT=pass: the compile must succeed.
# EXPECT=fail: it must fail, and the diagnostics must match MATCH (default: "deleted", i.e. the compiler chose a
# deleted function), so that an unrelated error, a typo or a missing header, cannot pass as the expected rejection.
separate_arguments(_flags UNIX_COMMAND "${FLAGS}")
execute_process(COMMAND ${COMPILER} -std=c++20 -fsyntax-only ${_flags} -DCASE_${CASE} ${SOURCE}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(EXPECT STREQUAL "pass")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "case ${CASE}: expected to compile, but the compiler failed (${rc}):\n${out}\n${err}")
  endif()
  message(STATUS "case ${CASE}: compiles, as expected")
else()
  if(rc EQUAL 0)
    message(FATAL_ERROR "case ${CASE}: compiled, but it keeps a view of a temporary Tensor and must be rejected")
  endif()
  if(NOT MATCH)
    set(MATCH "deleted")
  endif()
  if(NOT err MATCHES "${MATCH}")
    message(FATAL_ERROR "case ${CASE}: failed, but its diagnostics do not match '${MATCH}':\n${err}")
  endif()
  message(STATUS "case ${CASE}: rejected ('${MATCH}'), as expected")
endif()
