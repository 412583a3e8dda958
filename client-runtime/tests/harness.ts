// Runs the REAL runtime (main.ts) as a subprocess with the Deno command line
// taken from ../deno-flags.txt, laid out like the process runtime does it:
// main.ts in its own runtime dir, the function in a code dir, the sockets in
// the instance's tmp dir. Shared by the *_test.ts files here.

import assert from "node:assert/strict";

export const RUNTIME_DIR = new URL("../", import.meta.url);
export const FIXTURES = new URL("./fixtures/", import.meta.url);
export const DENO = Deno.execPath();

/** Denied networks used by the process runtime. IPv6 is limited to single
 * bracketed addresses: Deno 2.9.8 rejects IPv6 CIDRs (see the canary test). */
export const DENY_NET = [
  "127.0.0.0/8",
  "0.0.0.0/8",
  "[::]",
  "[::1]",
  "169.254.0.0/16",
  "10.0.0.0/8",
  "172.16.0.0/12",
  "192.168.0.0/16",
].join(",");

/** For the health listener, which binds 0.0.0.0 and so cannot coexist with
 * 0.0.0.0/8 or [::] in the deny list. */
export const DENY_NET_HEALTH = DENY_NET.split(",")
  .filter((h) => h !== "0.0.0.0/8" && h !== "[::]")
  .join(",");

export const decoder = new TextDecoder();

/** A runtime that has not answered by then never will (a hang fails the test
 * instead of stalling the suite). */
export const ANSWER_TIMEOUT_MS = 10_000;

/** Reads deno-flags.txt and substitutes its placeholders. */
export async function denoArgs(
  vars: Record<string, string>,
): Promise<string[]> {
  const text = await Deno.readTextFile(new URL("deno-flags.txt", RUNTIME_DIR));
  return text.split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"))
    .map((l) =>
      l.replace(/\{(\w+)\}/g, (_, name: string) => {
        if (!(name in vars)) throw new Error(`unknown placeholder {${name}}`);
        return vars[name];
      })
    );
}

export interface StartOptions {
  /** file name under tests/fixtures/ */
  fixture?: string;
  /** or inline module source (for files deno fmt/lint must not see) */
  source?: string;
  denyNet?: string;
  healthPort?: number;
  /** also serve --health-socket <tmp>/h */
  healthSocket?: boolean;
  /** pass --exit-with-parent and hold the runtime's stdin open */
  exitWithParent?: boolean;
  /** also pass --wait-for-go: the module is imported after a byte on stdin */
  waitForGo?: boolean;
  /** prefix of the temp dirs' names (e.g. with spaces or '%') */
  dirPrefix?: string;
  /** don't wait for "listening" (for processes expected to fail) */
  noWait?: boolean;
  /** the function's env, as the platform hands it over: a JSON file passed
   * as --env-file (readable by the runtime) and --allow-env of those names;
   * with `envOnStdin`, `--env-file -` and the JSON as stdin's first line */
  fnEnv?: Record<string, string>;
  /** give fnEnv on stdin (needs exitWithParent) */
  envOnStdin?: boolean;
  /** extra variables in the runtime's environment, NOT listed as the
   * function's (they must not reach it) */
  otherEnv?: Record<string, string>;
  /** extra writable dirs appended to {write_dirs} (e.g. "/tmp") */
  extraWriteDirs?: string;
  /** --listen value instead of the unix socket (e.g. "tcp:[::]:8080") */
  listen?: string;
  /** --drain-secs: seconds of serving, not ready, after SIGTERM */
  drainSecs?: number;
}

/** The Deno flags for `opts`, with the function's env allowed if it has one. */
export async function flagsFor(
  opts: StartOptions,
  dirs: Dirs,
  main: string,
): Promise<string[]> {
  const names = Object.keys(opts.fnEnv ?? {});
  const file = opts.fnEnv !== undefined && !opts.envOnStdin
    ? envFilePath(dirs)
    : undefined;
  if (file !== undefined) {
    await Deno.writeTextFile(file, JSON.stringify(opts.fnEnv));
  }
  return await denoArgs({
    code_dir: dirs.codeDir,
    write_dirs: opts.extraWriteDirs
      ? `${dirs.tmpDir},${opts.extraWriteDirs}`
      : dirs.tmpDir,
    heap_mb: "128",
    deny_net: opts.denyNet ?? DENY_NET,
    main,
    env: names.length > 0 ? `--allow-env=${names.join(",")}` : "--deny-env",
    env_file: file !== undefined ? `,${file}` : "",
  });
}

/** Where the env file of `--env-file <path>` goes (outside the write dirs). */
function envFilePath(dirs: Dirs): string {
  return `${dirs.runtimeDir}/env.json`;
}

