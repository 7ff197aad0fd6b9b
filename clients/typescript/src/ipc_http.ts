/** IPC over HTTP: POSTs to the backend, its event stream back (owned by the http helper; this is the seam's signature). */

import type { Message } from "./codec.js";
import { ConnectionClosed } from "./errors.js";
import type { ConnectOptions, MessagePipe, Welcome } from "./transport.js";

/** Opens an IPC session at the HTTP prefix `url` (`http://host:port/rpc`) with `hello`; its welcome and the pipe of its messages. */
export async function openHttpIpc(
  url: string,
  hello: Message,
  options: ConnectOptions = {},
): Promise<{ welcome: Welcome; pipe: MessagePipe }> {
  void hello;
  void options;
  throw new ConnectionClosed(`IPC over HTTP is not written yet (${url})`);
}
