export * from "./batches.js";
export * from "./client.js";
export * from "./contract.js";
export * from "./errors.js";
export * from "./responses.js";
export type * from "./types.js";
