/**
 * A Server-Sent Events reader for a fetch-streamed body (rather than the
 * `EventSource` object, which can send neither `X-Session-Token` nor acks,
 * and cannot tell a drop from the backend's `event: close`).
 *
 * The parsing is the HTML standard's: lines end with CRLF, LF or CR (also
 * split across chunks); `data:` lines add up, joined by LF; `id:` and
 * `event:` apply to the event under way; a blank line ends the event; lines
 * starting with `:` are comments.
 */

/** One event of the stream. */
export interface SseEvent {
  /** `event:`, or `message` when there was none. */
  event: string;
  /** The `data:` lines, joined by LF. */
  data: string;
  /** The event's own `id:`, or null when it had none (a ping). */
  id: string | null;
}

/** Turns text chunks into events. Feed it what the body's reader gives, decoded. */
export class SseParser {
  private line = "";
  private afterCr = false;
  private event = "";
  private data: string[] = [];
  private dataChars = 0;
  private id: string | null = null;
  /** Characters held of an unfinished line or event (a bound against a peer that never ends one). */
  get pending(): number {
    return this.line.length + this.dataChars;
  }

  /** The events that `chunk` completes, in order. */
  feed(chunk: string): SseEvent[] {
    const events: SseEvent[] = [];
    let start = 0;
    for (let at = 0; at < chunk.length; at++) {
      const char = chunk.charCodeAt(at);
      if (char !== 10 && char !== 13) continue;
      if (char === 10 && this.afterCr && at === start && this.line === "") {
        // the LF of a CRLF whose CR ended the previous chunk (or line)
        this.afterCr = false;
        start = at + 1;
        continue;
      }
      this.line += chunk.slice(start, at);
      start = at + 1;
      this.afterCr = char === 13;
      const line = this.line;
      this.line = "";
      const event = this.takeLine(line);
      if (event !== null) events.push(event);
    }
    if (start < chunk.length) {
      this.line += chunk.slice(start);
      this.afterCr = false;
    }
    return events;
  }

  private takeLine(line: string): SseEvent | null {
    if (line === "") {
      const event = this.data.length > 0 ? { event: this.event || "message", data: this.data.join("\n"), id: this.id } : null;
      this.event = "";
      this.data = [];
      this.dataChars = 0;
      this.id = null;
      return event;
    }
    if (line.startsWith(":")) return null;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") {
      this.data.push(value);
      this.dataChars += value.length;
    }
    else if (field === "event") this.event = value;
    else if (field === "id" && !value.includes("\0")) this.id = value;
    return null;
  }
}
