// Skiff client runtime: loads ONE user function module and serves it over HTTP.
//
// Usage (the Deno flags come from deno-flags.txt):
//   deno <flags...> main.ts --module <abs path> --listen unix:<abs path>
//   deno <flags...> main.ts --module <abs path> --listen tcp:<host>:<port>
//                           [--health-port <port>] [--health-socket <path>]
//                           [--exit-with-parent]
//
// Exit codes:
//   0   clean shutdown after SIGTERM / SIGINT
//   64  bad command line
//   71  could not listen (main or health listener)
//   78  the user module failed to load or has an unsupported default export
//
// This file must not depend on a config file (the runtime runs with
// --no-config) nor on any remote/npm module (--no-remote --no-npm).

const PREFIX = "skiff-runtime:";
const EXIT_USAGE = 64;
const EXIT_LISTEN = 71;
const EXIT_MODULE = 78;

// Captured before any user code runs, so a user module that replaces these
// globals cannot break the runtime's own logging or response checks.
const log = console.error.bind(console);
const ResponseCtor = Response;
const JSONStringify = JSON.stringify;

function oneLine(s: string): string {
  return s.split("\n")
    .map((l) => l.trim())
    .filter((l) => !/^[|~^\s]*$/.test(l)) // drop blank and caret-marker lines
    .join("; ");
}

function errorMessage(e: unknown): string {
  if (e instanceof Error) return e.message;
  try {
    return String(e);
  } catch {
    return "unknown error";
  }
}

function errorDetail(e: unknown): string {
  if (e instanceof Error && typeof e.stack === "string") return e.stack;
  return errorMessage(e);
}

/** Message for a module load failure, phrased for the function's author. */
function loadErrorMessage(e: unknown): string {
  let msg = errorMessage(e)
    .replace(
      /, run again with the --allow-\w+ flag/,
      " (not permitted in a Skiff function)",
    );
  // Module graph errors (syntax, resolution) are TypeErrors whose message
  // says it all; other error classes (NotCapable, ...) are worth naming.
  const plain = ["Error", "TypeError"];
  if (
    e instanceof Error && !plain.includes(e.name) && !msg.startsWith(e.name)
  ) {
    msg = `${e.name}: ${msg}`;
  }
  return msg;
}

function fatal(code: number, message: string): never {
  log(`${PREFIX} ${oneLine(message)}`);
  Deno.exit(code);
}

// ---------------------------------------------------------------------------
// Global safety net: stray async errors from user code must not kill the
// instance. Installed before the user module is imported.

globalThis.addEventListener("unhandledrejection", (ev) => {
  ev.preventDefault();
  log(`${PREFIX} unhandled promise rejection: ${errorDetail(ev.reason)}`);
});
globalThis.addEventListener("error", (ev) => {
  ev.preventDefault();
  log(`${PREFIX} uncaught exception: ${errorDetail(ev.error ?? ev.message)}`);
});

// ---------------------------------------------------------------------------
// Arguments

type Listen =
  | { kind: "unix"; path: string }
  | { kind: "tcp"; hostname: string; port: number };

interface Args {
  module: string;
  listen: Listen;
  healthPort?: number;
  /** A unix socket answering /healthz from the same isolate (process runtime). */
  healthSocket?: string;
  /** Exit when stdin reaches EOF (the process runtime's parent-death signal). */
  exitWithParent: boolean;
}

function parsePort(s: string, what: string): number {
  if (!/^\d{1,5}$/.test(s) || Number(s) > 65535) {
    fatal(EXIT_USAGE, `invalid ${what}: ${JSONStringify(s)}`);
  }
  return Number(s);
}