/** The runtime's --env-file arguments for `opts`. */
export function envFileArgs(opts: StartOptions, dirs: Dirs): string[] {
  if (opts.fnEnv === undefined) return [];
  return ["--env-file", opts.envOnStdin ? "-" : envFilePath(dirs)];
}

/** The runtime process's environment for `opts`. */
export function envFor(opts: StartOptions): Record<string, string> {
  return { NO_COLOR: "1", ...opts.otherEnv };
}

/** Copies main.ts and the fixture (or source) into fresh dirs. */
async function layOut(
  opts: StartOptions,
): Promise<{ dirs: Dirs; main: string; modulePath: string }> {
  const dirs = await makeDirs(opts.dirPrefix);
  const main = `${dirs.runtimeDir}/main.ts`;
  await Deno.copyFile(new URL("main.ts", RUNTIME_DIR), main);
  const name = opts.fixture ?? "fn.ts";
  const modulePath = `${dirs.codeDir}/${name}`;
  if (opts.fixture) {
    await Deno.copyFile(new URL(opts.fixture, FIXTURES), modulePath);
  } else await Deno.writeTextFile(modulePath, opts.source ?? "");
  return { dirs, main, modulePath };
}

export interface ProbeResult {
  code: number;
  stdout: string;
  stderr: string;
  /** the last stdout line, parsed */
  json: Record<string, unknown>;
}

/** Runs `main.ts --probe --module <fixture>` with the serving flags. */
export async function probe(opts: StartOptions): Promise<ProbeResult> {
  const { dirs, main, modulePath } = await layOut(opts);
  try {
    const args = await flagsFor(opts, dirs, main);
    args.push("--probe", "--module", modulePath);
    const out = await new Deno.Command(DENO, {
      args,
      cwd: dirs.tmpDir,
      stdin: "null",
      env: envFor(opts),
      clearEnv: true,
    }).output();
    const stdout = decoder.decode(out.stdout);
    const stderr = decoder.decode(out.stderr);
    const lines = stdout.split("\n").filter((l) => l !== "");
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(lines[lines.length - 1] ?? "");
    } catch { /* asserted by the caller */ }
    return { code: out.code, stdout, stderr, json };
  } finally {
    for (const d of Object.values(dirs)) {
      await Deno.remove(d, { recursive: true });
    }
  }
}

export class Runtime {
  stderr = "";
  stdout = "";
  exited: Deno.CommandStatus | undefined;
  readonly status: Promise<Deno.CommandStatus>;
  readonly client: Deno.HttpClient;
  readonly healthClient: Deno.HttpClient;
  #readers: Promise<void>[];
  #waiters: (() => void)[] = [];
  #stdinOpen: boolean;

  constructor(
    readonly proc: Deno.ChildProcess,
    readonly socket: string,
    readonly dirs: string[],
    readonly healthSocket = `${socket}.health`,
    stdinPiped = false,
  ) {
    this.client = Deno.createHttpClient({
      proxy: { transport: "unix", path: socket },
    });
    this.healthClient = Deno.createHttpClient({
      proxy: { transport: "unix", path: healthSocket },
    });
    this.#stdinOpen = stdinPiped;
    this.#readers = [
      this.#collect(proc.stdout, (s) => this.stdout += s),
      this.#collect(proc.stderr, (s) => this.stderr += s),
    ];
    this.status = proc.status.then((s) => {
      this.exited = s;
      this.#notify();
      return s;
    });
  }

  async #collect(stream: ReadableStream<Uint8Array>, add: (s: string) => void) {
    for await (const chunk of stream) {
      add(decoder.decode(chunk, { stream: true }));
      this.#notify();
    }
  }

  #notify() {
    const ws = this.#waiters;
    this.#waiters = [];
    ws.forEach((w) => w());
  }

  /** Waits until stderr matches `re`; fails if the process exits first. */
  async waitForStderr(re: RegExp, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!re.test(this.stderr)) {
      if (this.exited) {
        throw new Error(
          `runtime exited (${this.exited.code}) before ${re}:\n${this.stderr}`,
        );
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`timed out waiting for ${re}:\n${this.stderr}`);
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
  }

  fetch(path: string, init: RequestInit = {}): Promise<Response> {
    return fetch(`http://skiff.invalid${path}`, {
      signal: AbortSignal.timeout(ANSWER_TIMEOUT_MS),
      ...init,
      client: this.client,
    });
  }

  async text(path: string, init: RequestInit = {}): Promise<[number, string]> {
    const res = await this.fetch(path, init);
    return [res.status, await res.text()];
  }

  /** Asks the --health-socket listener. */
  async health(
    path: string,
    init: RequestInit = {},
  ): Promise<[number, string]> {
    const res = await fetch(`http://skiff.invalid${path}`, {
      signal: AbortSignal.timeout(ANSWER_TIMEOUT_MS),
      ...init,
      client: this.healthClient,
    });
    return [res.status, await res.text()];
  }

  /** Writes to the runtime's stdin (the platform itself never does). */
  async writeStdin(text: string): Promise<void> {
    const w = this.proc.stdin.getWriter();
    try {
      await w.write(new TextEncoder().encode(text));
    } finally {
      w.releaseLock();
    }
  }

  /** Closes the runtime's stdin: what the platform's death looks like. */
  async closeStdin(): Promise<void> {
    if (this.#stdinOpen) {
      this.#stdinOpen = false;
      await this.proc.stdin.close();
    }
  }

  get running(): boolean {
    return this.exited === undefined;
  }

  async stop(): Promise<Deno.CommandStatus> {
    if (this.running) {
      try {
        this.proc.kill("SIGTERM");
      } catch { /* already gone */ }
    }
    // A hostile fixture may ignore SIGTERM's drain; do not hang the suite.
    const kill = setTimeout(() => {
      try {
        this.proc.kill("SIGKILL");
      } catch { /* already gone */ }
    }, 5_000);
    const status = await this.status;
    clearTimeout(kill);
    await this.closeStdin().catch(() => {});
    await Promise.all(this.#readers);
    this.client.close();
    this.healthClient.close();
    for (const d of this.dirs) await Deno.remove(d, { recursive: true });
    return status;
  }
}

