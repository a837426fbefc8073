// Generate src/types.ts from the AsyncAPI document's payload schemas (components.schemas).
//   node scripts/generate-types.mjs ../../docs/asyncapi.json src/types.ts [--check]
// --check: exit 1 when the file is not what the document generates now (npm test runs it).
import { readFileSync, writeFileSync } from "node:fs";
import { compile } from "json-schema-to-typescript";

const [source, target, flag] = process.argv.slice(2);
const schemas = JSON.parse(readFileSync(source, "utf8")).components.schemas;
const text = JSON.stringify(schemas).replaceAll('"#/components/schemas/', '"#/$defs/');
const defs = JSON.parse(text);
// one root naming every schema, so each becomes an exported type under its own name
const root = {
  title: "PayloadSchemas",
  description: "Every payload schema of the NATS API, by name.",
  type: "object",
  properties: Object.fromEntries(Object.keys(defs).map((name) => [name, { $ref: `#/$defs/${name}` }])),
  required: Object.keys(defs),
  additionalProperties: false,
  $defs: defs,
};
const banner =
  "/* Generated from docs/asyncapi.json by scripts/generate-types.mjs (npm run generate): do not edit. */";
const out = await compile(root, "PayloadSchemas", {
  bannerComment: banner,
  additionalProperties: false,
  unreachableDefinitions: true,
  format: true,
  style: { printWidth: 100 },
});
if (flag === "--check") {
  if (readFileSync(target, "utf8") !== out) {
    console.error(`${target} is not current: run \`npm run generate\` in clients/typescript`);
    process.exit(1);
  }
  console.log(`${target} is current`);
} else {
  writeFileSync(target, out);
  console.log(`wrote ${target}`);
}
