// What the browser client weighs: the compiled modules (dist/*.js), as built,
// minified with terser, and minified then gzipped. Nothing is bundled: a page
// imports the ES modules as they are, so each file is minified and gzipped on
// its own and the sizes are summed (what a server that gzips sends).
//
//   cd clients/typescript && npm run build && node scripts/size.mjs [--max-gzip BYTES]
//
// Prints the three totals (bytes) and each file's; with --max-gzip, exits 1
// when the gzipped total is over BYTES.

import { readFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { minify } from "terser";

const dist = fileURLToPath(new URL("../dist/", import.meta.url));

function usage(message) {
  console.error(`size.mjs: ${message}\nusage: node scripts/size.mjs [--max-gzip BYTES]`);
  process.exit(2);
}

let maxGzip = null;
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--max-gzip" && /^\d+$/.test(args[i + 1] ?? "")) maxGzip = Number(args[++i]);
  else usage(`unexpected argument ${JSON.stringify(args[i])}`);
}

let names;
try {
  names = (await readdir(dist)).filter((name) => name.endsWith(".js")).sort();
} catch {
  usage(`no ${dist}: build the client first (npm run build, or make ts)`);
}
if (names.length === 0) usage(`${dist} holds no .js file: build the client first (npm run build)`);

const totals = { js: 0, min: 0, gzip: 0 };
const rows = [];
for (const name of names) {
  const code = await readFile(join(dist, name), "utf8");
  const result = await minify(code, { module: true, ecma: 2022, compress: true, mangle: true });
  if (result.code === undefined) throw new Error(`terser returned no code for ${name}`);
  const sizes = {
    js: Buffer.byteLength(code),
    min: Buffer.byteLength(result.code),
    gzip: gzipSync(result.code, { level: 9 }).length,
  };
  for (const key of Object.keys(totals)) totals[key] += sizes[key];
  rows.push([name, sizes]);
}

const pad = (value, width) => String(value).padStart(width);
console.log(`${"file".padEnd(20)} ${pad("js", 8)} ${pad("min", 8)} ${pad("min+gz", 8)}`);
for (const [name, s] of rows) console.log(`${name.padEnd(20)} ${pad(s.js, 8)} ${pad(s.min, 8)} ${pad(s.gzip, 8)}`);
console.log(`${"total".padEnd(20)} ${pad(totals.js, 8)} ${pad(totals.min, 8)} ${pad(totals.gzip, 8)}`);
console.log(`dist/*.js: ${totals.js} bytes; minified: ${totals.min}; minified and gzipped: ${totals.gzip}`);
if (maxGzip !== null && totals.gzip > maxGzip) {
  console.error(
    `size.mjs: the client is ${totals.gzip} bytes minified and gzipped, over the bound of ${maxGzip}: ` +
      "find what grew (the per-file table above), or raise the bound on purpose",
  );
  process.exit(1);
}