function parseListen(s: string): Listen {
  if (s.startsWith("unix:")) {
    const path = s.slice("unix:".length);
    if (!path.startsWith("/")) {
      fatal(EXIT_USAGE, `--listen unix: needs an absolute path, got ${s}`);
    }
    return { kind: "unix", path };
  }
  if (s.startsWith("tcp:")) {
    const rest = s.slice("tcp:".length);
    const colon = rest.lastIndexOf(":");
    if (colon <= 0) {
      fatal(EXIT_USAGE, `--listen tcp: needs <host>:<port>, got ${s}`);
    }
    let hostname = rest.slice(0, colon);
    if (hostname.startsWith("[") && hostname.endsWith("]")) {
      hostname = hostname.slice(1, -1);
    }
    return {
      kind: "tcp",
      hostname,
      port: parsePort(rest.slice(colon + 1), "port"),
    };
  }
  fatal(
    EXIT_USAGE,
    `--listen must be unix:<path> or tcp:<host>:<port>, got ${s}`,
  );
}

function parseArgs(argv: string[]): Args {
  const values = new Map<string, string>();
  const known = ["--module", "--listen", "--health-port", "--health-socket"];
  let exitWithParent = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--exit-with-parent") {
      exitWithParent = true;
      continue;
    }
    const eq = arg.indexOf("=");
    const name = eq >= 0 ? arg.slice(0, eq) : arg;
    if (!known.includes(name)) {
      fatal(EXIT_USAGE, `unknown argument ${JSONStringify(arg)}`);
    }
    let value: string;
    if (eq >= 0) {
      value = arg.slice(eq + 1);
    } else {
      if (i + 1 >= argv.length) fatal(EXIT_USAGE, `${name} needs a value`);
      value = argv[++i];
    }
    values.set(name, value);
  }
  const module = values.get("--module");
  if (!module) fatal(EXIT_USAGE, "--module <absolute path> is required");
  if (!module.startsWith("/")) {
    fatal(EXIT_USAGE, `--module needs an absolute path, got ${module}`);
  }
  const listen = values.get("--listen");
  if (!listen) {
    fatal(EXIT_USAGE, "--listen unix:<path> | tcp:<host>:<port> is required");
  }
  const hp = values.get("--health-port");
  return {
    module,
    listen: parseListen(listen),
    healthPort: hp === undefined ? undefined : parsePort(hp, "--health-port"),
    healthSocket: values.get("--health-socket"),
    exitWithParent,
  };
}

/** file: URL for an absolute POSIX path (no std import available offline). */
function toFileUrl(path: string): URL {
  const url = new URL("file:///");
  // The pathname setter escapes spaces, '?' and '#', but not '%'.
  url.pathname = path.replaceAll("%", "%25");
  return url;
}

// ---------------------------------------------------------------------------
// Handler shapes

type Invoke = (req: Request, info: Deno.ServeHandlerInfo) => Promise<Response>;

/** RequestEvent-like object given to legacy "svrless" handlers. */
interface RequestEventLike {
  readonly request: Request;
  respondWith(r: Response | PromiseLike<Response>): Promise<void>;
}

function functionError(e: unknown): Response {
  log(`${PREFIX} function error: ${errorDetail(e)}`);
  return errorResponse(errorMessage(e));
}

function errorResponse(message: string): Response {
  return new ResponseCtor(
    JSONStringify({ error: { code: "function_error", message } }),
    { status: 500, headers: { "content-type": "application/json" } },
  );
}

function typeName(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "object") {
    const name = (v as { constructor?: { name?: unknown } }).constructor?.name;
    return typeof name === "string" && name !== "Object" ? name : "object";
  }
  return typeof v;
}

function notAResponse(v: unknown): Response {
  const message = `handler returned ${typeName(v)}, expected a Response`;
  log(`${PREFIX} function error: ${message}`);
  return errorResponse(message);
}

function lateError(e: unknown): void {
  log(
    `${PREFIX} function error after the response was chosen: ${errorDetail(e)}`,
  );
}

/** Shape (a): `export default { fetch(req, info) { ... } }`. */
function objectInvoker(obj: { fetch: (...a: unknown[]) => unknown }): Invoke {
  return async (req, info) => {
    let v: unknown;
    try {
      v = await obj.fetch(req, info);
    } catch (e) {
      return functionError(e);
    }
    return v instanceof ResponseCtor ? v : notAResponse(v);
  };
}

