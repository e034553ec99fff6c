-- wrk script of bench/ocsp.py: sends prepared OCSP requests and checks every answer.
--
-- Read from the environment (every Lua state of wrk reads it the same way):
--   BENCH_OCSP_DATA   the requests, written by bench/ocsp.py (format below)
--   BENCH_OCSP_OUT    where done() writes the figures and the per-certificate tallies
--   BENCH_OCSP_QUOTA  answers per thread: the first thread that has them sends
--                     wrk SIGINT, which ends the run for all threads there (wrk
--                     itself stops only after --duration; a thread stopped alone
--                     would leave connections open, unwritten, that OpenSSL's
--                     one-connection-at-a-time responder would wait on)
--   BENCH_OCSP_THREADS  how many threads wrk runs
--
-- Data file, one item per line: "method POST|GET", "prefix <hex>" (the CertID
-- bytes before the serial: both issuer hashes as DER OCTET STRINGs), "close 0|1",
-- "certs <n>" then n lines of serial INTEGER contents in hex, "requests <m>"
-- then m lines "<cert index> <hex body or GET path>" (POST path: "path /...").
--
-- Each answer is checked here, cheaply: HTTP 200, OCSPResponseStatus
-- successful, the CertID of one of our certificates in it, and its certStatus
-- (good, revoked, unknown) tallied per certificate with the time the last good
-- and the first revoked answer arrived. bench/ocsp.py compares these with what
-- was sent and when each certificate was revoked, and verifies signatures in a
-- separate pass.

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } bench_ocsp_timespec;
int clock_gettime(int clk_id, bench_ocsp_timespec *tp);
int kill(int pid, int sig);
int getpid(void);
]])
local clock = ffi.new("bench_ocsp_timespec")
local function now()
  ffi.C.clock_gettime(0, clock) -- CLOCK_REALTIME: compared with Python's time.time()
  return tonumber(clock.tv_sec) + tonumber(clock.tv_nsec) * 1e-9
end

local function unhex(text)
  return (text:gsub("..", function(pair) return string.char(tonumber(pair, 16)) end))
end

local function load(path)
  local data = { serials = {}, bodies = {}, cert_of = {}, method = "POST", path = "/", close = false }
  local file = assert(io.open(path, "rb"))
  local lines = file:lines()
  for line in lines do
    local key, value = line:match("^(%S+) ?(.*)$")
    if key == "method" then
      data.method = value
    elseif key == "path" then
      data.path = value
    elseif key == "close" then
      data.close = value == "1"
    elseif key == "prefix" then
      data.prefix = unhex(value)
    elseif key == "certs" then
      for i = 1, tonumber(value) do
        data.serials[i] = unhex(lines())
      end
    elseif key == "requests" then
      for i = 1, tonumber(value) do
        local cert, payload = lines():match("^(%d+) (%x*)$")
        data.cert_of[i] = tonumber(cert)
        data.bodies[i] = unhex(payload)
      end
    end
  end
  file:close()
  return data
end

local data = load(os.getenv("BENCH_OCSP_DATA"))

-- wrk's own resolve() opens and closes a connection to check the address
-- before the run: OpenSSL 3.0's responder then spins on that empty connection
-- for good (it reads EOF and reads again). Resolve without connecting.
function wrk.resolve(host, service)
  wrk.addrs = wrk.lookup(host, service)
end

-- Main state: number the threads, collect their tallies at the end.
local threads = {}
function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

-- Thread state. Globals, so done() can read them with thread:get().
sent, good, revoked, unknown, last_good, first_revoked = {}, {}, {}, {}, {}, {}
answered, not_200, not_successful, no_certid = 0, 0, 0, 0

local requests, certs = {}, {}
local position, quota, thread_count = 0, 0, 1
local cert_by_serial = {}

