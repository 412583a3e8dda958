// Skiff client runtime: loads ONE user function module and serves it over HTTP.
//
// Usage (the Deno flags come from deno-flags.txt):
//   deno <flags...> main.ts --module <abs path> --listen unix:<abs path>
//   deno <flags...> main.ts --module <abs path> --listen tcp:<host>:<port>
//                           [--health-port <port>] [--health-socket <path>]
//                           [--env-file <path> | --env-file -]
//                           [--exit-with-parent [--wait-for-go]]
//   deno <flags...> main.ts --probe --module <abs path>
//     imports the module, prints ONE JSON line naming its handler shape (or
//     why it has none) to stdout and exits 0 without listening.
//
// --env-file: a JSON object {"NAME":"value",…}, the function's env and
// secrets, read before the module is imported; `-` reads it as the FIRST LINE
// of stdin (then, with --wait-for-go, the go byte follows; stdin stays open
// as the lifeline). The Deno flags grant --allow-env=<exactly those names>.
// The function then sees exactly those names through Deno.env.get/has/
// toObject, node's process.env and the `env` handler argument.
//
// Exit codes:
//   0   clean shutdown after SIGTERM / SIGINT, or stdin closed (--exit-with-parent)
//   64  bad command line
//   71  could not listen (main or health listener)
//   78  the user module failed to load or has no handler of a known shape
//
// This file must not depend on a config file (the runtime runs with
// --no-config) nor on any remote/npm module (--no-remote --no-npm).
//
// The user's module runs in this same realm and may replace any global or
// patch any prototype. Everything the runtime does after importing it (exit
// with its parent, answer health probes, turn errors into 500s, log) goes
// through references captured below, before the import, and through objects
// whose lookups cannot reach a prototype the user can change.

// ---------------------------------------------------------------------------
// Captured before any user code runs

// `uncurryThis(f)(self, ...a)` calls the original `f` even after the user
// replaces `Function.prototype.call` or `f`'s home property.
const uncurryThis = Function.prototype.bind.bind(Function.prototype.call) as <
  T,
  A extends unknown[],
  R,
>(fn: (this: T, ...args: A) => R) => (self: T, ...args: A) => R;

const ObjectDefineProperty = Object.defineProperty;
const ObjectGetOwnPropertyDescriptor = Object.getOwnPropertyDescriptor;
const ObjectSetPrototypeOf = Object.setPrototypeOf;
const ObjectPrototypeIsPrototypeOf = uncurryThis(
  Object.prototype.isPrototypeOf,
);
const ArrayIsArray = Array.isArray;
const StringCtor = String;
const StringPrototypeIndexOf = uncurryThis(String.prototype.indexOf);
const StringPrototypeLastIndexOf = uncurryThis(String.prototype.lastIndexOf);
const StringPrototypeSlice = uncurryThis(String.prototype.slice);
const StringPrototypeCharCodeAt = uncurryThis(String.prototype.charCodeAt);
const StringPrototypeStartsWith = uncurryThis(String.prototype.startsWith);
const JSONStringify = JSON.stringify;
const JSONParse = JSON.parse;
const PromiseCtor = Promise;
const PromisePrototype = Promise.prototype;
const PromisePrototypeThen = uncurryThis(Promise.prototype.then);
const PromisePrototypeThenMethod = Promise.prototype.then;
const ErrorCtor = Error;
const ErrorPrototype = Error.prototype;
const TypeErrorCtor = TypeError;
const ResponseCtor = Response;
const ResponsePrototype = Response.prototype;
const Uint8ArrayCtor = Uint8Array;
const SymbolFor = Symbol.for;
const URLCtor = URL;
const setTimeoutFn = setTimeout;
const EventCtor = Event;
const ReflectApply = Reflect.apply;
const SymbolAsyncDispose = Symbol.asyncDispose;
const FunctionPrototypeToString = uncurryThis(Function.prototype.toString);
const ArrayPrototypeSplice = uncurryThis(Array.prototype.splice);
const EventTargetAddEventListener = EventTarget.prototype.addEventListener;
const EventTargetRemoveEventListener =
  EventTarget.prototype.removeEventListener;
const ReadableStreamCancel = uncurryThis(ReadableStream.prototype.cancel);

function getter<T, R>(proto: T, name: string): (self: T) => R {
  const desc = ObjectGetOwnPropertyDescriptor(proto, name);
  if (desc === undefined || desc.get === undefined) {
    throw new ErrorCtor(`no getter ${name}`);
  }
  return uncurryThis(desc.get as (this: T) => R);
}
const TypedArrayPrototype = Object.getPrototypeOf(Uint8Array.prototype);
const TypedArrayByteLength = getter<Uint8Array, number>(
  TypedArrayPrototype,
  "byteLength",
);
const TypedArrayBuffer = getter<Uint8Array, ArrayBuffer>(
  TypedArrayPrototype,
  "buffer",
);
const RequestMethod = getter<Request, string>(Request.prototype, "method");
const ResponseStatus = getter<Response, number>(Response.prototype, "status");
const ResponseStatusText = getter<Response, string>(
  Response.prototype,
  "statusText",
);
const ResponseHeaders = getter<Response, Headers>(
  Response.prototype,
  "headers",
);
const ResponseBody = getter<Response, ReadableStream | null>(
  Response.prototype,
  "body",
);
const RequestUrl = getter<Request, string>(Request.prototype, "url");
const HeadersSet = uncurryThis(Headers.prototype.set);
const RejectionReason = getter<PromiseRejectionEvent, unknown>(
  PromiseRejectionEvent.prototype,
  "reason",
);
const ErrorEventError = getter<ErrorEvent, unknown>(
  ErrorEvent.prototype,
  "error",
);
const ErrorEventMessage = getter<ErrorEvent, string>(
  ErrorEvent.prototype,
  "message",
);
const EventPreventDefault = uncurryThis(Event.prototype.preventDefault);
const TextEncode = uncurryThis(TextEncoder.prototype.encode);
const encoder = new TextEncoder();

const denoExit: (code?: number) => never = Deno.exit;
const denoServe = Deno.serve;
const denoAddSignalListener = Deno.addSignalListener;
const denoLstatSync = Deno.lstatSync;
const denoRemoveSync = Deno.removeSync;
const stdinRead = Deno.stdin.read.bind(Deno.stdin);
const stderrWriteSync = Deno.stderr.writeSync.bind(Deno.stderr);
const stdoutWriteSync = Deno.stdout.writeSync.bind(Deno.stdout);
const NotFoundPrototype = Deno.errors.NotFound.prototype;
const NotCapablePrototype = Deno.errors.NotCapable.prototype;

// Locked, because Deno's own internals look them up after the module loaded:
// every `await` and Deno's serve loop ask a promise for its `constructor` (and
// that for its species) before following it, and every async operation of
// Deno (stdin reads, signals, HTTP) is started with `op.call(...)`. A module
// that replaced them would reroute or break those. `Promise.prototype.then`
// stays replaceable: the runtime never looks it up.
ObjectDefineProperty(Function.prototype, "call", {
  __proto__: null,
  writable: false,
  configurable: false,
} as PropertyDescriptor);
ObjectDefineProperty(PromisePrototype, "constructor", {
  __proto__: null,
  writable: false,
  configurable: false,
} as PropertyDescriptor);
ObjectDefineProperty(PromiseCtor, Symbol.species, {
  __proto__: null,
  configurable: false,
} as PropertyDescriptor);

