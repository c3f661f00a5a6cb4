"""Throughput/latency benchmark of the gateway against its floor.

Usage::

    scripts/bench                           # full run, 10 s per wrk run
    scripts/bench --quick                   # 3 s per wrk run
    scripts/bench --only direct,floor       # skip the gateway
    scripts/bench --variant pool=conf/x.yaml --json out.json

What it does, all on 127.0.0.1 and all started/stopped by this script:

* a static upstream: nginx (own config in a temp dir, ``daemon off``,
  ``worker_processes 1``) answering ``POST /v1/chat/completions`` with a
  fixed chat completion and ``POST /stream/v1/chat/completions`` with a
  fixed SSE stream (8 chunks, a usage chunk, ``[DONE]``);
* the floor: ``scripts/bench_floor.py``, a bare Flask + gevent + requests
  pass-through under ``gunicorn -k gevent -w 2``;
* the gateway (``gateway --config CFG --num_workers 2``) with a generated
  config (models ``bench`` and ``bench-stream`` pointing at nginx, priced so
  every call is billed), called with the master key (``gateway``), with a
  virtual key (``gateway-key``) and with a virtual key that has a budget
  (``gateway-budget``: every call holds and settles its worst case), with
  a key of a user in a team of an organization (``gateway-team``: no
  budgets; ``gateway-levels``: a budget on the key, user, team and
  organization, every one held and settled by every call); each
  gateway row writes its spend ledger to its own SQLite file; plus any
  ``--variant NAME=config.yaml`` (``{UPSTREAM}`` and ``{MASTER_KEY}`` in that
  file are replaced); ``cache-hit`` and ``cache-miss`` run it with the
  in-process response cache on, sending the same body each time or a
  different one each time; ``otel`` runs it with tracing on, exporting
  spans by OTLP/HTTP to the same nginx (which answers 200); ``messages`` calls
  Anthropic's ``/v1/messages`` on the same config (translated through chat);
  ``responses`` calls ``/v1/responses`` with ``previous_response_id`` (one
  stored-state read and write per call), translated through chat.

Each target is started in turn, checked with one real request per mode,
then loaded with wrk (POST, JSON body, c=1/16/64) non-stream and stream,
its gunicorn workers' RSS sampled, and stopped. One Markdown table is
printed (``--json PATH`` also writes it as JSON).

nginx and wrk come from Debian packages; the ``scripts/bench`` wrapper
installs them when missing. Everything started is killed on exit,
Ctrl-C and errors included (each server runs in its own process group).
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MASTER_KEY = "sk-bench-master"
UPSTREAM_KEY = "sk-bench-upstream"
CONCURRENCIES = (1, 16, 64)
MODES = ("non-stream", "stream")
MODEL_FOR_MODE = {"non-stream": "bench", "stream": "bench-stream"}
BUILTIN_TARGETS = ("direct", "floor", "gateway", "gateway-key", "gateway-budget", "gateway-team",
                   "gateway-levels", "cache-hit", "cache-miss", "otel", "messages", "responses")
# Rows that call another API surface of the same gateway: Anthropic's /v1/messages, translated to
# the OpenAI-compatible nginx upstream through chat (compare with the `gateway` row).
# `responses`: OpenAI's /v1/responses with previous_response_id (one stored-state read and one write
# per call), translated through chat.
SURFACE_TARGETS = {"messages": "/v1/messages", "responses": "/v1/responses"}
# What each keyed row's virtual key is generated with (POST /key/generate).
KEY_TARGETS = {"gateway-key": {"duration": "never"},
               "gateway-budget": {"duration": "never", "max_budget": 1e9},
               # a key of a user in a team of an organization: no budgets, then budgets at every level
               "gateway-team": {"duration": "never", "team_id": "bench-team", "user_id": "bench-user"},
               "gateway-levels": {"duration": "never", "team_id": "bench-team", "user_id": "bench-user",
                                  "max_budget": 1e9}}
# What the hierarchy rows make before their key (POST path, body); budgets only for gateway-levels.
HIERARCHY = [("/organization/new", {"organization_id": "bench-org", "organization_alias": "bench"}),
             ("/team/new", {"team_id": "bench-team", "organization_id": "bench-org"}),
             ("/user/new", {"user_id": "bench-user", "teams": ["bench-team"], "auto_create_key": False})]
LEVEL_BUDGETS = [("/organization/update", {"organization_id": "bench-org", "max_budget": 1e9}),
                 ("/team/update", {"team_id": "bench-team", "max_budget": 1e9}),
                 ("/user/update", {"user_id": "bench-user", "max_budget": 1e9})]
# Rows with the in-process response cache on: every request the same (hits after the first per
# worker) or every request different (a miss and a store each time).
CACHE_TARGETS = {"cache-hit": False, "cache-miss": True}
CACHE_CONF = """\
litellm_settings:
  cache: true
  cache_params: {type: local, ttl: 3600}