/**
 * Shapes (b) and (c), both plain functions. The single argument is the
 * Request itself, augmented with non-enumerable `req` (a RequestEvent-like
 * object) and `conn` properties, so `(req) => Response` and
 * `({ req, conn }) => { req.respondWith(...) }` both work. The first response
 * chosen wins: a respondWith() call made before the handler settles, else
 * the handler's returned Response.
 */
function functionInvoker(
  fn: (...a: unknown[]) => unknown,
  localAddr: Deno.Addr,
): Invoke {
  return (request, info) =>
    new Promise<Response>((resolve) => {
      let chosen = false;
      let respondWithCalled = false;
      const choose = (r: Response) => {
        if (!chosen) {
          chosen = true;
          resolve(r);
        }
      };
      const event: RequestEventLike = {
        request,
        respondWith(r) {
          if (respondWithCalled) {
            throw new Error(
              "respondWith() was already called for this request",
            );
          }
          respondWithCalled = true;
          const p = Promise.resolve(r).then((v) => {
            if (!(v instanceof ResponseCtor)) {
              throw new TypeError(
                `respondWith() got ${typeName(v)}, expected a Response`,
              );
            }
            return v;
          });
          p.then(
            choose,
            (e) => chosen ? lateError(e) : choose(functionError(e)),
          );
          const done = p.then(() => {});
          done.catch(() => {}); // observed above; don't also report it as unhandled
          return done;
        },
      };
      Object.defineProperty(request, "req", {
        value: event,
        enumerable: false,
        configurable: true,
        writable: true,
      });
      Object.defineProperty(request, "conn", {
        value: { remoteAddr: info.remoteAddr, localAddr },
        enumerable: false,
        configurable: true,
        writable: true,
      });

      let result: unknown;
      try {
        result = fn(request, info);
      } catch (e) {
        if (respondWithCalled) lateError(e);
        else choose(functionError(e));
        return;
      }
      Promise.resolve(result).then(
        (v) => {
          if (respondWithCalled) return; // respondWith's outcome decides
          if (v instanceof ResponseCtor) choose(v);
          else if (v !== undefined) choose(notAResponse(v));
          // undefined: keep waiting for respondWith (the router times out).
        },
        (e) => {
          if (respondWithCalled) lateError(e);
          else choose(functionError(e));
        },
      );
    });
}

function makeInvoker(
  mod: Record<string, unknown>,
  localAddr: Deno.Addr,
): Invoke {
  if (!("default" in mod)) {
    throw new Error("the module has no default export");
  }
  const d = mod.default;
  if (typeof d === "function") {
    return functionInvoker(d as (...a: unknown[]) => unknown, localAddr);
  }
  if (typeof d === "object" && d !== null) {
    const f = (d as { fetch?: unknown }).fetch;
    if (typeof f === "function") {
      return objectInvoker(d as { fetch: (...a: unknown[]) => unknown });
    }
  }
  throw new Error(
    `the default export is ${typeName(d)}; expected a function ` +
      "or an object with a fetch(request) method",
  );
}

// ---------------------------------------------------------------------------
// Main

function listenFailure(what: string, e: unknown): never {
  let hint = "";
  if (e instanceof Deno.errors.NotCapable) {
    hint = " (the address is refused by the sandbox, e.g. it is in --deny-net)";
  }
  fatal(EXIT_LISTEN, `cannot listen on ${what}: ${errorMessage(e)}${hint}`);
}