// Deno.exit() first dispatches "unload" to user listeners unless this flag is
// set, and a listener that never returns would keep an orphan alive. The
// runtime's own exits set it; the user can neither redefine nor pin it.
let unloadDispatched = false;
ObjectDefineProperty(globalThis, SymbolFor("Deno.isUnloadDispatched"), {
  __proto__: null,
  get: () => unloadDispatched,
  set: (v: unknown) => {
    unloadDispatched = !!v;
  },
  configurable: false,
} as PropertyDescriptor);

/** The object with no prototype, so no lookup on it reaches user patches. */
function bare<T extends object>(o: T): T {
  return ObjectSetPrototypeOf(o, null);
}

// ---------------------------------------------------------------------------
// Logging and text

const PREFIX = "skiff-runtime:";
const EXIT_USAGE = 64;
const EXIT_LISTEN = 71;
const EXIT_MODULE = 78;
/** Longest error message put in a 500 answer. */
const MAX_MESSAGE = 4096;

/** [absolute prefix, what to show instead], most specific first. */
const hostPaths: [string, string][] = [];

/** `s` with every occurrence of `needle` replaced (no RegExp, no patched methods). */
function replacePlain(s: string, needle: string, by: string): string {
  if (needle === "") return s;
  let out = "";
  let from = 0;
  for (;;) {
    const at = StringPrototypeIndexOf(s, needle, from);
    if (at < 0) return out + StringPrototypeSlice(s, from);
    out += StringPrototypeSlice(s, from, at) + by;
    from = at + needle.length;
  }
}

/** Host paths in `s` made relative: `file:///…/v3/fn.ts:2:5` → `fn.ts:2:5`. */
function relativize(s: string): string {
  for (let i = 0; i < hostPaths.length; i++) {
    const pair = hostPaths[i];
    s = replacePlain(s, pair[0], pair[1]);
  }
  return s;
}

/** Makes paths under `dir` print as `shown` + the rest, as a URL or a path. */
function hidePathsUnder(dir: string, shown: string): void {
  if (!StringPrototypeStartsWith(dir, "/") || dir === "/") return;
  const slash = dir[dir.length - 1] === "/" ? dir : dir + "/";
  // Stack traces print file: URLs decoded, error messages encoded.
  hostPaths[hostPaths.length] = [toFileUrl(slash).href, shown];
  hostPaths[hostPaths.length] = [`file://${slash}`, shown];
  hostPaths[hostPaths.length] = [slash, shown];
}

/** Writes `text` whole with `write`; never throws (a closed stream loses it). */
function writeAll(write: (b: Uint8Array) => number, text: string): void {
  try {
    const bytes = TextEncode(encoder, text);
    const total = TypedArrayByteLength(bytes);
    let done = 0;
    while (done < total) {
      const rest = done === 0
        ? bytes
        : new Uint8ArrayCtor(TypedArrayBuffer(bytes), done);
      const n = write(rest);
      if (!(n > 0)) return;
      done += n;
    }
  } catch { /* closed or broken: the runtime goes on without it */ }
}

/** Writes one line to stderr; never throws. */
function log(text: string): void {
  writeAll(stderrWriteSync, `${PREFIX} ${relativize(text)}\n`);
}

function isBlank(line: string): boolean {
  // blank, or a code frame's caret/underline marker line: [|~^ \t]*
  for (let i = 0; i < line.length; i++) {
    const c = StringPrototypeCharCodeAt(line, i);
    if (c !== 0x7c && c !== 0x7e && c !== 0x5e && c !== 0x20 && c !== 0x09) {
      return false;
    }
  }
  return true;
}

function trim(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && StringPrototypeCharCodeAt(s, a) <= 0x20) a++;
  while (b > a && StringPrototypeCharCodeAt(s, b - 1) <= 0x20) b--;
  return StringPrototypeSlice(s, a, b);
}

/** The lines of `s` that say something, joined with "; ". */
function oneLine(s: string): string {
  let out = "";
  let from = 0;
  while (from <= s.length) {
    let end = StringPrototypeIndexOf(s, "\n", from);
    if (end < 0) end = s.length;
    const line = trim(StringPrototypeSlice(s, from, end));
    if (!isBlank(line)) out += out === "" ? line : `; ${line}`;
    from = end + 1;
  }
  return out;
}

function exitNow(code: number): never {
  unloadDispatched = true; // no user "unload" listener runs on the way out
  denoExit(code);
}

function fatal(code: number, message: string): never {
  log(oneLine(message));
  exitNow(code);
}

// ---------------------------------------------------------------------------
// Describing what a function threw (any value; its getters may throw)

interface Described {
  /** for the caller: the message alone */
  message: string;
  /** for the owner's log: the stack if there is one */
  detail: string;
  /** the error's class name, when it is an Error */
  name?: string;
}

function isError(v: unknown): v is Error {
  try {
    return v !== null && typeof v === "object" &&
      ObjectPrototypeIsPrototypeOf(ErrorPrototype, v);
  } catch { // a Proxy whose getPrototypeOf trap throws
    return false;
  }
}

function stringField(o: object, key: string): string | undefined {
  const v = (o as Record<string, unknown>)[key];
  return typeof v === "string" ? v : undefined;
}

function describe(e: unknown): Described {
  try {
    if (isError(e)) {
      const message = stringField(e, "message") ?? "";
      const name = stringField(e, "name");
      const stack = stringField(e, "stack");
      const head = name === undefined ? message : `${name}: ${message}`;
      return { message, detail: stack ?? head, name };
    }
    const text = StringCtor(e);
    return { message: text, detail: text };
  } catch {
    const text = "unknown error (describing it threw)";
    return { message: text, detail: text };
  }
}

function isResponse(v: unknown): v is Response {
  try {
    return v !== null && typeof v === "object" &&
      ObjectPrototypeIsPrototypeOf(ResponsePrototype, v);
  } catch {
    return false;
  }
}

function typeName(v: unknown): string {
  if (v === null) return "null";
  try {
    if (ArrayIsArray(v)) return "array";
    if (typeof v === "object") {
      const name = (v as { constructor?: { name?: unknown } }).constructor
        ?.name;
      return typeof name === "string" && name !== "Object" ? name : "object";
    }
  } catch { /* a hostile getter: fall through */ }
  return typeof v;
}

// ---------------------------------------------------------------------------
// Promises and responses handed to Deno

/**
 * A promise with its settle functions. Initialised fields are own properties
 * before the executor assigns them, so the assignment cannot reach a setter
 * the user put on `Object.prototype`.
 */
class Deferred<T> {
  resolve: (v: T) => void = noop;
  reject: (e: unknown) => void = noop;
  readonly promise: Promise<T> = new PromiseCtor<T>((resolve, reject) => {
    this.resolve = resolve;
    this.reject = reject;
  });
}

function deferred<T>(): Deferred<T> {
  return new Deferred<T>();
}

function noop(): void {}

/** Keeps a rejection of `p` from being reported as unhandled. */
function markHandled(p: Promise<unknown>): void {
  PromisePrototypeThen(p, undefined, noop);
}

/**
 * `p` with its own original `then`: Deno's serve loop asks the handler's
 * result for `.then`, which a patched `Promise.prototype.then` would answer.
 */
function shieldPromise<T>(p: Promise<T>): Promise<T> {
  ObjectDefineProperty(p, "then", {
    __proto__: null,
    value: PromisePrototypeThenMethod,
  } as PropertyDescriptor);
  return p;
}

/**
 * `r` with its own `then: undefined`: resolving a promise with an object asks
 * it for `.then`, so a `then` added to `Response.prototype` or
 * `Object.prototype` would capture the runtime's own answers.
 */
