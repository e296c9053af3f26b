#!/usr/bin/env node
/**
 * Builds the server's page and dashboard: `crates/wirehub-server/web/` (HTML, CSS, TypeScript)
 * into `crates/wirehub-server/assets/`, which the server compiles in. The scripts are bundled
 * with esbuild, the page's with this SDK (`@wirehub/client` is `src/`); every file gets a
 * gzipped copy beside it. The output is committed, so that building the server needs no npm.
 *
 *     npm run build:web                   # type-checks (tsconfig.web.json), then writes assets/
 *     node scripts/build-web.mjs --check  # exits 1 when the committed assets/ are stale
 */

import { readFile, readdir, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { gunzipSync, gzipSync } from "node:zlib";

import * as esbuild from "esbuild";

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const WEB = here("../../../crates/wirehub-server/web/");
const ASSETS = here("../../../crates/wirehub-server/assets/");
const COPIED = ["index.html", "dashboard.html", "style.css"];
const BUNDLED = ["page.ts", "dashboard.ts"];
const BANNER = "/* Generated from crates/wirehub-server/web/ by `npm run build:web` in clients/typescript: do not edit. */";

/** Every file of assets/ (without the .gz copies), by name. */
export async function buildWeb() {
  const files = new Map();
  for (const name of COPIED) files.set(name, await readFile(WEB + name));
  const result = await esbuild.build({
    entryPoints: BUNDLED.map((name) => WEB + name),
    bundle: true,
    minify: true,
    format: "esm",
    target: ["es2020"],
    platform: "browser",
    charset: "utf8",
    legalComments: "none",
    banner: { js: BANNER },
    alias: { "@wirehub/client": here("../src/index.ts") },
    outdir: ASSETS,
    write: false,
    logLevel: "silent",
  });
  for (const file of result.outputFiles) {
    files.set(file.path.slice(file.path.lastIndexOf("/") + 1), Buffer.from(file.contents));
  }
  return files;
}

async function main(args) {
  const files = await buildWeb();
  if (args.includes("--check")) {
    const stale = [];
    for (const [name, body] of files) {
      const committed = await readFile(ASSETS + name).catch(() => undefined);
      const gzipped = await readFile(`${ASSETS}${name}.gz`).catch(() => undefined);
      if (committed === undefined || !committed.equals(body)) stale.push(name);
      else if (gzipped === undefined || !gunzipSync(gzipped).equals(body)) stale.push(`${name}.gz`);
    }
    const expected = new Set([...files.keys()].flatMap((name) => [name, `${name}.gz`]));
    for (const name of await readdir(ASSETS)) if (!expected.has(name)) stale.push(`${name} (not built from web/)`);
    if (stale.length > 0) {
      console.error(
        `crates/wirehub-server/assets/ is stale (${stale.join(", ")}): run \`npm run build:web\` in clients/typescript and commit the result`,
      );
      process.exit(1);
    }
    console.error("crates/wirehub-server/assets/ is up to date");
    return;
  }
  for (const [name, body] of files) {
    await writeFile(ASSETS + name, body);
    await writeFile(`${ASSETS}${name}.gz`, gzipSync(body, { level: 9 }));
    console.error(`${name}: ${body.length} bytes, gzipped ${gzipSync(body, { level: 9 }).length}`);
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).catch((error) => {
    console.error(error);
    process.exit(1);
  });
}
