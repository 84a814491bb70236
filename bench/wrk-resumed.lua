-- wrk-resumed.lua: counts resumed TLS sessions. bench/run (TLS=1) runs wrk
-- with this script against a probe HAProxy whose responses carry
-- "x-resumed: 0|1" (HAProxy's ssl_fc_is_resumed), once with wrk alone and
-- once with wrk-noresume.so, and prints "resumed=N full=M" for each.
local threads = {}

function setup(thread)
	table.insert(threads, thread)
end

function init(args)
	resumed, full, unknown = 0, 0, 0
end

function response(status, headers, body)
	local v = headers["x-resumed"]
	if v == "1" then
		resumed = resumed + 1
	elseif v == "0" then
		full = full + 1
	else
		unknown = unknown + 1
	end
end

function done(summary, latency, requests)
	local r, f, u = 0, 0, 0
	for _, t in ipairs(threads) do
		r = r + t:get("resumed")
		f = f + t:get("full")
		u = u + t:get("unknown")
	end
	io.write(string.format("RESUMED resumed=%d full=%d unknown=%d\n", r, f, u))
end