function shieldResponse(r: Response): Response {
  ObjectDefineProperty(r, "then", {
    __proto__: null,
    value: undefined,
  } as PropertyDescriptor);
  return r;
}

/**
 * Calls `onValue` with what `v` settles to, or `onError`: at once for a
 * Response or any other non-object; a native promise is followed with the
 * original `then` (its constructor and species are locked); anything else is
 * adopted the way `await` does (a thenable's own `then` is the user's code).
 */
function settle(
  v: unknown,
  onValue: (v: unknown) => void,
  onError: (e: unknown) => void,
): void {
  if (
    isResponse(v) || v === null ||
    (typeof v !== "object" && typeof v !== "function")
  ) {
    onValue(v);
    return;
  }
  try {
    PromisePrototypeThen(v as Promise<unknown>, onValue, onError);
    return;
  } catch { /* not a native promise */ }
  (async () => {
    let value: unknown;
    try {
      value = await v;
    } catch (e) {
      onError(e);
      return;
    }
    onValue(value);
  })();
}

/** A ResponseInit whose every lookup stays inside it. */
function init(status: number, contentType: string): ResponseInit {
  return bare({ status, headers: bare({ "content-type": contentType }) });
}

const TEXT = "text/plain;charset=UTF-8";
const INIT_200 = init(200, TEXT);
const INIT_404 = init(404, TEXT);
const INIT_405 = init(405, TEXT);
const INIT_503 = init(503, TEXT);
const INIT_ERROR = init(500, "application/json");

function answer(body: string, responseInit: ResponseInit): Response {
  return shieldResponse(new ResponseCtor(body, responseInit));
}

function cut(s: string, max: number): string {
  return s.length <= max ? s : `${StringPrototypeSlice(s, 0, max)}…`;
}

function errorResponse(message: string): Response {
  const text = JSONStringify(cut(relativize(message), MAX_MESSAGE));
  return answer(
    `{"error":{"code":"function_error","message":${text}}}`,
    INIT_ERROR,
  );
}

function functionError(e: unknown): Response {
  const d = describe(e);
  log(`function error: ${d.detail}`);
  return errorResponse(d.message);
}

function notAResponse(v: unknown): Response {
  const message = `handler returned ${typeName(v)}, expected a Response`;
  log(`function error: ${message}`);
  return errorResponse(message);
}

function lateError(e: unknown): void {
  log(
    `function error after the response was chosen: ${describe(e).detail}`,
  );
}

// ---------------------------------------------------------------------------
// Global safety net: stray async errors from user code must not kill the
// instance. Installed before the user module is imported, so they run first.

globalThis.addEventListener("unhandledrejection", (ev) => {
  try {
    EventPreventDefault(ev);
    log(`unhandled promise rejection: ${describe(RejectionReason(ev)).detail}`);
  } catch { /* never let the safety net throw */ }
});
globalThis.addEventListener("error", (ev) => {
  try {
    EventPreventDefault(ev);
    const error = ErrorEventError(ev);
    const what = error === undefined || error === null
      ? ErrorEventMessage(ev)
      : describe(error).detail;
    log(`uncaught exception: ${what}`);
  } catch { /* never let the safety net throw */ }
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
  /** Import the module only after a first byte on stdin (needs exitWithParent). */
  waitForGo: boolean;
  /** Only import the module, print its shape as JSON and exit (no listener). */
  probe: boolean;
  /** Where the function's env comes from: a file, or "-" for stdin's first line. */
  envFile?: string;
  /** After SIGTERM: seconds of serving on, not ready, before closing (Kubernetes). */
  drainSecs: number;
}

/** Longest --drain-secs: a drain is bounded by the pod's grace period anyway. */
const MAX_DRAIN_SECS = 600;

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
    return bare({ kind: "unix", path });
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
    return bare({
      kind: "tcp",
      hostname,
      port: parsePort(rest.slice(colon + 1), "port"),
    });
  }
  fatal(
    EXIT_USAGE,
    `--listen must be unix:<path> or tcp:<host>:<port>, got ${s}`,
  );
}

function parseArgs(argv: string[]): Args {
  const values = new Map<string, string>();
  const known = [
    "--module",
    "--listen",
    "--health-port",
    "--health-socket",
    "--env-file",
    "--drain-secs",
  ];
  let exitWithParent = false;
  let waitForGo = false;
  let probe = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--probe") {
      probe = true;
      continue;
    }
    if (arg === "--exit-with-parent") {
      exitWithParent = true;
      continue;
    }
    if (arg === "--wait-for-go") {
      waitForGo = true;
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
  if (!listen && !probe) {
    fatal(EXIT_USAGE, "--listen unix:<path> | tcp:<host>:<port> is required");
  }
  const hp = values.get("--health-port");
  const drain = values.get("--drain-secs") ?? "0";
  if (!/^\d{1,3}$/.test(drain) || Number(drain) > MAX_DRAIN_SECS) {
    fatal(
      EXIT_USAGE,
      `invalid --drain-secs (0 to ${MAX_DRAIN_SECS}): ${JSONStringify(drain)}`,
    );
  }
  return bare({
    module,
    listen: listen ? parseListen(listen) : bare({ kind: "unix", path: "/" }),
    healthPort: hp === undefined ? undefined : parsePort(hp, "--health-port"),
    healthSocket: values.get("--health-socket"),
    exitWithParent,
    waitForGo: waitForGo && exitWithParent,
    probe,
    envFile: values.get("--env-file"),
    drainSecs: Number(drain),
  });
}

/** file: URL for an absolute POSIX path (no std import available offline). */
function toFileUrl(path: string): URL {
  const url = new URLCtor("file:///");
  // The pathname setter escapes spaces, '?' and '#', but not '%'.
  url.pathname = replacePlain(path, "%", "%25");
  return url;
}

function dirOf(path: string): string {
  return StringPrototypeSlice(path, 0, StringPrototypeLastIndexOf(path, "/"));
}

/**
 * What the owner's log shows instead of host paths: the module's own dir
 * disappears (`fn.ts:3:5`), the runtime's dir becomes `<runtime>/`, the
 * instance's dir (its cwd, where its socket lives) `./`.
 */
function hideHostPaths(args: Args): void {
  hidePathsUnder(dirOf(args.module), "");
  const runtimeDir = import.meta.dirname;
  if (runtimeDir !== undefined) hidePathsUnder(runtimeDir, "<runtime>/");
  if (args.listen.kind === "unix" && !args.probe) {
    hidePathsUnder(dirOf(args.listen.path), "./");
  }
  if (args.healthSocket !== undefined) {
    hidePathsUnder(dirOf(args.healthSocket), "./");
  }
}

// ---------------------------------------------------------------------------
// Handler shapes
//
// Precedence when a module has several: default export > named method
// exports > addEventListener("fetch") > Deno.serve(). The first well-formed
// one serves; the others are logged as ignored.

type Invoke = (req: Request, info: Deno.ServeHandlerInfo) => Promise<Response>;
type Fn = (...a: unknown[]) => unknown;
type Shape =
  | "default-function"
  | "default-object"
  | "svrless"
  | "methods"
  | "fetch-listener"
  | "deno-serve";

const NO_HANDLER = "no handler: expected a default export (function or " +
  "{fetch}), named method exports (GET, POST, …), " +
  'addEventListener("fetch", …) or a Deno.serve(…) call at the top level';