function removeStaleSocket(path: string): void {
  try {
    if (Deno.lstatSync(path).isSocket) Deno.removeSync(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}

async function main(): Promise<void> {
  const args = parseArgs(Deno.args);
  let ready = false;
  if (args.exitWithParent) {
    // The platform holds our stdin open; EOF means it is gone (even if it was
    // SIGKILLed), so an orphaned instance never lingers.
    (async () => {
      const buf = new Uint8Array(256);
      try {
        while ((await Deno.stdin.read(buf)) !== null) { /* keep reading */ }
      } catch { /* treat errors as EOF */ }
      log(`${PREFIX} platform gone (stdin closed): exiting`);
      Deno.exit(0);
    })();
  }
  const servers: Deno.HttpServer[] = [];

  // Registered before listening, so a SIGTERM right after "listening on"
  // still drains gracefully (exit 0) and removes the unix socket.
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    ready = false;
    log(`${PREFIX} ${signal}: draining in-flight requests`);
    Promise.allSettled(servers.map((s) => s.shutdown())).then(() =>
      Deno.exit(0)
    );
  };
  Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));
  Deno.addSignalListener("SIGINT", () => stop("SIGINT"));

  // Health listener first, so /healthz answers while the module loads and
  // /ready says 503 until the main listener is up.
  const health = (req: Request) => {
    const path = new URL(req.url).pathname;
    if (req.method !== "GET" && req.method !== "HEAD") {
      return new ResponseCtor("method not allowed\n", { status: 405 });
    }
    if (path === "/healthz") return new ResponseCtor("ok\n");
    if (path === "/ready") {
      return ready
        ? new ResponseCtor("ready\n")
        : new ResponseCtor("not ready\n", { status: 503 });
    }
    return new ResponseCtor("not found\n", { status: 404 });
  };
  if (args.healthPort !== undefined) {
    const where = `0.0.0.0:${args.healthPort}`;
    try {
      servers.push(Deno.serve({
        hostname: "0.0.0.0",
        port: args.healthPort,
        onListen: (a) => log(`${PREFIX} health on ${a.hostname}:${a.port}`),
      }, health));
    } catch (e) {
      listenFailure(`health ${where}`, e);
    }
  }
  // Served by the same isolate as the function: if the function spins the
  // event loop, this stops answering too, which is how the platform tells a
  // stuck instance from a slow request.
  if (args.healthSocket !== undefined) {
    try {
      removeStaleSocket(args.healthSocket);
      servers.push(Deno.serve({
        path: args.healthSocket,
        onListen: () => {},
      }, health));
    } catch (e) {
      listenFailure(`health unix:${args.healthSocket}`, e);
    }
  }

  const listen = args.listen;
  const localAddr: Deno.Addr = listen.kind === "unix"
    ? { transport: "unix", path: listen.path }
    : { transport: "tcp", hostname: listen.hostname, port: listen.port };

  let invoke: Invoke;
  try {
    const mod = await import(toFileUrl(args.module).href);
    invoke = makeInvoker(mod, localAddr);
  } catch (e) {
    fatal(
      EXIT_MODULE,
      `cannot load function module ${args.module}: ${loadErrorMessage(e)}`,
    );
  }

  if (stopping) return; // SIGTERM arrived while the module was loading

  const handler = async (req: Request, info: Deno.ServeHandlerInfo) => {
    try {
      return await invoke(req, info);
    } catch (e) {
      return functionError(e);
    }
  };
  const onError = (e: unknown) => functionError(e);

  try {
    if (listen.kind === "unix") {
      removeStaleSocket(listen.path);
      servers.push(Deno.serve({
        path: listen.path,
        onError,
        onListen: (a) => {
          ready = true;
          log(`${PREFIX} listening on unix:${a.path}`);
        },
      }, handler));
    } else {
      servers.push(Deno.serve({
        hostname: listen.hostname,
        port: listen.port,
        onError,
        onListen: (a) => {
          if (localAddr.transport === "tcp") localAddr.port = a.port;
          ready = true;
          const host = a.hostname.includes(":")
            ? `[${a.hostname}]`
            : a.hostname;
          log(`${PREFIX} listening on tcp:${host}:${a.port}`);
        },
      }, handler));
    }
  } catch (e) {
    const where = listen.kind === "unix"
      ? `unix:${listen.path}`
      : `tcp:${listen.hostname}:${listen.port}`;
    listenFailure(where, e);
  }
}

await main();
