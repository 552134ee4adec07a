// The emulated backend's table of entry points over the host executor, compiled once (see ../backend.hpp).
#include "../backend_entries.hpp"

template ::ssm::DeviceBackend ssm::emu::backend_detail::make<::ssm::emu::HostExecutor>();