export interface Dirs {
  runtimeDir: string;
  codeDir: string;
  tmpDir: string;
}

/** The three dirs of one instance, each a fresh temp dir. */
export async function makeDirs(prefix = "skiff-"): Promise<Dirs> {
  const [runtimeDir, codeDir, tmpDir] = await Promise.all(
    ["runtime-", "code-", "tmp-"].map((p) =>
      Deno.makeTempDir({ prefix: `${prefix}${p}` })
    ),
  );
  return { runtimeDir, codeDir, tmpDir };
}

export async function start(opts: StartOptions): Promise<Runtime> {
  const { dirs, main, modulePath } = await layOut(opts);
  const { runtimeDir, codeDir, tmpDir } = dirs;
  const socket = `${tmpDir}/fn.sock`;
  const healthSocket = `${tmpDir}/health.sock`;

  const args = await flagsFor(opts, dirs, main);
  args.push(
    "--module",
    modulePath,
    "--listen",
    opts.listen ?? `unix:${socket}`,
  );
  if (opts.drainSecs !== undefined) {
    args.push("--drain-secs", String(opts.drainSecs));
  }
  if (opts.healthPort !== undefined) {
    args.push("--health-port", String(opts.healthPort));
  }
  if (opts.healthSocket) args.push("--health-socket", healthSocket);
  args.push(...envFileArgs(opts, dirs));
  if (opts.exitWithParent) args.push("--exit-with-parent");
  if (opts.waitForGo) args.push("--wait-for-go");

  const proc = new Deno.Command(DENO, {
    args,
    cwd: tmpDir, // as the process runtime does
    stdin: opts.exitWithParent ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
    env: envFor(opts),
  }).spawn();
  const rt = new Runtime(
    proc,
    socket,
    [runtimeDir, codeDir, tmpDir],
    healthSocket,
    opts.exitWithParent,
  );
  if (opts.envOnStdin) await rt.writeStdin(`${JSON.stringify(opts.fnEnv)}\n`);
  if (!opts.noWait) {
    try {
      await rt.waitForStderr(
        opts.listen === undefined
          ? /^skiff-runtime: listening$/m
          : /^skiff-runtime: listening on tcp:/m,
      );
    } catch (e) {
      await rt.stop();
      throw e;
    }
  }
  return rt;
}

/** Starts a runtime for `opts`, runs `fn`, always stops the runtime. */
export async function withRuntime(
  opts: StartOptions,
  fn: (rt: Runtime) => Promise<void>,
) {
  const rt = await start(opts);
  try {
    await fn(rt);
  } finally {
    await rt.stop();
  }
}

/** The exit status of a runtime expected to exit on its own; kills it and
 * fails if it is still running after `ms`. */
export async function exitOf(
  rt: Runtime,
  ms = 15_000,
): Promise<Deno.CommandStatus> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((r) => {
    timer = setTimeout(() => r("timeout"), ms);
  });
  const res = await Promise.race([rt.status, timeout]);
  clearTimeout(timer);
  if (res === "timeout") {
    await rt.stop();
    throw new Error(`runtime did not exit within ${ms} ms:\n${rt.stderr}`);
  }
  return res;
}

export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export async function assertFunctionError(
  res: Response,
  message: string | RegExp,
) {
  assert.equal(res.status, 500);
  assert.match(res.headers.get("content-type") ?? "", /application\/json/);
  const body = await res.json();
  assert.equal(body.error.code, "function_error");
  if (typeof message === "string") assert.equal(body.error.message, message);
  else assert.match(body.error.message, message);
}
