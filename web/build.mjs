// Bundles the console into dist/: console.js (esbuild, from src/main.ts) beside the static page and its CSS.
import { build } from "esbuild";
import { cp, mkdir, rm } from "node:fs/promises";

const here = new URL(".", import.meta.url);
const dist = new URL("dist/", here);

await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });
await build({
  entryPoints: [new URL("src/main.ts", here).pathname],
  outfile: new URL("console.js", dist).pathname,
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  sourcemap: true,
  logLevel: "warning",
});
await cp(new URL("static/", here), dist, { recursive: true });