function init(args)
  thread_count = tonumber(os.getenv("BENCH_OCSP_THREADS"))
  quota = tonumber(os.getenv("BENCH_OCSP_QUOTA"))
  local headers = {}
  if data.method == "POST" then
    headers["Content-Type"] = "application/ocsp-request"
  end
  if data.close then
    headers["Connection"] = "close"
  end
  -- This thread's share of the requests, in their order, formatted once.
  for i = thread_index + 1, #data.bodies, thread_count do
    local cert = data.cert_of[i]
    if data.method == "POST" then
      requests[#requests + 1] = wrk.format("POST", data.path, headers, data.bodies[i])
    else
      requests[#requests + 1] = wrk.format("GET", data.bodies[i], headers)
    end
    certs[#certs + 1] = cert
  end
  for i, serial in ipairs(data.serials) do
    cert_by_serial[serial] = i
    sent[i], good[i], revoked[i], unknown[i] = 0, 0, 0, 0
    last_good[i], first_revoked[i] = 0, 0
  end
end

function request()
  position = position + 1
  if position > #requests then
    position = 1
  end
  local cert = certs[position]
  sent[cert] = sent[cert] + 1
  return requests[position]
end

local byte, find, sub = string.byte, string.find, string.sub

function response(status, headers, body)
  answered = answered + 1
  if status ~= 200 then
    not_200 = not_200 + 1
  else
    -- OCSPResponse ::= SEQUENCE { responseStatus ENUMERATED, ... }
    local length_octet = byte(body, 2) or 0
    local at = 3
    if length_octet >= 0x80 then
      at = 3 + (length_octet - 0x80)
    end
    if byte(body, at) ~= 0x0A or byte(body, at + 1) ~= 1 or byte(body, at + 2) ~= 0 then
      not_successful = not_successful + 1
    else
      local _, last = find(body, data.prefix, at, true)
      local cert = nil
      local tag = nil
      if last ~= nil and byte(body, last + 1) == 0x02 then
        local size = byte(body, last + 2)
        cert = cert_by_serial[sub(body, last + 3, last + 2 + size)]
        tag = byte(body, last + 3 + size)
      end
      if cert == nil then
        no_certid = no_certid + 1
      elseif tag == 0x80 then
        good[cert] = good[cert] + 1
        last_good[cert] = now()
      elseif tag == 0xA1 then
        revoked[cert] = revoked[cert] + 1
        if first_revoked[cert] == 0 then
          first_revoked[cert] = now()
        end
      else
        unknown[cert] = unknown[cert] + 1
      end
    end
  end
  if answered == quota then
    ffi.C.kill(ffi.C.getpid(), 2) -- SIGINT: wrk stops every thread, then calls done()
  end
end

function done(summary, latency, _requests)
  local out = assert(io.open(os.getenv("BENCH_OCSP_OUT"), "w"))
  local errors = summary.errors
  out:write(string.format("summary %d %d %d\n", summary.requests, summary.duration, summary.bytes))
  out:write(string.format(
    "errors %d %d %d %d %d\n",
    errors.connect, errors.read, errors.write, errors.status, errors.timeout
  ))
  out:write(string.format(
    "latency %d %d %d %d %d %d %.1f\n",
    latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean
  ))
  local totals = { sent = {}, good = {}, revoked = {}, unknown = {}, last_good = {}, first_revoked = {} }
  for i = 1, #data.serials do
    totals.sent[i], totals.good[i], totals.revoked[i], totals.unknown[i] = 0, 0, 0, 0
    totals.last_good[i], totals.first_revoked[i] = 0, 0
  end
  for _, thread in ipairs(threads) do
    out:write(string.format(
      "thread %d %d %d %d\n",
      thread:get("answered"), thread:get("not_200"),
      thread:get("not_successful"), thread:get("no_certid")
    ))
    for _, name in ipairs({ "sent", "good", "revoked", "unknown" }) do
      local values = thread:get(name)
      for i = 1, #data.serials do
        totals[name][i] = totals[name][i] + values[i]
      end
    end
    local values = thread:get("last_good")
    for i = 1, #data.serials do
      totals.last_good[i] = math.max(totals.last_good[i], values[i])
    end
    values = thread:get("first_revoked")
    for i = 1, #data.serials do
      local seen = values[i]
      if seen > 0 and (totals.first_revoked[i] == 0 or seen < totals.first_revoked[i]) then
        totals.first_revoked[i] = seen
      end
    end
  end
  for i = 1, #data.serials do
    out:write(string.format(
      "cert %d %d %d %d %d %.6f %.6f\n",
      i, totals.sent[i], totals.good[i], totals.revoked[i], totals.unknown[i],
      totals.last_good[i], totals.first_revoked[i]
    ))
  end
  out:close()
end
