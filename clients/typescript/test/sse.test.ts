import assert from "node:assert/strict";
import { test } from "node:test";

import { SseParser } from "../src/sse.js";
import type { SseEvent } from "../src/sse.js";

const STREAM =
  ": open\r\n\r\n" +
  'id: 1\r\ndata: {"t":"notify","args":["a"]}\r\n\r\n' +
  'event: ping\ndata: {"t":"ping","id":7}\n\n' +
  "id: 2\ndata: line one\ndata: line two\n\n" +
  ": keep-alive\r\r" +
  'id:3\rdata:{"t":"result","id":4,"value":"\u00e9\u2603"}\r\r' +
  'event: close\ndata: {"reason": "bye"}\n\n';

const EXPECTED: SseEvent[] = [
  { event: "message", data: '{"t":"notify","args":["a"]}', id: "1" },
  { event: "ping", data: '{"t":"ping","id":7}', id: null },
  { event: "message", data: "line one\nline two", id: "2" },
  { event: "message", data: '{"t":"result","id":4,"value":"\u00e9\u2603"}', id: "3" },
  { event: "close", data: '{"reason": "bye"}', id: null },
];

test("an event stream read whole: ids, pings, multi-line data, comments, CR, LF and CRLF", () => {
  assert.deepEqual(new SseParser().feed(STREAM), EXPECTED);
});

test("the same events whatever the chunk boundaries (every split in two, then one character at a time)", () => {
  for (let at = 0; at <= STREAM.length; at++) {
    const parser = new SseParser();
    const events = [...parser.feed(STREAM.slice(0, at)), ...parser.feed(STREAM.slice(at))];
    assert.deepEqual(events, EXPECTED, `split at ${at}: ${JSON.stringify(STREAM.slice(at - 2, at + 2))}`);
  }
  const parser = new SseParser();
  const events: SseEvent[] = [];
  for (const char of STREAM) events.push(...parser.feed(char));
  assert.deepEqual(events, EXPECTED);
});

test("an event is complete only at its blank line; what it holds so far is counted", () => {
  const parser = new SseParser();
  assert.deepEqual(parser.feed("id: 9\ndata: abc"), []);
  assert.equal(parser.pending, "data: abc".length);
  assert.deepEqual(parser.feed("def\n"), []);
  assert.deepEqual(parser.feed("\n"), [{ event: "message", data: "abcdef", id: "9" }]);
  assert.equal(parser.pending, 0);
});

test("a block without data (an id alone, a comment) is no event, and the next starts afresh", () => {
  const parser = new SseParser();
  assert.deepEqual(parser.feed("id: 5\n\nevent: ping\n\n: c\n\ndata: x\n\n"), [{ event: "message", data: "x", id: null }]);
});

test("pending counts the data lines of an event not yet ended, and nothing once it ends", () => {
  const parser = new SseParser();
  for (let i = 0; i < 1000; i++) assert.deepEqual(parser.feed("data: abcd\n"), []);
  assert.equal(parser.pending, 4000);
  const [event] = parser.feed("\n");
  assert.equal(event?.data.length, 1000 * 4 + 999);
  assert.equal(parser.pending, 0);
});
