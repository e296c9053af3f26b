// The server's page and dashboard are compiled into the binary from the committed
// `crates/wirehub-server/assets/`: this fails when those files are not what
// `crates/wirehub-server/web/` and this SDK build today (`npm run build:web` rebuilds them).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";

// .test-build/test/ → clients/typescript/
const script = fileURLToPath(new URL("../../scripts/build-web.mjs", import.meta.url));

describe("the server's web assets", () => {
  test("issue 13: crates/wirehub-server/assets/ is what web/ and the SDK build now", async () => {
    const { code, stderr } = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      execFile(process.execPath, [script, "--check"], { timeout: 60_000 }, (error, _stdout, stderr) => {
        resolve({ code: error === null ? 0 : ((error as { code?: number }).code ?? 1), stderr });
      });
    });
    assert.equal(code, 0, stderr);
  });
});
