// Drive the standalone fake-ws-server from Node tests (node:test, Jest, Vitest...).
//
// Starts the `fake-ws-server` binary on free ports, reads the URLs from its ready line,
// and wraps its admin HTTP API with the global fetch of Node 18+. No dependencies.
//
//   import { startFakeWsServer } from "./fake-ws-server.mjs";
//
//   const fake = await startFakeWsServer();      // binary from $FAKE_WS_SERVER_BIN or PATH
//   const client = new WebSocket(fake.wsUrl);    // the client under test
//   const conn = await fake.nextConnection();
//   await conn.expect({ json_includes: { type: "subscribe" } });
//   await conn.send({ type: "subscribed" });
//   await fake.stop({ verify: true });            // what the Rust drop check would report

import { spawn } from "node:child_process";
import { createInterface } from "node:readline";

// How long start waits for the ready line, and how much longer than a wait's own
// deadline an HTTP call may take before the helper gives up on the server.
const READY_TIMEOUT_MS = 30_000;
const HTTP_SLACK_MS = 5_000;

/** The admin API refused a request; the message is the server's own. */
export class FakeWsError extends Error {
  constructor(status, message) {
    super(message);
    this.name = "FakeWsError";
    this.status = status;
  }
}

/** An expectation did not hold; the message is the fake's, transcript included. */
export class ExpectationFailed extends Error {
  constructor(message) {
    super(message);
    this.name = "ExpectationFailed";
  }
}

/**
 * Starts the binary on free ports and resolves once it serves.
 * @param {{scenario?: string, binary?: string, args?: string[]}} [options]
 */
export async function startFakeWsServer(options = {}) {
  const binary = options.binary ?? process.env.FAKE_WS_SERVER_BIN ?? "fake-ws-server";
  const args = ["--port", "0", "--admin-port", "0", ...(options.args ?? [])];
  if (options.scenario) args.push("--scenario", options.scenario);
  const child = spawn(binary, args, { stdio: ["ignore", "pipe", "pipe"] });
  const stderr = [];
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk) => {
    stderr.push(chunk);
    if (stderr.length > 200) stderr.shift();
  });
  const ready = await readyLine(child, binary, stderr);
  return new FakeWsServer(child, ready);
}

export class FakeWsServer {
  constructor(child, ready) {
    this.child = child;
    this.wsUrl = ready.ws_url;
    this.adminUrl = ready.admin_url.replace(/\/$/, "");
  }

  /** The WebSocket URL of another path on this fake. */
  urlFor(path) {
    const url = new URL(this.wsUrl);
    url.pathname = path;
    url.search = "";
    return url.toString();
  }

  /** Mounts a rule (the scenario file's shape); resolves to its id. */
  async mountRule(rule) {
    return (await this.call("POST", "/rules", rule)).id;
  }

  async mountHandshakeRule(rule) {
    return (await this.call("POST", "/handshake-rules", rule)).id;
  }

  /** The next connection not yet handed out, waiting up to `timeoutMs`. */
  async nextConnection(timeoutMs = 5_000) {
    const info = await this.call("POST", "/connections/next", undefined, timeoutMs);
    return new Connection(this, info);
  }

  async connections() {
    return this.call("GET", "/connections");
  }

  async attempts() {
    return (await this.call("GET", "/attempts")).attempts;
  }

  /**
   * Waits until `count` attempts were recorded since the start (accepted ones count):
   * `{attempts, log}`. An attempt is recorded a moment after the client sees its
   * outcome, so wait rather than read `attempts()`.
   */
  waitForAttempts(count, timeoutMs = 5_000) {
    return this.call("POST", `/attempts/wait?count=${count}`, undefined, timeoutMs);
  }

  /** Messages matching `matcher` never count as unlooked-at, on every connection. */
  allow(matcher) {
    return this.call("POST", "/allow", { match: matcher });
  }

  /** Sends a JSON message to every open connection; resolves to how many got it. */
  async broadcast(message) {
    return (await this.call("POST", "/broadcast", { json: message })).written;
  }

  /** New connections are reset before the handshake (recorded as `refused`). */
  refuse() {
    return this.call("POST", "/server/refuse");
  }

  /** Answers handshakes again, after `refuse` or `hang`. */
  accept() {
    return this.call("POST", "/server/accept");
  }

  /** Resets every live connection; new ones are accepted. */
  reset() {
    return this.call("POST", "/server/reset");
  }

  hang() {
    return this.call("POST", "/server/hang");
  }

  /** Refuse and reset: the fake is down, the port stays bound. */
  stopServing() {
    return this.call("POST", "/server/stop");
  }

  restart() {
    return this.call("POST", "/server/restart");
  }

  /** What the drop check would report; empty when all is well. */
  async verify() {
    return (await this.call("POST", "/verify")).problems;
  }

  /** Stops the process; with `verify`, first throws if the fake found problems. */
  async stop({ verify = false } = {}) {
    try {
      if (verify) {
        const problems = await this.verify();
        if (problems.length > 0) {
          throw new ExpectationFailed(`the fake found problems:\n${problems.join("\n")}`);
        }
      }
    } finally {
      await terminate(this.child);
    }
  }