"""
WORKERS = 2
# --pin: the servers run one worker on CPU 1, wrk and nginx on CPU 0 (set in main()).
PIN = {"server": [], "load": []}

# --------------------------------------------------------------------------
# Static upstream payloads (valid OpenAI shapes: the gateway parses them).

CREATED = 1700000000
COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": CREATED,
    "model": "bench",
    "system_fingerprint": "fp_bench",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 9, "total_tokens": 18},
}


def _chunk(delta, finish_reason=None):
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": "bench-stream",
        "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def sse_body():
    """8 chat.completion.chunk events, a usage chunk and [DONE]."""
    pieces = ["Hello", "!", " How", " can", " I", " help", " you", " today?"]
    chunks = [_chunk({"role": "assistant", "content": pieces[0]})]
    chunks += [_chunk({"content": p}) for p in pieces[1:-1]]
    chunks.append(_chunk({"content": pieces[-1]}, finish_reason="stop"))
    usage = _chunk({})
    usage["choices"] = []
    usage["usage"] = {"prompt_tokens": 9, "completion_tokens": 8, "total_tokens": 17}
    chunks.append(usage)
    events = ["data: %s\n\n" % json.dumps(c, separators=(",", ":")) for c in chunks]
    events.append("data: [DONE]\n\n")
    return "".join(events)


def nginx_string(text):
    """Quote text as an nginx config string (no variables in it)."""
    assert "$" not in text
    return "'%s'" % (
        text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
    )


NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/nginx-client-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    server {{
        listen 127.0.0.1:{port};
        location = /v1/chat/completions {{
            default_type application/json;
            return 200 {completion};
        }}
        location = /stream/v1/chat/completions {{
            default_type text/event-stream;
            add_header Cache-Control no-cache;
            return 200 {stream};
        }}
        location = /v1/traces {{
            default_type application/x-protobuf;
            return 200 "";
        }}
        location / {{ return 404; }}
    }}
}}
"""

GATEWAY_CONF = """\
model_list:
  - model_name: bench
    litellm_params: {{model: openai/bench, api_base: "{upstream}/v1", api_key: {upstream_key},
                     input_cost_per_token: 0.0000025, output_cost_per_token: 0.00001}}
  - model_name: bench-stream
    litellm_params: {{model: openai/bench-stream, api_base: "{upstream}/stream/v1", api_key: {upstream_key},
                     input_cost_per_token: 0.0000025, output_cost_per_token: 0.00001}}
general_settings:
  master_key: {master_key}
"""

WRK_LUA = """\
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
"""
# Each request a different body (a counter in the message), so a cache never hits.
WRK_LUA_UNIQUE = WRK_LUA + """\
local counter = 0
local thread_id = tostring(math.random(1, 1000000000))
request = function()
  counter = counter + 1
  local body = string.gsub(wrk.body, "Say hello", "Say hello " .. thread_id .. "-" .. counter)
  return wrk.format(nil, nil, nil, body)
end
"""


def request_body(mode, surface=None, previous=None):
    body = {"model": MODEL_FOR_MODE[mode], "messages": [{"role": "user", "content": "Say hello"}]}
    if surface == "messages":
        body["max_tokens"] = 64  # Anthropic's Messages API requires it
    elif surface == "responses":
        body = {"model": MODEL_FOR_MODE[mode], "input": "Say hello", "previous_response_id": previous}
    if mode == "stream":
        body["stream"] = True
    return json.dumps(body, separators=(",", ":"))


def lua_string(text):
    return '"%s"' % text.replace("\\", "\\\\").replace('"', '\\"')


# --------------------------------------------------------------------------
# Processes


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg):
    print("[bench] " + msg, file=sys.stderr, flush=True)