/** An own, plain data property (no setter on a prototype is reached). */
function defineData(
  o: object,
  key: string,
  value: unknown,
  enumerable: boolean,
): void {
  ObjectDefineProperty(o, key, {
    __proto__: null,
    value,
    enumerable,
    configurable: true,
    writable: true,
  } as PropertyDescriptor);
}

// ---- the function's env

/** [name, value] of each of the function's env vars and secrets. */
const fnEnv: [string, string][] = [];

/**
 * Takes the function's env (the JSON object of --env-file) before its module
 * runs: each name is set in the process's env (the flags allow exactly these
 * names), and `Deno.env` is narrowed to them, so `get`/`has` answer for the
 * function's names only (others: undefined/false, never the host's),
 * `toObject()` holds exactly them, and node's `process.env` (which reads
 * through `Deno.env`) shows the same. A value is never logged.
 */
function takeFnEnv(text: string): void {
  let parsed: unknown;
  try {
    parsed = JSONParse(text);
  } catch {
    fatal(EXIT_USAGE, "--env-file: not a JSON object");
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    fatal(EXIT_USAGE, "--env-file: not a JSON object");
  }
  const values = new Map<string, string>();
  for (const [name, value] of Object.entries(parsed as object)) {
    if (typeof value !== "string") {
      fatal(EXIT_USAGE, `--env-file: the value of ${name} is not a string`);
    }
    try {
      Deno.env.set(name, value);
    } catch (e) {
      fatal(
        EXIT_USAGE,
        `--env-file: cannot set ${name}: ${(e as Error).name}`,
      );
    }
    values.set(name, value);
    fnEnv[fnEnv.length] = [name, value];
  }
  narrowDenoEnv(values);
}

/** `Deno.env` answering from the function's own names only. */
function narrowDenoEnv(values: Map<string, string>): void {
  const env = Deno.env as unknown as Record<string, unknown>;
  const realSet = Deno.env.set.bind(Deno.env);
  const realDelete = Deno.env.delete.bind(Deno.env);
  env.get = (name: string): string | undefined => values.get(`${name}`);
  env.has = (name: string): boolean => values.has(`${name}`);
  env.toObject = (): Record<string, string> => {
    const o: Record<string, string> = {};
    values.forEach((v, k) => defineData(o, k, v, true));
    return o;
  };
  // Allowed only for the function's names (the flags refuse the rest).
  env.set = (name: string, value: string): void => {
    realSet(name, value);
    values.set(`${name}`, `${value}`);
  };
  env.delete = (name: string): void => {
    realDelete(name);
    values.delete(`${name}`);
  };
}

/** The --env-file given as a path. */
function readEnvFile(path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (e) {
    fatal(EXIT_USAGE, `--env-file: cannot read ${path}: ${(e as Error).name}`);
  }
}

/**
 * The second argument of default-export and method handlers: the function's
 * env as a fresh plain object (own enumerable properties), which also carries
 * Deno's `remoteAddr` and `completed` as non-enumerable properties, so
 * handlers written as `(req, info)` keep working.
 */
function envArg(info: Deno.ServeHandlerInfo): Record<string, unknown> {
  const env: Record<string, unknown> = {};
  defineData(env, "remoteAddr", info.remoteAddr, false);
  defineData(env, "completed", info.completed, false);
  for (let i = 0; i < fnEnv.length; i++) {
    defineData(env, fnEnv[i][0], fnEnv[i][1], true);
  }
  return env;
}

// ---- waitUntil

/** Promises given to waitUntil() that have not settled yet. */
let waitingFor = 0;
let waitIdle: Deferred<void> | undefined;

/** Keeps working on `p` after the response; a rejection is only logged. */
function waitUntil(p: unknown): void {
  waitingFor++;
  const done = () => {
    waitingFor--;
    if (waitingFor === 0 && waitIdle !== undefined) {
      waitIdle.resolve();
      waitIdle = undefined;
    }
  };
  settle(p, done, (e) => {
    log(`waitUntil() promise rejected: ${describe(e).detail}`);
    done();
  });
}

/** Settles once no waitUntil() promise is pending. */
function waitUntilIdle(): Promise<void> {
  if (waitIdle === undefined) {
    waitIdle = deferred<void>();
    if (waitingFor === 0) waitIdle.resolve();
  }
  return waitIdle.promise;
}

/** The `ctx` argument (Cloudflare's ExecutionContext). */
function makeCtx(): object {
  return {
    waitUntil(p: unknown): void {
      waitUntil(p);
    },
    passThroughOnException(): void {},
  };
}

// ---- one request's answer

/** RequestEvent-like object given to legacy "svrless" handlers. */
interface RequestEventLike {
  readonly request: Request;
  respondWith(r: Response | PromiseLike<Response>): Promise<void>;
}

interface Exchange {
  readonly promise: Promise<Response>;
  /** The first Response chosen is the answer; later ones are dropped. */
  choose(r: Response): void;
  /** Answers 500 if nothing was chosen yet, else logs the error. */
  fail(e: unknown): void;
  respondWith(r: unknown): Promise<void>;
  respondWithCalled(): boolean;
}

function exchange(): Exchange {
  const out = deferred<Response>();
  let chosen = false;
  let called = false;
  const choose = (r: Response) => {
    if (!chosen) {
      chosen = true;
      out.resolve(r);
    }
  };
  const fail = (e: unknown) => chosen ? lateError(e) : choose(functionError(e));
  const respondWith = (r: unknown): Promise<void> => {
    if (called) {
      throw new ErrorCtor("respondWith() was already called for this request");
    }
    called = true;
    const done = deferred<void>();
    markHandled(done.promise); // observed here; not also "unhandled"
    settle(r, (v) => {
      if (isResponse(v)) {
        choose(v);
        done.resolve();
        return;
      }
      const e = new TypeErrorCtor(
        `respondWith() got ${typeName(v)}, expected a Response`,
      );
      fail(e);
      done.reject(e);
    }, (e) => {
      fail(e);
      done.reject(e);
    });
    return done.promise;
  };
  return bare({
    promise: out.promise,
    choose,
    fail,
    respondWith,
    respondWithCalled: () => called,
  });
}

/**
 * Answers with what `call` returns (a Response or a promise of one); `map`
 * may rewrite the Response (HEAD drops the body).
 */
function answerWith(
  call: () => unknown,
  map?: (r: Response) => Response,
): Promise<Response> {
  const ex = exchange();
  let result: unknown;
  try {
    result = call();
  } catch (e) {
    ex.fail(e);
    return ex.promise;
  }
  settle(result, (v) => {
    if (!isResponse(v)) ex.choose(notAResponse(v));
    else if (map === undefined) ex.choose(v);
    else {
      try {
        ex.choose(map(v));
      } catch (e) {
        ex.fail(e);
      }
    }
  }, ex.fail);
  return ex.promise;
}

// ---- default export

/** `export default { fetch(req, env, ctx) }`, called as `obj.fetch(...)`. */
function objectInvoker(obj: { fetch: Fn }): Invoke {
  return (req, info) =>
    answerWith(() => obj.fetch(req, envArg(info), makeCtx()));
}

function hiddenProperty(o: object, key: string, value: unknown): void {
  defineData(o, key, value, false);
}

/**
 * A default-exported function, modern or svrless. The first argument is the
 * Request itself, augmented with non-enumerable `req` (a RequestEvent-like
 * object) and `conn` properties, so `(req) => Response` and
 * `({ req, conn }) => { req.respondWith(...) }` both work; then env (with
 * Deno's info) and ctx. The first response chosen wins: a respondWith() call
 * made before the handler settles, else the handler's returned Response.
 */
