// The umbrella header: everything a user of the library needs.
#pragma once

#include "ratelimit/call.h"        // IWYU pragma: export
#include "ratelimit/clock.h"       // IWYU pragma: export
#include "ratelimit/config.h"      // IWYU pragma: export
#include "ratelimit/decision.h"    // IWYU pragma: export
#include "ratelimit/limiter.h"     // IWYU pragma: export
#include "ratelimit/metrics.h"     // IWYU pragma: export
#include "ratelimit/model_name.h"  // IWYU pragma: export
#include "ratelimit/provider.h"    // IWYU pragma: export
#include "ratelimit/quota.h"       // IWYU pragma: export
#include "ratelimit/status.h"      // IWYU pragma: export
#include "ratelimit/tokens.h"      // IWYU pragma: export
