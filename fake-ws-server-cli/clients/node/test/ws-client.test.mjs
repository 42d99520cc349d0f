// The standalone fake against a real Node client: the `ws` package.
//
// The client under test is a small price feed on `ws`: it subscribes on every
// connection and reconnects after a drop with a doubling delay, as a real one would.

import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";
import WebSocket from "ws";

import { ExpectationFailed, startFakeWsServer } from "../fake-ws-server.mjs";

const SUBSCRIBE = { json_includes: { type: "subscribe" } };

/** The client under test. */
class PriceFeed {
  constructor(url, topic) {
    this.url = url;
    this.topic = topic;
    this.received = [];
    this.closeCodes = []; // the code of every close the client saw
    this.waiting = null;
    this.delayMs = 50; // 50, 100, 200... ms between tries, back to 50 once connected
    this.stopped = false;
    this.connect();
  }

  connect() {
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.on("open", () => {
      this.delayMs = 50;
      socket.send(JSON.stringify({ type: "subscribe", topic: this.topic }));
    });
    socket.on("message", (data) => this.deliver(JSON.parse(data.toString())));
    socket.on("error", () => {}); // a close event follows; that is where it retries
    socket.on("close", (code) => {
      this.closeCodes.push(code);
      if (this.stopped) return;
      setTimeout(() => this.connect(), this.delayMs);
      this.delayMs = Math.min(this.delayMs * 2, 1_000);
    });
  }

  deliver(message) {
    if (this.waiting) {
      this.waiting(message);
      this.waiting = null;
    } else {
      this.received.push(message);
    }
  }

  /** The next message from the server, within `timeoutMs`. */
  nextMessage(timeoutMs = 5_000) {
    if (this.received.length > 0) return Promise.resolve(this.received.shift());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no message within ${timeoutMs} ms`)), timeoutMs);
      this.waiting = (message) => {
        clearTimeout(timer);
        resolve(message);
      };
    });
  }

  stop() {
    this.stopped = true;
    this.socket.terminate();
  }
}

let fake;
let feed;

beforeEach(async () => {
  fake = await startFakeWsServer();
});

afterEach(async () => {
  feed?.stop();
  feed = undefined;
  // As the Rust drop check would: a message nobody looked at fails the test.
  await fake.stop({ verify: true });
});

test("reconnects and resubscribes after a drop", async () => {
  await fake.mountRule({
    match: SUBSCRIBE,
    reply: [{ type: "subscribed", topic: "{{/topic}}" }],
    times: 2,
  });
  feed = new PriceFeed(fake.wsUrl, "btc");
  const first = await fake.nextConnection();
  assert.deepEqual(await feed.nextMessage(), { type: "subscribed", topic: "btc" });
  await first.send({ type: "price", topic: "btc", cents: 4200 });
  assert.deepEqual(await feed.nextMessage(), { type: "price", topic: "btc", cents: 4200 });

  await first.abort(); // a reset, no close frame
  assert.equal((await first.waitClosed()).how, "aborted");
  await fake.nextConnection();
  assert.deepEqual(await feed.nextMessage(), { type: "subscribed", topic: "btc" });
  // What ws reports for a connection lost without a close frame.
  assert.deepEqual(feed.closeCodes, [1006]);

  const { attempts } = await fake.waitForAttempts(2);
  assert.deepEqual(attempts.map((a) => a.outcome), ["accepted", "accepted"]);
});

test("retries with a growing delay while the server is down", async () => {
  await fake.mountRule({ match: SUBSCRIBE, reply: [{ type: "subscribed" }] });
  feed = new PriceFeed(fake.wsUrl, "eth");
  await fake.nextConnection();
  assert.deepEqual(await feed.nextMessage(), { type: "subscribed" });

  await fake.stopServing(); // resets the connection and refuses new ones
  const { attempts } = await fake.waitForAttempts(5);
  assert.deepEqual(attempts.slice(1, 5).map((a) => a.outcome), ["refused", "refused", "refused", "refused"]);
  // The backoff, as the fake recorded it: 50, 100, 200 ms between the tries.
  const at = attempts.slice(1, 5).map((a) => a.at_ms);
  const gaps = at.slice(1).map((t, i) => t - at[i]);
  assert.ok(gaps[2] > 2 * gaps[0], `no backoff between the tries: ${gaps} ms`);

  await fake.restart();
  await fake.nextConnection();
  assert.deepEqual(await feed.nextMessage(), { type: "subscribed" });
});

test("ws closes with 1007 on a frame that is not UTF-8, and the feed reconnects", async () => {
  await fake.mountRule({ match: SUBSCRIBE, reply: [{ type: "subscribed" }] });
  feed = new PriceFeed(fake.wsUrl, "eth");
  const first = await fake.nextConnection();
  assert.deepEqual(await feed.nextMessage(), { type: "subscribed" });

  await first.sendFault("invalid_utf8");
  const closed = await first.waitClosed();
  assert.deepEqual([closed.how, closed.code], ["frame", 1007], JSON.stringify(closed));
  await fake.nextConnection();
  assert.deepEqual(await feed.nextMessage(), { type: "subscribed" });
});

test("a failed expectation shows the transcript", async () => {
  feed = new PriceFeed(fake.wsUrl, "eth");
  const conn = await fake.nextConnection();
  await assert.rejects(
    conn.expect({ json_includes: { type: "subscribe", topic: "btc" } }, 500),
    (error) => {
      assert.ok(error instanceof ExpectationFailed);
      assert.match(error.message, /did not come/);
      assert.match(error.message, /- {3}"topic": "btc"/); // the diff against the closest message
      assert.match(error.message, /transcript:/);
      assert.ok(error.message.includes('client → fake  text {"type":"subscribe","topic":"eth"}'));
      return true;
    },
  );

  // Untaken, the message is what the drop check would fail the test for.
  const problems = await fake.verify();
  assert.equal(problems.length, 1);
  assert.match(problems[0], /no expectation or rule looked at/);
  await conn.expect({ json_includes: { topic: "eth" } });
});