function functionInvoker(fn: Fn, localAddr: Deno.Addr): Invoke {
  return (request, info) => {
    const ex = exchange();
    const event: RequestEventLike = {
      request,
      respondWith: (r) => ex.respondWith(r),
    };
    hiddenProperty(request, "req", event);
    hiddenProperty(request, "conn", { remoteAddr: info.remoteAddr, localAddr });

    let result: unknown;
    try {
      result = fn(request, envArg(info), makeCtx());
    } catch (e) {
      if (ex.respondWithCalled()) lateError(e);
      else ex.fail(e);
      return ex.promise;
    }
    settle(result, (v) => {
      if (ex.respondWithCalled()) return; // respondWith's outcome decides
      if (isResponse(v)) ex.choose(v);
      else if (v !== undefined) ex.choose(notAResponse(v));
      // undefined: keep waiting for respondWith (the router times out).
    }, (e) => {
      if (ex.respondWithCalled()) lateError(e);
      else ex.fail(e);
    });
    return ex.promise;
  };
}

/** Whether `({ req … })` destructures a `req` (reported by the probe only). */
function looksSvrless(fn: Fn): boolean {
  let src: string;
  try {
    src = FunctionPrototypeToString(fn);
  } catch {
    return false;
  }
  const open = StringPrototypeIndexOf(src, "(");
  if (open < 0) return false;
  const arrow = StringPrototypeIndexOf(src, "=>");
  if (arrow >= 0 && arrow < open) return false; // `req => …`
  let i = open + 1;
  while (i < src.length && StringPrototypeCharCodeAt(src, i) <= 0x20) i++;
  if (src[i] !== "{") return false;
  const close = StringPrototypeIndexOf(src, "}", i);
  if (close < 0) return false;
  const pattern = StringPrototypeSlice(src, i + 1, close);
  for (let at = 0;;) {
    at = StringPrototypeIndexOf(pattern, "req", at);
    if (at < 0) return false;
    const before = at === 0 ? " " : pattern[at - 1];
    const after = at + 3 >= pattern.length ? " " : pattern[at + 3];
    if (!isIdentChar(before) && !isIdentChar(after)) return true;
    at += 3;
  }
}

function isIdentChar(c: string): boolean {
  const n = StringPrototypeCharCodeAt(c, 0);
  return (n >= 0x30 && n <= 0x39) || (n >= 0x41 && n <= 0x5a) ||
    (n >= 0x61 && n <= 0x7a) || n === 0x5f || n === 0x24;
}

// ---- named method exports (Vercel / Next.js route handlers)

const METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/** The exported method handlers, or undefined when there is none. */
function methodHandlers(
  mod: Record<string, unknown>,
): Record<string, Fn> | undefined {
  const found: Record<string, Fn> = bare({});
  let any = false;
  for (let i = 0; i < METHODS.length; i++) {
    const f = mod[METHODS[i]];
    if (typeof f === "function") {
      found[METHODS[i]] = f as Fn;
      any = true;
    }
  }
  return any ? found : undefined;
}

/** A Response with `r`'s status and headers and no body (for HEAD). */
function withoutBody(r: Response): Response {
  const stripped = new ResponseCtor(
    null,
    bare({
      status: ResponseStatus(r),
      statusText: ResponseStatusText(r),
      headers: ResponseHeaders(r),
    }),
  );
  try {
    const body = ResponseBody(r);
    if (body !== null) markHandled(ReadableStreamCancel(body));
  } catch { /* a locked or odd body: dropped anyway */ }
  return shieldResponse(stripped);
}

function methodsInvoker(handlers: Record<string, Fn>): Invoke {
  let allow = "";
  const add = (m: string) => allow += allow === "" ? m : `, ${m}`;
  for (let i = 0; i < METHODS.length; i++) {
    const m = METHODS[i];
    if (
      handlers[m] !== undefined || m === "OPTIONS" ||
      (m === "HEAD" && handlers.GET !== undefined)
    ) add(m);
  }
  const initOptions = bare({
    status: 204,
    headers: bare({ allow }),
  });
  const init405 = bare({
    status: 405,
    headers: bare({ allow, "content-type": "application/json" }),
  });
  return (req, info) => {
    let method = "";
    try {
      method = RequestMethod(req);
    } catch { /* answer 405 below */ }
    const f = handlers[method];
    if (f !== undefined) {
      return answerWith(() => f(req, envArg(info), makeCtx()));
    }
    const get = handlers.GET;
    if (method === "HEAD" && get !== undefined) {
      return answerWith(() => get(req, envArg(info), makeCtx()), withoutBody);
    }
    const d = deferred<Response>();
    if (method === "OPTIONS") d.resolve(answerNull(initOptions));
    else {
      const message = JSONStringify(
        `method ${cut(method, 64)} is not allowed; allowed: ${allow}`,
      );
      d.resolve(answer(
        `{"error":{"code":"method_not_allowed","message":${message}}}`,
        init405,
      ));
    }
    return d.promise;
  };
}

function answerNull(responseInit: ResponseInit): Response {
  return shieldResponse(new ResponseCtor(null, responseInit));
}

// ---- addEventListener("fetch", …) (service-worker style)

/** Listeners registered for "fetch": functions or `{ handleEvent }`. */
const fetchListeners: unknown[] = bare([]);

function fetchListenerIndex(l: unknown): number {
  for (let i = 0; i < fetchListeners.length; i++) {
    if (fetchListeners[i] === l) return i;
  }
  return -1;
}

/**
 * Dispatches a FetchEvent-like `Event` to the listeners in order until one
 * calls `respondWith` (which, as in service workers, must happen during the
 * dispatch). A listener that throws before any respondWith answers 500.
 */
function fetchListenerInvoker(): Invoke {
  return (request, _info) => {
    const ex = exchange();
    let dispatching = true;
    const ev = new EventCtor("fetch");
    defineData(ev, "request", request, true);
    defineData(ev, "respondWith", (r: unknown) => {
      if (!dispatching && !ex.respondWithCalled()) {
        throw new ErrorCtor(
          "respondWith() must be called synchronously in the fetch listener",
        );
      }
      return ex.respondWith(r);
    }, true);
    defineData(ev, "waitUntil", (p: unknown) => waitUntil(p), true);
    defineData(ev, "passThroughOnException", noop, true);
    // A snapshot: listeners added or removed during the dispatch do not
    // change it (as with DOM events).
    const listeners: unknown[] = bare([]);
    for (let i = 0; i < fetchListeners.length; i++) {
      listeners[i] = fetchListeners[i];
    }
    for (let i = 0; i < listeners.length; i++) {
      const l = listeners[i];
      try {
        if (typeof l === "function") ReflectApply(l, globalThis, [ev]);
        else {
          const h = (l as { handleEvent?: unknown }).handleEvent;
          if (typeof h === "function") ReflectApply(h, l, [ev]);
        }
      } catch (e) {
        if (ex.respondWithCalled()) lateError(e);
        else ex.fail(e);
        break;
      }
      if (ex.respondWithCalled()) break;
    }
    dispatching = false;
    if (!ex.respondWithCalled()) {
      ex.fail(
        new ErrorCtor(
          'no "fetch" listener called event.respondWith() during the dispatch',
        ),
      );
    }
    return ex.promise;
  };
}

// ---- Deno.serve(…) at the top level

