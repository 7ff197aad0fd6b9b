// A page using the stubs of the conformance interfaces (every carried type,
// streams, bytes) and tests/codegen_samples.py (unions with bytes, recursion).
import { rpc, session } from "./client.js";
import {
  Color,
  ConformanceInterface,
  Level,
  type Circle,
  type Everything,
  type Square,
} from "./conformance.js";
import { ConformanceStreams } from "./streams.js";
import { FrontendStreamingIpc, StreamingIpc } from "./ipc_streams.js";
import { Storage, Ticks, QuotaExceeded, type Blob, type Link, type Tree } from "./samples.js";

async function* numbers(n: number): AsyncGenerator<number> {
  for (let i = 0; i < n; i++) yield i;
}

function area(shape: Circle | Square): number {
  return shape.kind === "circle" ? Math.PI * shape.radius ** 2 : shape.side ** 2;
}

export async function page(): Promise<number[]> {
  const everything: Everything = {
    flag: true,
    count: 1,
    ratio: 0.5,
    name: "n",
    raw: new Uint8Array([1, 2]),
    color: Color.GREEN,
    level: Level.HIGH,
    when: "2026-11-21T12:30:05+00:00",
    day: "1999-12-31",
    ident: "12345678-1234-5678-1234-567812345678",
    nothing: null,
    maybe: null,
    either: "text",
    shape: { kind: "square", corner: { x: 0, y: 1 }, side: 2.5 },
    points: [{ x: 1, y: 2 }],
    pair: [7, "seven"],
    rest: [1, 2, 3],
    by_name: { origin: { x: 0, y: 0 } },
    by_id: { "1": "one" },
    tags: ["a"],
    frozen: [3, 4],
  };
  const conformance = rpc.proxy(ConformanceInterface);
  const echoed = await conformance.echo(everything);
  const out = [area(echoed.shape), echoed.raw.byteLength, (await conformance.mirror(new Uint8Array(3))).length];
  const colors: Color[] = ["red", Color.RED];
  out.push(colors.length);

  const streams = rpc.proxy(ConformanceStreams);
  for await (const n of streams.count("k", 3)) out.push(n);
  out.push(await streams.total("k", [1, 2, 3]));
  out.push(await streams.total("k", numbers(3)));
  for await (const n of streams.scale(2, numbers(2))) out.push(n);
  for await (const chunk of streams.chunks("k", 2, 8)) out.push(chunk.byteLength);
  out.push(await streams.swallow([new Uint8Array(1)]));

  session.serve(FrontendStreamingIpc, {
    count: numbers,
    async total(xs) {
      let sum = 0;
      for await (const x of xs) sum += x;
      return sum;
    },
    async *double(xs) {
      for await (const x of xs) yield 2 * x;
    },
    forever: () => numbers(1e9),
    activities: (n) => Array.from({ length: n }, (_, i) => `a${i}`),
    large: (size) => ["x".repeat(size)],
    failAfterItems: numbers,
  });
  const ipc = session.proxy(StreamingIpc);
  for await (const n of ipc.double([1, 2])) out.push(n);
  out.push(await ipc.take("k", 2, numbers(5), { timeoutMs: 100 }));

  const storage = rpc.proxy(Storage);
  const blob: Blob = { kind: "blob", data: new Uint8Array(4) };
  const link: Link = { kind: "link", url: "https://example.com" };
  const id: string = await storage.put(blob);
  await storage.put(link, true, { activityId: id });
  const got = await storage.get(id);
  if (got !== null && got.kind === "blob") out.push(got.data.byteLength);
  const [packed, size] = await storage.pack({ a: [new Uint8Array(1)] }, "2026-01-01");
  out.push(packed.byteLength + size);
  const tree: Tree = { label: "root", ident: id, children: [{ label: "leaf", ident: id, created: null }] };
  out.push((await storage.grow(tree)).children?.length ?? 0);
  for await (const n of storage.upload("fast", [blob])) out.push(n);
  session.listen(Ticks, { tick: (n, raw) => out.push(n + (raw?.byteLength ?? 0)) });
  out.push(QuotaExceeded.length, Storage.operations["put"]?.params.length ?? 0);
  return out;
}
