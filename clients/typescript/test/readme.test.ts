// The TypeScript example of docs/clients.md type-checks against the package and runs as written against a
// real stack (the server address replaced by the stack's).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";

import ts from "typescript";

import { startStack, type Stack } from "./stack.js";

const run = promisify(execFile);

/** The first ```ts block of the "TypeScript client" section of docs/clients.md. */
function example(): string {
  const page = readFileSync(resolve("../../docs/clients.md"), "utf8");
  const section = page.split("### TypeScript client")[1] ?? "";
  const found = /```ts\n([\s\S]*?)```/.exec(section);
  assert.ok(found, "docs/clients.md has a TypeScript client example");
  return found[1];
}

let stack: Stack;
before(async () => {
  stack = await startStack();
});
after(async () => {
  await stack?.stop();
});

test("the TypeScript example of docs/clients.md type-checks and runs", async () => {
  const dir = resolve("dist/readme");
  mkdirSync(dir, { recursive: true });
  const source = join(dir, "example.mts");
  // inside the package: "@llm-edge/client" resolves to it through package.json's exports
  writeFileSync(source, example().replace("nats://127.0.0.1:4222", stack.natsUrl));
  const program = ts.createProgram([source], {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    strict: true,
    skipLibCheck: true,
    types: ["node"],
    rootDir: dir,
    outDir: dir,
  });
  const emitted = program.emit();
  const problems = [...ts.getPreEmitDiagnostics(program), ...emitted.diagnostics].map((d) =>
    ts.flattenDiagnosticMessageText(d.messageText, "\n"),
  );
  assert.deepEqual(problems, []);
  const { stdout } = await run(process.execPath, [join(dir, "example.mjs")], { timeout: 40_000 });
  const lines = stdout.trim().split("\n");
  assert.match(lines[0], /^Mock reply \[[0-9a-f]{8}\]: Hello$/);
  assert.equal(lines[1], lines[0]); // the stream's text is the whole answer's
  assert.ok(lines.includes("404 model_not_found"));
  assert.ok(lines.includes("completed"));
  assert.equal(lines.at(-1), "a 200");
});