interface CapturedServe {
  handler: Fn;
  onListen?: Fn;
  addr: Deno.Addr;
  finish: () => void;
}
let captured: CapturedServe | undefined;
/** Set once the module's shape is chosen: later Deno.serve() calls are ignored. */
let shapeChosen = false;
/** Resolves when the module waits on `server.finished` during its import. */
const serveAwaited = deferred<void>();

/**
 * `server.finished` as given to the module: observing it (`await`, `.then`)
 * tells the runtime the module will not finish loading before the server
 * does, so it serves the captured handler at once.
 */
class FinishedPromise<T> extends PromiseCtor<T> {
  // deno-lint-ignore no-explicit-any
  override then<A = T, B = never>(a?: any, b?: any): Promise<A | B> {
    serveAwaited.resolve();
    return super.then(a, b);
  }
}

function fakeServer(addr: Deno.Addr, finished: Promise<void>): object {
  const resolved = () => {
    const d = deferred<void>();
    d.resolve();
    return d.promise;
  };
  return {
    finished,
    addr,
    shutdown: resolved,
    ref: noop,
    unref: noop,
    [SymbolAsyncDispose]: resolved,
  };
}

/**
 * Stands in for Deno.serve while the module loads: captures the handler
 * (the runtime itself listens where the platform says; port, hostname and
 * the like are ignored) and returns an HttpServer-like object.
 */
function captureServe(a?: unknown, b?: unknown): object {
  let options: Record<string, unknown> = {};
  let handler: unknown;
  if (typeof a === "function") handler = a;
  else if (a !== null && typeof a === "object") {
    options = a as Record<string, unknown>;
    handler = typeof b === "function" ? b : options.handler;
  }
  if (typeof handler !== "function") {
    throw new TypeErrorCtor(
      "Deno.serve() needs a handler: Deno.serve(handler), " +
        "Deno.serve(options, handler) or Deno.serve({ handler, ...options })",
    );
  }
  const path = options.path;
  const addr: Deno.Addr = typeof path === "string"
    ? { transport: "unix", path }
    : {
      transport: "tcp",
      hostname: typeof options.hostname === "string"
        ? options.hostname
        : "0.0.0.0",
      port: typeof options.port === "number" ? options.port : 8000,
    };
  let finish: () => void = noop;
  const finished = new FinishedPromise<void>((resolve) => {
    finish = () => resolve();
  });
  if (captured !== undefined || shapeChosen) {
    log("Deno.serve() called again or after loading: ignored");
  } else {
    const onListen = options.onListen;
    captured = {
      handler: handler as Fn,
      onListen: typeof onListen === "function" ? onListen as Fn : undefined,
      addr,
      finish,
    };
  }
  return fakeServer(addr, finished);
}

function serveInvoker(handler: Fn): Invoke {
  return (req, info) => answerWith(() => handler(req, info));
}

/** Calls the captured onListen once the runtime listens, as Deno would. */
function announceListening(): void {
  const c = captured;
  if (c === undefined || c.onListen === undefined) return;
  try {
    c.onListen(c.addr);
  } catch (e) {
    log(`Deno.serve() onListen threw: ${describe(e).detail}`);
  }
}

/** Installs the Deno.serve and addEventListener("fetch") hooks. */
function installHooks(): void {
  ObjectDefineProperty(Deno, "serve", {
    __proto__: null,
    value: captureServe,
    writable: true,
    enumerable: true,
    configurable: true,
  } as PropertyDescriptor);
  const add = function (
    this: unknown,
    type: unknown,
    listener: unknown,
    options?: unknown,
  ): void {
    if (type !== "fetch") {
      ReflectApply(EventTargetAddEventListener, this ?? globalThis, [
        type,
        listener,
        options,
      ]);
      return;
    }
    if (listener === null || listener === undefined) return;
    if (fetchListenerIndex(listener) < 0) {
      fetchListeners[fetchListeners.length] = listener;
    }
  };
  const remove = function (
    this: unknown,
    type: unknown,
    listener: unknown,
    options?: unknown,
  ): void {
    if (type !== "fetch") {
      ReflectApply(EventTargetRemoveEventListener, this ?? globalThis, [
        type,
        listener,
        options,
      ]);
      return;
    }
    const at = fetchListenerIndex(listener);
    if (at >= 0) ArrayPrototypeSplice(fetchListeners, at, 1);
  };
  defineData(globalThis, "addEventListener", add, false);
  defineData(globalThis, "removeEventListener", remove, false);
}

// ---- choosing the shape

interface Chosen {
  shape: Shape;
  invoke: Invoke;
}

const SHAPE_NAMES: Record<Shape, string> = bare({
  "default-function": "default export (function)",
  "default-object": "default export ({fetch})",
  svrless: "default export (svrless handler)",
  methods: "named method exports",
  "fetch-listener": 'addEventListener("fetch") listener',
  "deno-serve": "Deno.serve() handler",
});

/**
 * The handler to serve, by precedence. `mod` is undefined when the module
 * is still loading because it awaits the server's `finished`.
 */
function chooseShape(
  mod: Record<string, unknown> | undefined,
  localAddr: Deno.Addr,
): Chosen {
  shapeChosen = true;
  // No prototype: an index setter the module put on Array.prototype or
  // Object.prototype cannot swallow what is found.
  const found: Chosen[] = bare([]);
  let badDefault: string | undefined;
  if (mod !== undefined && "default" in mod) {
    const d = mod.default;
    if (typeof d === "function") {
      found[found.length] = {
        shape: looksSvrless(d as Fn) ? "svrless" : "default-function",
        invoke: functionInvoker(d as Fn, localAddr),
      };
    } else if (
      typeof d === "object" && d !== null &&
      typeof (d as { fetch?: unknown }).fetch === "function"
    ) {
      found[found.length] = {
        shape: "default-object",
        invoke: objectInvoker(d as { fetch: Fn }),
      };
    } else {
      badDefault = `the default export is ${typeName(d)}; expected a ` +
        "function or an object with a fetch(request) method";
    }
  }
  const methods = mod === undefined ? undefined : methodHandlers(mod);
  if (methods !== undefined) {
    found[found.length] = { shape: "methods", invoke: methodsInvoker(methods) };
  }
  if (fetchListeners.length > 0) {
    found[found.length] = {
      shape: "fetch-listener",
      invoke: fetchListenerInvoker(),
    };
  }
  if (captured !== undefined) {
    found[found.length] = {
      shape: "deno-serve",
      invoke: serveInvoker(captured.handler),
    };
  }
  if (found.length === 0) {
    throw new ErrorCtor(
      badDefault === undefined
        ? NO_HANDLER
        : `no handler: ${badDefault} (and there are no named method ` +
          "exports, fetch listener or Deno.serve() call)",
    );
  }
  const chosen = found[0];
  if (badDefault !== undefined) {
    log(`${badDefault}: ignored, serving the ${SHAPE_NAMES[chosen.shape]}`);
  }
  for (let i = 1; i < found.length; i++) {
    log(
      `also found a ${SHAPE_NAMES[found[i].shape]}: ignored, the ` +
        `${SHAPE_NAMES[chosen.shape]} takes precedence`,
    );
  }
  return chosen;
}

/**
 * Imports the module; settles early with `undefined` if the module awaits
 * its Deno.serve() server's `finished` (it would load only on shutdown).
 */
