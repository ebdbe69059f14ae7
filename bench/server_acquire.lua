-- wrk script: POST /v1/acquire for one model (bench/server_load.sh).
wrk.method = "POST"
wrk.body = '{"model": "bench", "tokens": 100}'
wrk.headers["Content-Type"] = "application/json"

local codes = {}
function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
end
