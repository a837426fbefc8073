// A real stack for the tests: `python -m llm_edge up` on free 127.0.0.1 ports, mock providers;
// and a bare nats-server (no broker) for the protocol cases a real broker never sends. The
// repository's Python is LLM_EDGE_PYTHON (default ../../.venv/bin/python); its nats-server sits
// next to it (else on PATH).
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";

const READY_WITHIN_MS = 45_000;
const STOP_WITHIN_MS = 15_000;
/** How long `thinking-model` is silent before it answers. */
export const THINKING_MS = 3_000;

/**
 * `gpt-4o-mini` answers at once; `slow-model` streams one word every 10 minutes (long enough to
 * cancel); `thinking-model` thinks for THINKING_MS before its first byte, whole or streamed.
 */
const CONFIG = `
[batch]
poll_s = 0.1
[cache]
l2 = "off"
[providers.mock]
kind = "mock"
[providers.slow]
kind = "mock"
chunk_delay_ms = 600000
[models.gpt-4o-mini]
deployments = [{ provider = "mock" }]
[models.slow-model]
deployments = [{ provider = "slow" }]
[providers.thinker]
kind = "mock"
latency_ms = ${THINKING_MS}
[models.thinking-model]
deployments = [{ provider = "thinker" }]
`;

export interface Stack {
  natsUrl: string;
  /** The HTTP API (`/metrics` among it). */
  httpUrl: string;
  output(): string;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => done(typeof address === "object" && address ? address.port : 0));
    });
  });
}

function pythonPath(): string {
  return resolve(process.env.LLM_EDGE_PYTHON ?? "../../.venv/bin/python");
}

export async function startStack(): Promise<Stack> {
  const python = pythonPath();
  const dir = mkdtempSync(join(tmpdir(), "llm-edge-ts-"));
  const config = join(dir, "config.toml");
  writeFileSync(config, CONFIG);
  const [port, natsPort] = [await freePort(), await freePort()];
  const env = { ...process.env };
  delete env.OPENAI_API_KEY;
  delete env.ANTHROPIC_API_KEY;
  delete env.NATS_URL;
  delete env.LLM_EDGE_CONFIG;
  const args = ["-m", "llm_edge", "up", "--host", "127.0.0.1", "--port", String(port)];
  args.push("--nats-port", String(natsPort), "--data-dir", join(dir, "data"), "--config", config);
  const child: ChildProcess = spawn(python, args, { cwd: "../..", env, stdio: "pipe" });
  let output = "";
  const exited = new Promise<void>((done) => child.once("exit", () => done()));
  await new Promise<void>((ready, fail) => {
    const timer = setTimeout(() => fail(new Error(`no "Ready." within ${READY_WITHIN_MS} ms:\n${output}`)), READY_WITHIN_MS);
    const read = (data: Buffer) => {
      output += data.toString();
      if (output.includes("Ready.")) {
        clearTimeout(timer);
        ready();
      }
    };
    child.stdout?.on("data", read);
    child.stderr?.on("data", read);
    child.once("exit", (code) => {
      clearTimeout(timer);
      fail(new Error(`llm-edge up exited (${code}) before "Ready.":\n${output}`));
    });
  });
  return {
    natsUrl: `nats://127.0.0.1:${natsPort}`,
    httpUrl: `http://127.0.0.1:${port}`,
    output: () => output,
    async stop() {
      if (child.exitCode === null) {
        child.kill("SIGINT");
        const timer = setTimeout(() => child.kill("SIGKILL"), STOP_WITHIN_MS);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface NatsServer {
  url: string;
  stop(): Promise<void>;
}

/** A bare nats-server on a free port whose largest message is `maxPayload` bytes. */
export async function startNatsServer(maxPayload: number): Promise<NatsServer> {
  const beside = join(dirname(pythonPath()), "nats-server");
  const binary = existsSync(beside) ? beside : "nats-server";
  const dir = mkdtempSync(join(tmpdir(), "llm-edge-ts-nats-"));
  const config = join(dir, "nats.conf");
  const port = await freePort();
  writeFileSync(config, `listen: "127.0.0.1:${port}"\nmax_payload: ${maxPayload}\n`);
  const child: ChildProcess = spawn(binary, ["-c", config], { stdio: "pipe" });
  let output = "";
  const exited = new Promise<void>((done) => child.once("exit", () => done()));
  await new Promise<void>((ready, fail) => {
    const timer = setTimeout(() => fail(new Error(`nats-server not ready within ${READY_WITHIN_MS} ms:\n${output}`)), READY_WITHIN_MS);
    const read = (data: Buffer) => {
      output += data.toString();
      if (output.includes("Server is ready")) {
        clearTimeout(timer);
        ready();
      }
    };
    child.stdout?.on("data", read);
    child.stderr?.on("data", read);
    child.once("error", (error) => {
      clearTimeout(timer);
      fail(error);
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      fail(new Error(`nats-server exited (${code}) before it was ready:\n${output}`));
    });
  });
  return {
    url: `nats://127.0.0.1:${port}`,
    async stop() {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), STOP_WITHIN_MS);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