function loadModule(
  href: string,
): Promise<{ mod: Record<string, unknown> | undefined }> {
  const d = deferred<{ mod: Record<string, unknown> | undefined }>();
  // Wrapped: a module exporting `then` must not be taken for a thenable.
  PromisePrototypeThen(
    import(href),
    (mod: Record<string, unknown>) => d.resolve(bare({ mod })),
    (e: unknown) => d.reject(e),
  );
  // `.then` on `finished` is also how a module merely attaches a callback:
  // only a module still loading a macrotask later is taken as blocked on it.
  PromisePrototypeThen(serveAwaited.promise, () => {
    const blocked = () => d.resolve(bare({ mod: undefined })); // no-op once loaded
    try {
      setTimeoutFn(blocked, 0);
    } catch {
      blocked();
    }
  });
  return d.promise;
}

/** Message for a module load failure, phrased for the function's author. */
function loadErrorMessage(e: unknown): string {
  const d = describe(e);
  let msg = d.message;
  const hint = ", run again with the --allow-";
  const at = StringPrototypeIndexOf(msg, hint);
  const end = at < 0 ? -1 : StringPrototypeIndexOf(msg, " flag", at);
  if (end >= 0) {
    msg = StringPrototypeSlice(msg, 0, at) +
      " (not permitted in a Skiff function)" +
      StringPrototypeSlice(msg, end + " flag".length);
  }
  // Module graph errors (syntax, resolution) are TypeErrors whose message
  // says it all; other error classes (NotCapable, ...) are worth naming.
  const name = d.name;
  if (
    name !== undefined && name !== "Error" && name !== "TypeError" &&
    !StringPrototypeStartsWith(msg, name)
  ) {
    msg = `${name}: ${msg}`;
  }
  return msg;
}

// ---------------------------------------------------------------------------
// Main

function listenFailure(what: string, e: unknown): never {
  let hint = "";
  if (isError(e) && ObjectPrototypeIsPrototypeOf(NotCapablePrototype, e)) {
    hint = " (the address is refused by the sandbox, e.g. it is in --deny-net)";
  }
  fatal(EXIT_LISTEN, `cannot listen on ${what}: ${describe(e).message}${hint}`);
}

/** Every address of both families: on Linux an IPv6 wildcard socket also
 * takes IPv4 (as ::ffff:a.b.c.d) unless net.ipv6.bindv6only is set, which
 * no pod network sets. */
const ANY_HOST = "::";

/** `host:port`, an IPv6 host in brackets. */
function hostPort(hostname: string, port: number): string {
  return StringPrototypeIndexOf(hostname, ":") >= 0
    ? `[${hostname}]:${port}`
    : `${hostname}:${port}`;
}

/** EAFNOSUPPORT (97: a kernel without IPv6), EADDRNOTAVAIL (99: IPv6 off). */
function noIpv6(e: unknown): boolean {
  const m = describe(e).message;
  return StringPrototypeIndexOf(m, "os error 97") >= 0 ||
    StringPrototypeIndexOf(m, "os error 99") >= 0;
}

/** Deno.serve on TCP; the wildcard `[::]` falls back to 0.0.0.0 where the
 * kernel has no IPv6, so one command line serves IPv4-only, IPv6-only and
 * dual-stack pods. */
function serveTcp(
  options: Deno.ServeTcpOptions,
  handler: Deno.ServeHandler,
): Deno.HttpServer {
  try {
    return denoServe(options, handler);
  } catch (e) {
    if (options.hostname !== ANY_HOST || !noIpv6(e)) throw e;
    log(`no IPv6 here (${describe(e).message}): binding 0.0.0.0 instead`);
    options.hostname = "0.0.0.0";
    return denoServe(options, handler);
  }
}

function removeStaleSocket(path: string): void {
  try {
    if (denoLstatSync(path).isSocket) denoRemoveSync(path);
  } catch (e) {
    if (!(isError(e) && ObjectPrototypeIsPrototypeOf(NotFoundPrototype, e))) {
      throw e;
    }
  }
}

/** The path of a request URL (`http://host/p?q` → `/p`), without URL objects. */
function pathOf(url: string): string {
  const scheme = StringPrototypeIndexOf(url, "://");
  const start = StringPrototypeIndexOf(url, "/", scheme < 0 ? 0 : scheme + 3);
  if (start < 0) return "/";
  let end = url.length;
  const q = StringPrototypeIndexOf(url, "?", start);
  if (q >= 0) end = q;
  const h = StringPrototypeIndexOf(url, "#", start);
  if (h >= 0 && h < end) end = h;
  return StringPrototypeSlice(url, start, end);
}

/**
 * Exits when stdin reaches EOF: the platform holds it open, so EOF means it
 * is gone (even if it was SIGKILLed) and an orphan must not linger. With
 * `envFirst`, the first line is the function's env (`envLine`); any byte
 * after it is the go signal, as any byte is without it.
 */
function watchParent(
  envFirst: boolean,
): { go: Promise<void>; envLine: Promise<string> } {
  let go: () => void = () => {};
  const first = new Promise<void>((resolve) => go = resolve);
  let gotEnv: (line: string) => void = () => {};
  const envLine = new Promise<string>((resolve) => gotEnv = resolve);
  let pending: Uint8Array[] | undefined = envFirst ? [] : undefined;
  const buf = new Uint8ArrayCtor(65536);
  // Deno's Stdin.read() asks its buffer for `.length`, which a patched
  // TypedArray prototype would answer.
  ObjectDefineProperty(buf, "length", {
    __proto__: null,
    value: 65536,
  } as PropertyDescriptor);
  // Runs before the module is imported (the env is awaited first), so the
  // built-ins it uses are still the originals.
  const takeLine = (n: number): void => {
    const chunk = buf.slice(0, n);
    const nl = chunk.indexOf(10);
    pending!.push(nl < 0 ? chunk : chunk.subarray(0, nl));
    if (nl < 0) return;
    let size = 0;
    for (const p of pending!) size += p.length;
    const all = new Uint8ArrayCtor(size);
    let at = 0;
    for (const p of pending!) {
      all.set(p, at);
      at += p.length;
    }
    pending = undefined;
    gotEnv(new TextDecoder().decode(all));
    if (nl + 1 < n) go();
  };
  (async () => {
    try {
      let n: number | null;
      while ((n = await stdinRead(buf)) !== null) {
        if (pending !== undefined) takeLine(n);
        else go();
      }
    } catch { /* treat errors as EOF */ }
    log("platform gone (stdin closed): exiting");
    exitNow(0);
  })();
  return { go: first, envLine };
}

/** Stdout carries only the probe's JSON line: the module's console goes to stderr. */
function quietConsole(): void {
  const c = globalThis.console as unknown as Record<string, unknown>;
  const toStderr = c.error;
  const names = ["log", "info", "debug", "dir", "dirxml", "table"];
  for (let i = 0; i < names.length; i++) c[names[i]] = toStderr;
}

/**
 * --probe: imports the module exactly as serving would, prints ONE JSON line
 * naming its shape (or why it has none) and exits 0 without listening.
 */
async function probe(args: Args): Promise<never> {
  // The probe's cwd plays the instance dir's part: shown as `./`.
  try {
    hidePathsUnder(Deno.cwd(), "./");
  } catch { /* no read access to it: nothing to hide */ }
  quietConsole();
  // A module that reads its env at the top level loads at deploy too (it
  // sees no values then: the probe is given none).
  narrowDenoEnv(new Map());
  installHooks();
  let line: string;
  let loaded: { mod: Record<string, unknown> | undefined } | undefined;
  try {
    loaded = await loadModule(toFileUrl(args.module).href);
  } catch (e) {
    const message = JSONStringify(relativize(oneLine(loadErrorMessage(e))));
    line = `{"ok":false,"code":"module_failed","message":${message}}`;
  }
  if (loaded !== undefined) {
    try {
      const chosen = chooseShape(loaded.mod, { transport: "unix", path: "" });
      line = `{"ok":true,"shape":${JSONStringify(chosen.shape)}}`;
    } catch (e) {
      const message = JSONStringify(relativize(describe(e).message));
      line = `{"ok":false,"code":"no_handler","message":${message}}`;
    }
  }
  writeAll(stdoutWriteSync, `${line!}\n`);
  exitNow(0);
}

