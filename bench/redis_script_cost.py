#!/usr/bin/env python3
"""Instructions per run of the Redis store's check script inside redis-server (issue 13).

Runs a redis-server under valgrind's callgrind on a free loopback port, loads the check script
(kPrelude + kCheck from src/store/redis/scripts.h, or from the file given) and runs it N times
inside one EVAL (the script granting one request per run, as try_acquire does), then again 0
times; the difference over N is the script's own cost in instructions, independent of the
machine's load. For scale it does the same for the least a grant needs (TIME, GET the state,
HGET the quota, ZADD the entry, SET the state).

Usage: bench/redis_script_cost.py [scripts.h] [N]   (needs valgrind and redis-server)
"""
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, '..', 'src', 'store', 'redis',
                                                            'scripts.h')
N = int(sys.argv[2]) if len(sys.argv) > 2 else 1500
KEYS = ['b:{m}:t', 'b:{m}:z', 'b:{m}:e', 'b:{m}:x', 'b:{cfg}:meta', 'b:{cfg}:quotas',
        'b:{cfg}:models']
# ARGV of a grant: name, server time, -, midnights, mode 2 (check and record), input, output.
ARGS = "{'limited', '', '', '1796025600000000 1796112000000000', '2', '100', '0'}"

MINIMAL = """
local t = redis.call('TIME')
local now_text = t[1] .. string.rep('0', 6 - #t[2]) .. t[2]
local raw = redis.call('GET', KEYS[1])
local qv = redis.call('HGET', KEYS[6], A_[1])
local seq = 1
if raw then seq = struct.unpack('<d', raw) + 1 end
redis.call('ZADD', KEYS[2], now_text, seq .. ' ' .. A_[6] .. ' ' .. A_[7])
redis.call('SET', KEYS[1], struct.pack('<d', seq))
return {1, seq}
"""


def lua(src, name):
    return re.search(r'inline constexpr const char\* %s = R"lua\((.*?)\)lua";' % name, src,
                     re.S).group(1)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def instructions(body, n):
    port = str(free_port())
    with tempfile.TemporaryDirectory() as work:
        out = os.path.join(work, 'callgrind.out')
        server = subprocess.Popen(
            ['valgrind', '--tool=callgrind', '--callgrind-out-file=' + out, 'redis-server',
             '--port', port, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cli = ['redis-cli', '-p', port]
        for _ in range(300):
            if subprocess.run(cli + ['ping'], capture_output=True, text=True).stdout.strip() \
                    == 'PONG':
                break
            time.sleep(0.1)
        subprocess.run(cli + ['hset', KEYS[5], 'limited', '1000000000 1000000000000 0 0 0 0'],
                       capture_output=True)
        # The script reads ARGV through A_ (a loop inside one EVAL cannot set ARGV).
        chunk = 'local A_ = ' + ARGS + ' ' + body.replace('ARGV[', 'A_[')
        loop = 'local f = assert(loadstring(ARGV[1])) for i = 1, %d do f() end return 1' % n
        r = subprocess.run(cli + ['eval', loop, str(len(KEYS))] + KEYS + [chunk],
                           capture_output=True, text=True)
        if r.stdout.strip() != '1':
            sys.exit('the script failed: ' + r.stdout[:500])
        subprocess.run(cli + ['shutdown', 'nosave'], capture_output=True)
        server.wait()
        return int(re.search(r'(?:summary|totals): (\d+)', open(out).read()).group(1))


def per_run(body):
    return (instructions(body, N) - instructions(body, 0)) / N


src = open(SOURCE).read()
check = lua(src, 'kPrelude') + lua(src, 'kCheck')
print('check script, one grant: %8.0f instructions per run' % per_run(check))
print('least a grant needs:     %8.0f instructions per run' % per_run(MINIMAL))