class StartError(RuntimeError):
    """A server died or never became ready; .tail is the end of its log."""

    def __init__(self, msg, tail):
        super().__init__(msg)
        self.tail = tail

    def short(self):
        last = [l.strip() for l in self.tail.splitlines() if l.strip()]
        return "%s (%s)" % (self, last[-1][:160]) if last else str(self)


class Server:
    """A process group we started; stop() kills the whole group."""

    def __init__(self, name, argv, tmp, env=None, cwd=None):
        self.name = name
        self.argv = argv
        self.log_path = os.path.join(tmp, "%s.log" % name)
        self._log = open(self.log_path, "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self.ready_seconds = None

    def wait_ready(self, probe, timeout):
        """Call probe() until it returns True; record seconds since spawn."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StartError(
                    "%s exited with code %s before it was ready" % (self.name, self.proc.returncode),
                    self.log_tail())
            try:
                if probe():
                    self.ready_seconds = time.monotonic() - self.started
                    return self.ready_seconds
            except requests.RequestException:
                pass
            time.sleep(0.02)
        raise StartError("%s not ready after %.0f s" % (self.name, timeout), self.log_tail())

    def log_tail(self, lines=20):
        try:
            with open(self.log_path, "rb") as f:
                data = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join("    " + line for line in data[-lines:])

    def worker_pids(self):
        """The leaves of our process tree: gunicorn's (or nginx's) workers."""
        children = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % entry) as f:
                    stat = f.read()
            except OSError:
                continue
            # comm may contain spaces/parens: fields after the last ')'.
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(entry))
        leaves, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            kids = children.get(pid, [])
            if kids:
                todo.extend(kids)
            elif pid != self.proc.pid:
                leaves.append(pid)
        return sorted(leaves) or [self.proc.pid]

    def cpu_seconds(self):
        """CPU seconds (user + system) its workers have used so far."""
        ticks = 0
        for pid in self.worker_pids():
            try:
                with open("/proc/%d/stat" % pid) as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def rss_per_worker_mb(self):
        pids = self.worker_pids()
        total_kb = 0
        for pid in pids:
            try:
                with open("/proc/%d/status" % pid) as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total_kb += int(line.split()[1])
                            break
            except OSError:
                pass
        return total_kb / 1024.0 / len(pids), len(pids)

    def stop(self):
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session: pgid == pid
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            # Leader gone; make sure no straggler of the group survives.
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            break
        self.proc = None
        self._log.close()


# --------------------------------------------------------------------------
# Checks of one real request per mode (so wrk never measures an error page)


def check_response(session, url, mode, headers, surface=None, previous=None):
    resp = session.post(url, data=request_body(mode, surface, previous), headers=headers, timeout=30, stream=True)
    try:
        if resp.status_code != 200:
            return "HTTP %d: %s" % (resp.status_code, resp.text[:300])
        if surface == "messages":
            return check_messages(resp, mode)
        if surface == "responses":
            return check_responses(resp, mode)
        if mode == "non-stream":
            data = resp.json()
            content = data["choices"][0]["message"]["content"]
            if not content:
                return "empty content: %r" % data
            return None
        text = resp.content.decode("utf-8")
        events = [l[5:].strip() for l in text.splitlines() if l.startswith("data:")]
        if not events or events[-1] != "[DONE]":
            return "stream does not end with data: [DONE]: %r" % text[-300:]
        chunks = [json.loads(e) for e in events[:-1]]
        content = "".join(
            (c.get("choices") or [{}])[0].get("delta", {}).get("content") or "" for c in chunks
        )
        if not content or any(c.get("object") != "chat.completion.chunk" for c in chunks):
            return "unexpected stream: %r" % text[:300]
        return None
    except (ValueError, KeyError, IndexError, TypeError) as e:
        return "bad body (%s): %r" % (e, resp.text[:300])
    finally:
        resp.close()


def check_messages(resp, mode):
    """An Anthropic Messages answer, or its event stream ending with message_stop, with text."""
    if mode == "non-stream":
        data = resp.json()
        return None if data["content"][0]["text"] else "empty content: %r" % data
    text = resp.content.decode("utf-8")
    events = [json.loads(l[5:]) for l in text.splitlines() if l.startswith("data:")]
    content = "".join(e["delta"].get("text", "") for e in events if e.get("type") == "content_block_delta")
    if not events or events[-1].get("type") != "message_stop" or not content:
        return "unexpected Messages stream: %r" % text[-300:]
    return None


def check_responses(resp, mode):
    """A completed Response with text, or its event stream ending with response.completed."""
    if mode == "non-stream":
        data = resp.json()
        ok = data["status"] == "completed" and data["output"][0]["content"][0]["text"]
        return None if ok else "unexpected Response: %r" % data
    text = resp.content.decode("utf-8")
    events = [json.loads(l[5:]) for l in text.splitlines() if l.startswith("data:")]
    if not events or events[-1].get("type") != "response.completed":
        return "unexpected Responses stream: %r" % text[-300:]
    return None


def stored_response(session, base):
    """The id of a response stored on the gateway at `base`, for previous_response_id."""
    resp = session.post(base + "/v1/responses", json={"model": "bench", "input": "Say hello"}, timeout=30,
                        headers={"Authorization": "Bearer " + MASTER_KEY})
    if resp.status_code != 200:
        raise StartError("/v1/responses answered %d: %s" % (resp.status_code, resp.text[:200]), "")
    return resp.json()["id"]


# --------------------------------------------------------------------------
# wrk

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def to_ms(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError("bad wrk time %r" % text)
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(out):
    res = {"rps": None, "p50_ms": None, "p99_ms": None, "requests": None,
           "non2xx": 0, "socket_errors": {}}
    m = re.search(r"Requests/sec:\s*([0-9.]+)", out)
    if m:
        res["rps"] = float(m.group(1))
    m = re.search(r"^\s*(\d+) requests in", out, re.M)
    if m:
        res["requests"] = int(m.group(1))
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(r"^\s*%s(?:\.0+)?%%\s+(\S+)" % pct, out, re.M)
        if m:
            res[key] = to_ms(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    if m:
        res["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors:\s*(.*)", out)
    if m:
        for kind, n in re.findall(r"(\w+) (\d+)", m.group(1)):
            if int(n):
                res["socket_errors"][kind] = int(n)
    return res


def run_wrk(wrk, url, lua, conns, duration, timeout):
    threads = 1 if conns == 1 else 2
    argv = PIN["load"] + [wrk, "-t%d" % threads, "-c%d" % conns, "-d%gs" % duration,
            "--timeout", "%gs" % timeout, "--latency", "-s", lua, url]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + timeout + 60)
    res = parse_wrk(proc.stdout)
    res["errors"] = []
    if proc.returncode != 0 or res["rps"] is None:
        res["errors"].append("wrk exit %d: %s" % (proc.returncode, (proc.stderr or proc.stdout)[-300:]))
    if res["non2xx"]:
        res["errors"].append("%d non-2xx" % res["non2xx"])
    for kind, n in res["socket_errors"].items():
        res["errors"].append("%d socket %s" % (n, kind))
    res["raw"] = proc.stdout
    return res


# --------------------------------------------------------------------------
# Targets


class Bench:
    def __init__(self, args, tmp):
        self.args = args
        self.tmp = tmp
        self.servers = []
        self.http = requests.Session()
        self.http.trust_env = False
        self.nginx_port = None
        self.rows = []  # dicts, in print order
        self.wrk = shutil.which("wrk")
        self.lua = self.write_lua("master", MASTER_KEY)

    def write_lua(self, name, key, unique=False, surface=None, previous=None):
        """wrk scripts (one per mode) that call with `key` (each request different if `unique`)."""
        paths = {}
        for mode in MODES:
            path = os.path.join(self.tmp, "wrk-%s-%s.lua" % (name, mode))
            body = lua_string(request_body(mode, surface, previous))
            with open(path, "w") as f:
                f.write((WRK_LUA_UNIQUE if unique else WRK_LUA).format(body=body, key=key))
            paths[mode] = path
        return paths

    @property
    def upstream(self):
        return "http://127.0.0.1:%d" % self.nginx_port

    def start(self, name, argv, env=None, cwd=None):
        srv = Server(name, argv, self.tmp, env=env, cwd=cwd)
        self.servers.append(srv)
        return srv

    def stop(self, srv):
        srv.stop()
        if srv in self.servers:
            self.servers.remove(srv)

    def stop_all(self):
        for srv in reversed(self.servers):
            try:
                srv.stop()
            except Exception as e:  # keep stopping the others
                log("stopping %s: %s" % (srv.name, e))
        self.servers = []

    # -- servers -----------------------------------------------------------

    def start_nginx(self):
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.nginx_port = free_port()
        conf = os.path.join(self.tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(
                tmp=self.tmp, port=self.nginx_port,
                completion=nginx_string(json.dumps(COMPLETION, separators=(",", ":"))),
                stream=nginx_string(sse_body()),
            ))
        srv = self.start("nginx", PIN["load"] + [nginx, "-p", self.tmp, "-e", os.path.join(self.tmp, "nginx-error.log"), "-c", conf])
        url = self.upstream + "/v1/chat/completions"
        srv.wait_ready(lambda: self.http.post(url, data="{}", timeout=2).status_code == 200,
                       self.args.ready_timeout)
        return srv

    def start_floor(self):
        port = free_port()
        env = dict(os.environ, BENCH_UPSTREAM=self.upstream, BENCH_UPSTREAM_KEY=UPSTREAM_KEY)
        argv = PIN["server"] + [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", str(WORKERS),
                "--worker-connections", "1000", "--chdir", os.path.join(ROOT, "scripts"),
                "-b", "127.0.0.1:%d" % port, "--log-level", "warning", "bench_floor:app"]
        srv = self.start("floor", argv, env=env, cwd=ROOT)
        url = "http://127.0.0.1:%d/v1/chat/completions" % port
        body = request_body("non-stream")
        srv.wait_ready(lambda: self.http.post(url, data=body, timeout=2).status_code == 200,
                       self.args.ready_timeout)
        return srv, "http://127.0.0.1:%d" % port

    def gateway_config(self, name, path):
        if path is None:
            text = GATEWAY_CONF.format(upstream=self.upstream, upstream_key=UPSTREAM_KEY,
                                       master_key=MASTER_KEY)
            if name in CACHE_TARGETS:
                text += CACHE_CONF
            if name == "otel":
                text += "  otel: true\n"  # under general_settings, the file's last mapping
        else:
            with open(path) as f:
                text = f.read().replace("{UPSTREAM}", self.upstream).replace("{MASTER_KEY}", MASTER_KEY)
        cfg = os.path.join(self.tmp, "config-%s.yaml" % re.sub(r"[^\w.-]", "_", name))
        with open(cfg, "w") as f:
            f.write(text)
        return cfg

    def start_gateway(self, name, config_path):
        port = free_port()
        cfg = self.gateway_config(name, config_path)
        exe = shutil.which("gateway")
        base = [exe] if exe else [sys.executable, "-m", "gateway.cli"]
        argv = base + ["--config", cfg, "--host", "127.0.0.1", "--port", str(port),
                       "--num_workers", str(WORKERS)]
        argv = PIN["server"] + argv
        # each gateway row has a key store and spend ledger of its own
        env = dict(os.environ, DATABASE_URL="sqlite:///%s" % os.path.join(
            self.tmp, "gateway-%s.sqlite" % re.sub(r"[^\w.-]", "_", name)))
        if name == "otel":  # spans go to nginx, which answers every export with 200
            env.update(OTEL_EXPORTER_OTLP_ENDPOINT=self.upstream, OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
        srv = self.start(name, argv, env=env, cwd=ROOT)
        url = "http://127.0.0.1:%d/health/readiness" % port
        hdr = {"Authorization": "Bearer " + MASTER_KEY}
        srv.wait_ready(lambda: self.http.get(url, headers=hdr, timeout=2).status_code == 200,
                       self.args.ready_timeout)
        return srv, "http://127.0.0.1:%d" % port

    # -- load --------------------------------------------------------------

    def virtual_key(self, base, rules, budgets=False):
        """A virtual key generated on the gateway at `base` (its rules from KEY_TARGETS); one with a
        team_id gets its organization, team and user first (with budgets when `budgets`)."""
        if rules.get("team_id"):
            for path, body in HIERARCHY + (LEVEL_BUDGETS if budgets else []):
                resp = self.http.post(base + path, json=body, timeout=10,
                                      headers={"Authorization": "Bearer " + MASTER_KEY})
                if resp.status_code != 200:
                    raise StartError("%s answered %d: %s" % (path, resp.status_code, resp.text[:200]), "")
        resp = self.http.post(base + "/key/generate", json=rules, timeout=10,
                              headers={"Authorization": "Bearer " + MASTER_KEY})
        if resp.status_code != 200:
            raise StartError("key/generate answered %d: %s" % (resp.status_code, resp.text[:200]), "")
        return resp.json()["key"]

    def measure(self, target, srv, urls, key=MASTER_KEY, lua=None, surface=None, previous=None):
        """Check + load one target in both modes; append its rows."""
        lua = lua or self.lua
        hdr = {"Content-Type": "application/json", "Authorization": "Bearer " + key}
        rows = []
        for mode in MODES:
            row = {"target": target, "mode": mode, "runs": {}, "errors": [],
                   "ready_s": srv.ready_seconds}
            rows.append(row)
            err = check_response(self.http, urls[mode], mode, hdr, surface, previous)
            if err:
                row["errors"].append("check failed: " + err)
                log("%s %s: check failed, skipping load: %s" % (target, mode, err))
                continue
            if self.args.warmup > 0:
                run_wrk(self.wrk, urls[mode], lua[mode], 16, self.args.warmup, self.args.timeout)
            for c in CONCURRENCIES:
                log("%s %s c=%d ..." % (target, mode, c))
                cpu_before = srv.cpu_seconds()
                res = run_wrk(self.wrk, urls[mode], lua[mode], c, self.args.duration, self.args.timeout)
                if res["requests"]:
                    # The servers' own CPU per call: far steadier than RPS on a machine whose
                    # cores wrk and nginx share.
                    res["cpu_us_per_call"] = (srv.cpu_seconds() - cpu_before) * 1e6 / res["requests"]
                raw = res.pop("raw")
                with open(os.path.join(self.tmp, "wrk-%s-%s-c%d.txt" % (target, mode, c)), "w") as f:
                    f.write(raw)
                row["runs"][c] = res
                row["errors"] += ["c=%d: %s" % (c, e) for e in res["errors"]]
                log("  %s rps, p50 %s ms, p99 %s ms%s" % (
                    fmt(res["rps"], 0), fmt(res["p50_ms"], 2), fmt(res["p99_ms"], 2),
                    ("  ERRORS: " + "; ".join(res["errors"])) if res["errors"] else ""))
        rss, n = srv.rss_per_worker_mb()
        for row in rows:
            row["rss_mb_per_worker"] = rss
            row["workers"] = n
        self.rows += rows

    def run(self, targets):
        log("starting nginx")
        nginx = self.start_nginx()
        log("nginx ready on %s in %.2f s" % (self.upstream, nginx.ready_seconds))
        for target, kind, cfg in targets:
            try:
                if kind == "direct":
                    urls = {"non-stream": self.upstream + "/v1/chat/completions",
                            "stream": self.upstream + "/stream/v1/chat/completions"}
                    self.measure(target, nginx, urls)
                    continue
                log("starting %s" % target)
                if kind == "floor":
                    srv, base = self.start_floor()
                else:
                    srv, base = self.start_gateway(target, cfg)
                log("%s ready in %.2f s" % (target, srv.ready_seconds))
                url = base + "/v1/chat/completions"
                try:
                    if target in KEY_TARGETS:
                        key = self.virtual_key(base, KEY_TARGETS[target], budgets=target == "gateway-levels")
                        self.measure(target, srv, {"non-stream": url, "stream": url}, key,
                                     self.write_lua(target, key))
                    elif target in SURFACE_TARGETS:
                        url = base + SURFACE_TARGETS[target]
                        previous = stored_response(self.http, base) if target == "responses" else None
                        self.measure(target, srv, {"non-stream": url, "stream": url}, MASTER_KEY,
                                     self.write_lua(target, MASTER_KEY, surface=target, previous=previous),
                                     surface=target, previous=previous)
                    elif target in CACHE_TARGETS:
                        self.measure(target, srv, {"non-stream": url, "stream": url}, MASTER_KEY,
                                     self.write_lua(target, MASTER_KEY, unique=CACHE_TARGETS[target]))
                    else:
                        self.measure(target, srv, {"non-stream": url, "stream": url})
                finally:
                    self.stop(srv)
            except StartError as e:
                log("%s: %s; its log ends with:\n%s" % (target, e, e.tail))
                for mode in MODES:
                    self.rows.append({"target": target, "mode": mode, "runs": {},
                                      "errors": ["start failed: " + e.short()],
                                      "ready_s": None, "rss_mb_per_worker": None, "workers": None})


# --------------------------------------------------------------------------
# Report


def fmt(v, digits):
    if v is None:
        return "-"
    return "%.*f" % (digits, v)


def get(row, c, key):
    return row["runs"].get(c, {}).get(key)


def derive(rows):
    """Add the ratio vs the floor and the p50 overhead vs direct."""
    floor_ns = next((r for r in rows if r["target"] == "floor" and r["mode"] == "non-stream"), None)
    floor_rps = get(floor_ns, 64, "rps") if floor_ns else None
    direct = {r["mode"]: get(r, 1, "p50_ms") for r in rows if r["target"] == "direct"}
    for r in rows:
        rps = get(r, 64, "rps")
        r["ratio_vs_floor_c64"] = rps / floor_rps if rps and floor_rps else None
        p50, base = get(r, 1, "p50_ms"), direct.get(r["mode"])
        r["p50_overhead_c1_ms"] = p50 - base if p50 is not None and base is not None else None


COLUMNS = ["target", "mode", "c=1 RPS", "c=1 p50 ms", "c=1 p99 ms", "c=16 RPS",
           "c=64 RPS", "c=64 p50 ms", "c=64 p99 ms", "errors", "c=64 RPS / floor non-stream",
           "p50 overhead c=1 vs direct ms", "c=64 CPU us/call", "RSS/worker MB", "ready s"]


def _short(text, limit=100):
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def table(rows):
    out = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * 7 + ["---"] + ["---:"] * 5) + "|"]
    for r in rows:
        flag = " (!)" if r["errors"] else ""
        errors = "; ".join(_short(e) for e in r["errors"]) if r["errors"] else "0"
        cells = [
            r["target"] + flag, r["mode"],
            fmt(get(r, 1, "rps"), 0), fmt(get(r, 1, "p50_ms"), 2), fmt(get(r, 1, "p99_ms"), 2),
            fmt(get(r, 16, "rps"), 0),
            fmt(get(r, 64, "rps"), 0), fmt(get(r, 64, "p50_ms"), 2), fmt(get(r, 64, "p99_ms"), 2),
            errors.replace("|", "/"),
            fmt(r["ratio_vs_floor_c64"], 2),
            fmt(r["p50_overhead_c1_ms"], 2),
            fmt(get(r, 64, "cpu_us_per_call"), 0),
            fmt(r["rss_mb_per_worker"], 1),
            fmt(r["ready_s"], 2),
        ]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def machine_info():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    def version(argv):
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": version([shutil.which("nginx") or "/usr/sbin/nginx", "-v"]).replace("nginx version: ", ""),
        "wrk": version([shutil.which("wrk") or "wrk", "-v"]).split(" [")[0],
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# --------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Benchmark the gateway against a static nginx upstream (direct) and a\n"
                    "minimal Flask+gevent+requests pass-through (floor) with wrk at c=1/16/64,\n"
                    "non-stream and stream. Prints one Markdown table. Set PYTHON to pick the\n"
                    "interpreter (the gateway falls back to `$PYTHON -m gateway.cli`).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="targets: direct (nginx itself), floor (scripts/bench_floor.py), gateway\n"
               "(generated config, master key), gateway-key (a virtual key), gateway-budget\n"
               "(a virtual key with a budget), gateway-team / gateway-levels (a key of a user\n"
               "in a team of an organization; budgets at every level), cache-hit / cache-miss (in-process response\n"
               "cache on; the same body each time, or a different one), otel (tracing on,\n"
               "spans exported to the nginx upstream), messages (Anthropic's /v1/messages, translated\n"
               "through chat to the same upstream), responses (OpenAI's /v1/responses with\n"
               "previous_response_id, through chat), and each --variant NAME.\n"
               "Stream rows' ratio is against the floor's NON-stream c=64 RPS.",
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    p.add_argument("--quick", action="store_true", help="3 s per wrk run and 1 s warm-up")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds of unreported c=16 load before each mode (default 2; 1 with --quick; 0 = none)")
    p.add_argument("--timeout", type=float, default=5.0,
                   help="wrk per-request timeout in seconds; slower answers count as errors (default 5)")
    p.add_argument("--only", default=None,
                   help="comma list of targets to run, e.g. direct,floor (default: all)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=CONFIG.yaml",
                   help="extra gateway row started with this config ({UPSTREAM} and {MASTER_KEY} "
                        "are replaced); repeatable; 'gateway=PATH' replaces the default config")
    p.add_argument("--pin", action="store_true",
                   help="one server worker pinned to CPU 1, wrk and nginx to CPU 0 (taskset): steadier "
                        "CPU-per-call numbers for comparing two trees on a 2-core machine")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    p.add_argument("--ready-timeout", type=float, default=60.0,
                   help="seconds to wait for each server to be ready (default 60)")
    p.add_argument("--keep-tmp", action="store_true",
                   help="keep the temp dir (configs, server logs, raw wrk output)")
    args = p.parse_args(argv)
    if args.quick:
        args.duration = 3.0
    if args.warmup is None:
        args.warmup = 1.0 if args.quick else 2.0
    if args.duration <= 0:
        p.error("--duration must be > 0")
    if args.pin:
        global WORKERS
        WORKERS = 1
        PIN["server"], PIN["load"] = ["taskset", "-c", "1"], ["taskset", "-c", "0"]

    targets = [("direct", "direct", None), ("floor", "floor", None), ("gateway", "gateway", None),
               ("gateway-key", "gateway", None), ("gateway-budget", "gateway", None),
               ("gateway-team", "gateway", None), ("gateway-levels", "gateway", None),
               ("cache-hit", "gateway", None), ("cache-miss", "gateway", None), ("otel", "gateway", None),
               ("messages", "gateway", None), ("responses", "gateway", None)]
    for spec in args.variant:
        name, sep, path = spec.partition("=")
        name = name.strip()
        if not sep or not name or not path:
            p.error("--variant wants NAME=CONFIG.yaml, got %r" % spec)
        if not os.path.isfile(path):
            p.error("--variant %s: no such file %s" % (name, path))
        path = os.path.abspath(path)
        if name in BUILTIN_TARGETS:
            p.error("--variant name %r is reserved" % name)
        if name == "gateway":
            targets[2] = ("gateway", "gateway", path)
        elif any(t[0] == name for t in targets):
            p.error("--variant %s given twice" % name)
        else:
            targets.append((name, "gateway", path))
    if args.only:
        wanted = [t.strip() for t in args.only.split(",") if t.strip()]
        known = [t[0] for t in targets]
        unknown = [t for t in wanted if t not in known]
        if unknown:
            p.error("--only: unknown target(s) %s (known: %s)" % (", ".join(unknown), ", ".join(known)))
        targets = [t for t in targets if t[0] in wanted]
    args.targets = targets
    return args


def _raise_exit(signum, frame):
    log("got signal %d, stopping" % signum)
    raise SystemExit(128 + signum)


def main(argv=None):
    args = parse_args(argv)
    for tool in ("wrk",):
        if not shutil.which(tool):
            sys.exit("bench: %s not found (scripts/bench installs it with apt-get)" % tool)
    if not (shutil.which("nginx") or os.path.exists("/usr/sbin/nginx")):
        sys.exit("bench: nginx not found (scripts/bench installs it with apt-get)")
    # Ctrl-C must reach us even if started with SIGINT ignored (e.g. `cmd &`).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)

    tmp = tempfile.mkdtemp(prefix="gateway-bench-")
    bench = Bench(args, tmp)
    ok = False
    try:
        bench.run(args.targets)
        ok = True
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except StartError as e:  # nginx itself did not start
        log("%s; its log ends with:\n%s" % (e, e.tail))
        return 2
    finally:
        bench.stop_all()
        if args.keep_tmp or not ok or any(r["errors"] for r in bench.rows):
            log("temp dir kept: %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    derive(bench.rows)
    info = machine_info()
    line = ("machine: nproc=%(nproc)s, cpu=%(cpu)s, kernel=%(kernel)s, python %(python)s, "
            "nginx %(nginx)s, %(wrk)s, %(date)s" % info)
    print(line)
    print("wrk: %g s per run, c=%s, POST /v1/chat/completions, %d gunicorn gevent worker(s) per server%s"
          % (args.duration, "/".join(map(str, CONCURRENCIES)), WORKERS,
             " (pinned: servers on CPU 1, wrk and nginx on CPU 0)" if args.pin else ""))
    print()
    print(table(bench.rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "duration_s": args.duration, "columns": COLUMNS,
                       "rows": bench.rows}, f, indent=2, default=str)
            f.write("\n")
    return 1 if any(r["errors"] for r in bench.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