async function main(): Promise<void> {
  const args = parseArgs(Deno.args);
  hideHostPaths(args);
  if (args.probe) await probe(args);
  let ready = false;
  // The first byte on stdin is the platform's "go" (--wait-for-go): it has
  // put this process in its cgroup, and the module may run.
  const parent = args.exitWithParent || args.envFile === "-"
    ? watchParent(args.envFile === "-")
    : { go: Promise.resolve(), envLine: Promise.resolve("{}") };
  const go = parent.go;
  let healthPortServer: Deno.HttpServer | undefined;
  let healthSocketServer: Deno.HttpServer | undefined;
  let mainServer: Deno.HttpServer | undefined;

  // Registered before listening, so a SIGTERM right after "listening"
  // still drains gracefully (exit 0) and removes the unix socket.
  let stopping = false;
  // With --drain-secs (Kubernetes): after SIGTERM the runtime says "not
  // ready" but keeps accepting, for callers that still route here (a
  // Service's endpoints and kube-proxy learn of the stop late, and pooled
  // connections go on reaching this pod). Each answer then closes its
  // connection, so none is idle, and raced, when the listener closes.
  let draining = false;
  const close = () => {
    log("draining in-flight requests");
    const shutdowns = [
      healthPortServer?.shutdown(),
      healthSocketServer?.shutdown(),
      mainServer?.shutdown(),
    ];
    (async () => {
      for (let i = 0; i < 3; i++) {
        try {
          await shutdowns[i];
        } catch { /* already closed */ }
      }
      // Work handed to waitUntil() finishes before the instance goes (the
      // platform's grace period bounds it).
      if (waitingFor > 0) {
        log(`waiting for ${waitingFor} waitUntil() promise(s)`);
      }
      await waitUntilIdle();
      captured?.finish();
      exitNow(0);
    })();
  };
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    ready = false;
    if (args.drainSecs > 0 && mainServer !== undefined) {
      draining = true;
      log(`${signal}: not ready; serving ${args.drainSecs} s more`);
      setTimeoutFn(close, args.drainSecs * 1000);
    } else {
      log(`${signal}: stopping`);
      close();
    }
  };
  denoAddSignalListener("SIGTERM", () => stop("SIGTERM"));
  denoAddSignalListener("SIGINT", () => stop("SIGINT"));

  // Health listener first, so /healthz answers while the module loads and
  // /ready says 503 until the main listener is up.
  const health = (req: Request): Response => {
    let method = "";
    let path = "";
    try {
      method = RequestMethod(req);
      path = pathOf(RequestUrl(req));
    } catch { /* answer 405 below */ }
    if (method !== "GET" && method !== "HEAD") {
      return answer("method not allowed\n", INIT_405);
    }
    if (path === "/healthz") return answer("ok\n", INIT_200);
    if (path === "/ready") {
      return ready
        ? answer("ready\n", INIT_200)
        : answer("not ready\n", INIT_503);
    }
    return answer("not found\n", INIT_404);
  };
  if (args.healthPort !== undefined) {
    const options = bare({
      hostname: ANY_HOST,
      port: args.healthPort,
      onListen: (a: Deno.NetAddr) =>
        log(`health on ${hostPort(a.hostname, a.port)}`),
    });
    try {
      healthPortServer = serveTcp(options, health);
    } catch (e) {
      listenFailure(`health ${hostPort(options.hostname, options.port)}`, e);
    }
  }
  // Served by the same isolate as the function: if the function spins the
  // event loop, this stops answering too, which is how the platform tells a
  // stuck instance from a slow request.
  if (args.healthSocket !== undefined) {
    try {
      removeStaleSocket(args.healthSocket);
      healthSocketServer = denoServe(
        bare({ path: args.healthSocket, onListen: noop }),
        health,
      );
    } catch (e) {
      listenFailure(`health unix:${args.healthSocket}`, e);
    }
  }

  const listen = args.listen;
  const localAddr: Deno.Addr = listen.kind === "unix"
    ? { transport: "unix", path: listen.path }
    : { transport: "tcp", hostname: listen.hostname, port: listen.port };

  // Before the import: Deno's own error objects (a NotFound here) are built
  // with built-ins the module may break.
  if (listen.kind === "unix") {
    try {
      removeStaleSocket(listen.path);
    } catch (e) {
      listenFailure(`unix:${listen.path}`, e);
    }
  }

  // The function's code never runs before the platform says so (after the
  // process has joined its cgroup, which it does while Deno starts).
  if (args.envFile === "-") {
    takeFnEnv(await parent.envLine);
  } else if (args.envFile !== undefined) {
    takeFnEnv(readEnvFile(args.envFile));
  } else {
    narrowDenoEnv(new Map());
  }
  if (args.waitForGo) await go;

  installHooks();
  let invoke: Invoke;
  let shape: Shape;
  try {
    const loaded = await loadModule(toFileUrl(args.module).href);
    const chosen = chooseShape(loaded.mod, localAddr);
    invoke = chosen.invoke;
    shape = chosen.shape;
  } catch (e) {
    fatal(
      EXIT_MODULE,
      `cannot load function module ${args.module}: ${loadErrorMessage(e)}`,
    );
  }

  if (stopping) return; // SIGTERM arrived while the module was loading

  // From here on the user's module has run: only captured references.
  /** While draining: `r` closes its connection (a response whose headers
   * are immutable, e.g. a fetch() result passed on, keeps it open). */
  const closing = (r: Response): Response => {
    if (!draining) return r;
    try {
      HeadersSet(ResponseHeaders(r), "connection", "close");
      return shieldResponse(r);
    } catch { /* immutable headers, or a frozen Response */ }
    return r;
  };
  const handler = (
    req: Request,
    info: Deno.ServeHandlerInfo,
  ): Response | Promise<Response> => {
    let p: Promise<Response>;
    try {
      p = invoke(req, info);
    } catch (e) {
      return closing(functionError(e));
    }
    if (draining) p = PromisePrototypeThen(p, closing);
    return shieldPromise(p);
  };
  const onError = (e: unknown) => closing(functionError(e));

  try {
    if (listen.kind === "unix") {
      mainServer = denoServe(
        bare({
          path: listen.path,
          onError,
          onListen: () => {
            ready = true;
            log("listening");
            if (shape === "deno-serve") announceListening();
          },
        }),
        handler,
      );
    } else {
      mainServer = serveTcp(
        bare({
          hostname: listen.hostname,
          port: listen.port,
          onError,
          onListen: (a: Deno.NetAddr) => {
            if (localAddr.transport === "tcp") {
              localAddr.hostname = a.hostname;
              localAddr.port = a.port;
            }
            ready = true;
            log(`listening on tcp:${hostPort(a.hostname, a.port)}`);
            if (shape === "deno-serve") announceListening();
          },
        }),
        handler,
      );
    }
  } catch (e) {
    const where = listen.kind === "unix"
      ? `unix:${listen.path}`
      : `tcp:${hostPort(listen.hostname, listen.port)}`;
    listenFailure(where, e);
  }
}

await main();
