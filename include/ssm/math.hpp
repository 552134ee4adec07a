// Module header: the continuous-time mathematics (discretization rules, HiPPO transitions, NPLR/DPLR, S4D inits).
#pragma once

#include "ssm/math/discretize.hpp"
#include "ssm/math/hippo.hpp"
