// Module header: the sequence layers (the LSSL in its three views).
#pragma once

#include "ssm/layers/lssl.hpp"