  async call(method, path, body, timeoutMs) {
    let url = this.adminUrl + path;
    if (timeoutMs !== undefined) {
      url += `${url.includes("?") ? "&" : "?"}timeout_ms=${Math.round(timeoutMs)}`;
    }
    const response = await fetch(url, {
      method,
      headers: { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout((timeoutMs ?? 0) + HTTP_SLACK_MS),
    });
    const raw = await response.text();
    if (!response.ok) throw new FakeWsError(response.status, errorOf(raw));
    return raw ? JSON.parse(raw) : undefined;
  }
}

/** The fake's side of one client connection, by its id. */
export class Connection {
  constructor(server, info) {
    this.server = server;
    this.info = info;
    this.id = info.id;
  }

  /** The first message not yet taken that matches; rejects with the transcript. */
  expect(matcher, timeoutMs = 5_000) {
    return this.take("/expect", { match: matcher }, timeoutMs);
  }

  /** The next message not yet taken, which must match. */
  expectNext(matcher, timeoutMs = 5_000) {
    return this.take("/expect", { match: matcher, next: true }, timeoutMs);
  }

  /** The next message not yet taken, whatever it is; null once the connection ended
   * and nothing is left. */
  recv(timeoutMs = 5_000) {
    return this.take("/messages/next", undefined, timeoutMs);
  }

  /** Sends a JSON message to the client (`{text}` for raw text). */
  send(message) {
    return this.post("/send", { json: message });
  }

  sendText(text) {
    return this.post("/send", { text });
  }

  close(code = 1000, reason = "") {
    return this.post("/close", { code, reason });
  }

  /** Drops the TCP connection without a close frame (the client sees 1006). */
  abort() {
    return this.post("/abort");
  }

  /** Stops reading: no answers, no pongs. */
  stall() {
    return this.post("/stall");
  }

  resume() {
    return this.post("/resume");
  }

  /** Slows the link down, both ways: each byte waits `latencyMs` plus up to
   * `jitterMs` more, at most `bytesPerSec` go through a second. */
  impair({ latencyMs = 0, jitterMs = 0, bytesPerSec } = {}) {
    const body = { latency_ms: latencyMs, jitter_ms: jitterMs };
    if (bytesPerSec !== undefined) body.bytes_per_sec = bytesPerSec;
    return this.post("/impair", body);
  }

  clearImpairment() {
    return this.post("/clear-impairment");
  }

  /** Unplugs the cable: nothing passes either way, nothing says so, until heal(). */
  blackhole() {
    return this.post("/blackhole");
  }

  /** Plugs it back in: what was held both ways goes on, in order. */
  heal() {
    return this.post("/heal");
  }

  /** Sends a frame RFC 6455 forbids: "invalid_utf8", "reserved_bits",
   * "masked_frame", "oversized_control", "fragmented_control",
   * "truncated_then_reset", "close_code" (with `{ code }`) or "raw" (`{ base64 }`). */
  sendFault(fault, fields = {}) {
    return this.post("/fault", { fault, ...fields });
  }

  /** Waits until the connection ended: `{how, code, reason}`. */
  waitClosed(timeoutMs = 5_000) {
    return this.server.call("POST", `/connections/${this.id}/wait-closed`, undefined, timeoutMs);
  }

  /** Every frame so far, one a line, as failure messages show it. */
  async transcript() {
    return (await this.server.call("GET", `/connections/${this.id}/transcript`)).rendered;
  }

  async take(route, body, timeoutMs) {
    try {
      const found = await this.server.call(
        "POST",
        `/connections/${this.id}${route}`,
        body,
        timeoutMs,
      );
      return found.message;
    } catch (error) {
      if (error instanceof FakeWsError && (error.status === 408 || error.status === 409)) {
        throw new ExpectationFailed(error.message);
      }
      throw error;
    }
  }

  post(route, body = {}) {
    // Every connection route takes a JSON body; `{}` when there is nothing to say.
    return this.server.call("POST", `/connections/${this.id}${route}`, body);
  }
}

function readyLine(child, binary, stderr) {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    const fail = (why) => {
      clearTimeout(timer);
      child.kill("SIGKILL");
      reject(new Error(`${binary} ${why}; stderr:\n${stderr.join("")}`));
    };
    const timer = setTimeout(
      () => fail(`printed no ready line within ${READY_TIMEOUT_MS / 1000} s`),
      READY_TIMEOUT_MS,
    );
    child.once("error", (error) => fail(`could not start: ${error.message}`));
    child.once("exit", (code) => fail(`exited with ${code} before it was ready`));
    lines.once("line", (line) => {
      clearTimeout(timer);
      child.removeAllListeners("exit");
      try {
        resolve(JSON.parse(line));
      } catch (error) {
        reject(new Error(`${binary}'s ready line is not JSON: ${line}`));
      }
    });
  });
}

function terminate(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const killer = setTimeout(() => child.kill("SIGKILL"), 5_000);
    child.once("exit", () => {
      clearTimeout(killer);
      resolve();
    });
    child.kill("SIGTERM");
  });
}

function errorOf(raw) {
  try {
    return JSON.parse(raw).error ?? raw;
  } catch {
    return raw;
  }
}
