// The live page served at `/`: plain HTML and JavaScript that polls GET /v1/stats every second
// and draws each model's usage bars. No data is in the page itself (so it needs no token);
// with --token-file, open it as http://HOST:PORT/#token=<token> and it sends the token.
#pragma once

#include <string_view>

namespace ratelimit::server {

std::string_view live_page_html();

}  // namespace ratelimit::server
