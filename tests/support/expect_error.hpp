// The one way tests check bad input: the call throws an ssm::Error, and its message says what the test expects
// (the argument's name, what was expected). A call that returns, or throws anything else, fails the test.
#pragma once

#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

#include "ssm/core/error.hpp"

namespace ssm_test {

/// f() throws an ssm::Error whose message contains every one of `needles` (a braced list: {"a", "b"}).
template <class F>
void expect_error(F&& f, std::initializer_list<std::string> needles) {
  try {
    f();
    ADD_FAILURE() << "no ssm::Error thrown (expected one mentioning '" << *needles.begin() << "')";
  } catch (const ssm::Error& e) {
    for (const std::string& needle : needles)
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "'" << needle << "' not in: " << e.what();
  }
}

/// f() throws an ssm::Error whose message contains `needle`.
template <class F>
void expect_error(F&& f, const std::string& needle) {
  expect_error(static_cast<F&&>(f), std::initializer_list<std::string>{needle});
}

/// f() throws an ssm::Error naming the argument `arg` (the library's checks say "argument 'arg'").
template <class F>
void expect_arg_error(const std::string& arg, F&& f) {
  expect_error(static_cast<F&&>(f), "argument '" + arg + "'");
}

}  // namespace ssm_test
