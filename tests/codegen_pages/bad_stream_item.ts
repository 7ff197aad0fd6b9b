import { rpc } from "./client.js";
import { ConformanceStreams } from "./streams.js";

export async function page(): Promise<number> {
  return rpc.proxy(ConformanceStreams).total("k", ["one", "two"]); // expect TS2345
}
