-- webhooks.lua - wrk script of the ingest benchmark: each wrk thread sends, in
-- turn, the raw pre-signed requests of its own file (written by gen_webhooks:
-- requests separated by one NUL byte), so every request carries a distinct
-- webhook-id. Usage: wrk ... -s webhooks.lua URL -- FILE_PREFIX LABEL [RATE]
--   FILE_PREFIX "-": a plain GET / instead; RATE: requests/s per wrk thread (paced).
-- done() prints one machine-readable line that tests/bench/run.sh reads:
--   RESULT label=L requests=N seconds=S rps=R p50_us=A p99_us=B non2xx=C errors=E wraps=W
-- wraps > 0 means a thread ran out of distinct requests and resent some (ccsyncd
-- then answers 200 duplicate, which would flatter it): run.sh treats that as broken.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
function now_ms()
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local threads = {}
local next_id = 0

function setup(thread)
    thread:set("tid", next_id)
    next_id = next_id + 1
    table.insert(threads, thread)
end

function init(args)
    label = args[2] or "run"
    wraps = 0
    -- Paced run: this thread sends RATE requests/s (an open-loop schedule of send
    -- slots, claimed by whichever connection is free; needs enough connections).
    rate = tonumber(args[3] or "")
    if rate then
        interval = 1000 / rate
        next_slot = now_ms()
    else
        delay = nil
    end
    if args[1] == "-" then
        -- no requests file: plain GET / (wrk's static request), for reference
        request = nil
        return
    end
    local f = assert(io.open(args[1] .. "." .. tid, "rb"))
    data = f:read("*a")
    f:close()
    pos = 1
end

function delay()
    local now = now_ms()
    -- A connection free long after its slot does not make up for lost time in a burst.
    if next_slot < now - 20 then
        next_slot = now - 20
    end
    next_slot = next_slot + interval
    local d = next_slot - now
    if d <= 0 then
        return 0
    end
    return math.floor(d + 0.5)
end

function request()
    local e = string.find(data, "\0", pos, true)
    if not e then
        wraps = wraps + 1
        pos = 1
        e = string.find(data, "\0", pos, true)
    end
    local r = string.sub(data, pos, e - 1)
    pos = e + 1
    return r
end

function done(summary, latency, requests)
    local w = 0
    local lbl = "run"
    for _, t in ipairs(threads) do
        w = w + (t:get("wraps") or 0)
        lbl = t:get("label") or lbl
    end
    local e = summary.errors
    local secs = summary.duration / 1e6
    io.write(string.format(
        "RESULT label=%s requests=%d seconds=%.3f rps=%.0f p50_us=%d p99_us=%d non2xx=%d errors=%d wraps=%d\n",
        lbl, summary.requests, secs, summary.requests / secs, latency:percentile(50),
        latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout, w))
end
