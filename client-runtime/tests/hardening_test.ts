// Attacks on the runtime's own hooks and logs by the module it loads: the
// module shares the runtime's realm and may replace globals, patch
// prototypes, throw hostile values or close its stderr. Whatever it does, the
// runtime must still exit with its parent, answer its health socket, turn
// thrown errors into `500 function_error`, and log without host paths.
// Run from the repo root:  deno test -A client-runtime/tests/

import assert from "node:assert/strict";

import {
  assertFunctionError,
  exists,
  exitOf,
  Runtime,
  start,
  StartOptions,
  withRuntime,
} from "./harness.ts";

/** Runs `fn` on a runtime with --exit-with-parent and --health-socket. */
function withGuardedRuntime(
  opts: StartOptions,
  fn: (rt: Runtime) => Promise<void>,
): Promise<void> {
  return withRuntime({ ...opts, exitWithParent: true, healthSocket: true }, fn);
}

/** Closes stdin (the platform is gone) and expects a prompt exit 0. */
async function assertExitsWithParent(rt: Runtime): Promise<void> {
  assert.ok(rt.running, "still running before its stdin closes");
  // Data first: the runtime must read on after the module's patches, and
  // data is not the end.
  await rt.writeStdin("still here?\n");
  assert.deepEqual(await rt.health("/healthz"), [200, "ok\n"]);
  assert.deepEqual(await rt.health("/ready"), [200, "ready\n"]);
  assert.ok(rt.running, `exited on data, not on EOF:\n${rt.stderr}`);
  await rt.closeStdin();
  const status = await exitOf(rt);
  assert.equal(status.code, 0, rt.stderr);
  assert.match(
    rt.stderr,
    /^skiff-runtime: platform gone \(stdin closed\): exiting$/m,
  );
}

async function assertHealthAnswers(rt: Runtime): Promise<void> {
  assert.deepEqual(await rt.health("/healthz"), [200, "ok\n"]);
  assert.deepEqual(await rt.health("/ready"), [200, "ready\n"]);
  assert.deepEqual(await rt.health("/other"), [404, "not found\n"]);
  assert.deepEqual(await rt.health("/healthz", { method: "POST" }), [
    405,
    "method not allowed\n",
  ]);
}

// ---------------------------------------------------------------------------
// The runtime's hooks

Deno.test("a module that replaces Deno.exit, serve, signals, stdin and stderr still serves, logs and exits when its stdin closes", async () => {
  await withGuardedRuntime({ fixture: "replace_deno_hooks.ts" }, async (rt) => {
    assert.deepEqual(await rt.text("/"), [200, "still here"]);
    await assertFunctionError(await rt.fetch("/throw"), "boom");
    await assertHealthAnswers(rt);
    // The runtime's own log lines do not go through the replaced stderr.
    await rt.waitForStderr(/^skiff-runtime: function error: Error: boom$/m);
    await assertExitsWithParent(rt);
  });
});

Deno.test("a module that replaces the Deno hooks still drains and exits 0 on SIGTERM, removing its socket", async () => {
  const rt = await start({ fixture: "replace_deno_hooks.ts" });
  try {
    rt.proc.kill("SIGTERM");
    const status = await exitOf(rt);
    assert.equal(status.code, 0, rt.stderr);
    assert.equal(await exists(rt.socket), false);
  } finally {
    await rt.stop();
  }
});

Deno.test("a module that patches built-in prototypes cannot break health, error answers or exit with its parent", async () => {
  await withGuardedRuntime({ fixture: "patch_prototypes.ts" }, async (rt) => {
    // The promise constructor and species and Function.prototype.call stay
    // locked; the rest was patched.
    assert.deepEqual(await rt.text("/refused"), [
      200,
      "Promise.prototype.constructor;Promise[Symbol.species];call;",
    ]);
    await assertHealthAnswers(rt);
    await assertFunctionError(await rt.fetch("/throw"), "boom");
    await assertFunctionError(await rt.fetch("/async-throw"), "async boom");
    await assertFunctionError(
      await rt.fetch("/not-a-response"),
      "handler returned number, expected a Response",
    );
    // preventDefault is patched to a no-op: the runtime's own copy still keeps
    // a stray exception from killing the instance.
    assert.deepEqual(await rt.text("/stray"), [200, "stray scheduled"]);
    await rt.waitForStderr(
      /uncaught exception: Error: stray microtask exception/,
    );
    await rt.waitForStderr(
      /unhandled promise rejection: Error: stray rejection/,
    );
    assert.deepEqual(await rt.text("/"), [200, "fine"]);
    assert.match(rt.stderr, /^skiff-runtime: function error: Error: boom$/m);
    await assertExitsWithParent(rt);
  });
});

Deno.test("patched built-ins cannot break the other shapes' error answers, health or exit with the parent either", async () => {
  const source = await Deno.readTextFile(
    new URL("fixtures/patch_prototypes.ts", import.meta.url),
  );
  const head = "export default (req: Request): unknown => {";
  assert.ok(source.includes(head));
  const handler = source.replace(
    head,
    "const handle = (req: Request): unknown => {",
  );
  const shapes: [string, string][] = [
    ["methods", `${handler}\nexport const GET = handle;\n`],
    [
      "fetch listener",
      `${handler}\naddEventListener("fetch", (e: any) => e.respondWith(handle(e.request)));\n`,
    ],
    ["Deno.serve", `${handler}\nDeno.serve(handle as Deno.ServeHandler);\n`],
    [
      "fetch(req, env, ctx)",
      `${handler}\nexport default { fetch: (req: Request, _env: unknown, ctx: { waitUntil(p: unknown): void }) => { ctx.waitUntil(null); return handle(req); } };\n`,
    ],
  ];
  for (const [what, src] of shapes) {
    await withGuardedRuntime({ source: src }, async (rt) => {
      await assertHealthAnswers(rt);
      await assertFunctionError(await rt.fetch("/throw"), "boom");
      await assertFunctionError(await rt.fetch("/async-throw"), "async boom");
      assert.deepEqual(await rt.text("/"), [200, "fine"], what);
      await assertExitsWithParent(rt);
    });
  }
});

Deno.test("a module that patches built-in prototypes still drains and exits 0 on SIGTERM", async () => {
  const rt = await start({ fixture: "patch_prototypes.ts" });
  try {
    rt.proc.kill("SIGTERM");
    const status = await exitOf(rt);
    assert.equal(status.code, 0, rt.stderr);
    assert.equal(await exists(rt.socket), false);
  } finally {
    await rt.stop();
  }
});

Deno.test("a module that makes every object a never-settling thenable cannot capture health or error answers", async () => {
  await withGuardedRuntime({ fixture: "thenable_hijack.ts" }, async (rt) => {
    await assertHealthAnswers(rt);
    await assertFunctionError(await rt.fetch("/throw"), "boom");
    await assertFunctionError(
      await rt.fetch("/"),
      "handler returned string, expected a Response",
    );
    await assertExitsWithParent(rt);
  });
});

Deno.test("a module that tries to redefine the locked built-ins at top level fails to load, saying why", async () => {
  const cases: [string, string][] = [
    [
      "Object.defineProperty(Promise.prototype, 'constructor', { value: function () {} });",
      "Cannot redefine property: constructor",
    ],
    [
      "Promise.prototype.constructor = function () {} as PromiseConstructor;",
      "Cannot assign to read only property 'constructor'",
    ],
    [
      "Object.defineProperty(Promise, Symbol.species, { get: () => Object });",
      "Cannot redefine property: Symbol(Symbol.species)",
    ],
    [
      "Function.prototype.call = () => {};",
      "Cannot assign to read only property 'call'",
    ],
  ];
  await Promise.all(cases.map(async ([line, message]) => {
    const rt = await start({
      source: `${line}\nexport default () => new Response("x");\n`,
      noWait: true,
    });
    const status = await exitOf(rt);
    await rt.stop();
    assert.equal(status.code, 78, rt.stderr);
    assert.ok(rt.stderr.includes(message), rt.stderr);
  }));
});

Deno.test("an 'unload' listener that never returns does not keep an orphan alive", async () => {
  await withGuardedRuntime({
    source: "addEventListener('unload', () => {\n  for (;;) {}\n});\n" +
      "Deno.exit = (() => {}) as typeof Deno.exit;\n" +
      "export default () => new Response('x');\n",
  }, assertExitsWithParent);
});

Deno.test("a module that closes its stderr still gets error answers and exits with its parent", async () => {
  await withGuardedRuntime({ fixture: "closes_stderr.ts" }, async (rt) => {
    assert.deepEqual(await rt.text("/close-stderr"), [200, "closed"]);
    await assertFunctionError(
      await rt.fetch("/throw"),
      "boom after stderr closed",
    );
    await assertHealthAnswers(rt);
    await rt.closeStdin();
    assert.equal((await exitOf(rt)).code, 0);
  });
});

Deno.test("thrown values whose description is hostile still become 500 function_error", async () => {
  const expected: [string, string | RegExp][] = [
    ["/proxy", "unknown error (describing it threw)"],
    ["/revoked", "unknown error (describing it threw)"],
    ["/message-getter", "unknown error (describing it threw)"],
    ["/to-string", "unknown error (describing it threw)"],
    ["/symbol", "Symbol(thrown symbol)"],
    ["/null", "null"],
    ["/undefined", "undefined"],
    ["/fake-error", ""],
    ["/has-instance", "42"],
  ];
  await withGuardedRuntime({ fixture: "hostile_errors.ts" }, async (rt) => {
    for (const [path, message] of expected) {
      await assertFunctionError(await rt.fetch(path), message);
      assert.deepEqual(await rt.text("/"), [200, "fine"], path);
    }
    // A 1 MiB message is cut for the caller.
    const res = await rt.fetch("/huge");
    assert.equal(res.status, 500);
    const body = await res.json();
    assert.equal(body.error.code, "function_error");
    assert.equal(body.error.message, `${"x".repeat(4096)}…`);
    await assertHealthAnswers(rt);
    await assertExitsWithParent(rt);
  });
});

// ---------------------------------------------------------------------------
// No host paths in what the runtime prints or answers

/** Every spelling of the instance's dirs that must not be printed. */
function hostPathsOf(rt: Runtime): string[] {
  const out: string[] = [];
  for (const dir of rt.dirs) {
    out.push(dir, new URL(`file://${dir}`).href, encodeURI(dir));
  }
  return out;
}

function assertNoHostPaths(rt: Runtime, text: string, what: string) {
  for (const p of hostPathsOf(rt)) {
    assert.ok(!text.includes(p), `${what} shows ${p}:\n${text}`);
  }
}

// Dirs with a space and a '%' in their names: their file: URLs are
// percent-encoded, so both spellings must be hidden.
const ODD_DIRS = "skiff dir %41 ";

Deno.test("the runtime's log and answers show no host path: start, thrown errors with stacks, stray rejections", async () => {
  await withGuardedRuntime(
    { fixture: "host_paths.ts", dirPrefix: ODD_DIRS },
    async (rt) => {
      await assertFunctionError(await rt.fetch("/throw"), "boom");
      await assertFunctionError(
        await rt.fetch("/message"),
        "cannot open host_paths.ts or ./x",
      );
      assert.deepEqual(await rt.text("/stray"), [200, "scheduled"]);
      await rt.waitForStderr(/unhandled promise rejection: Error: stray from/);
      await assertExitsWithParent(rt);
      const log = rt.stderr;
      assertNoHostPaths(rt, log, "the log");
      assert.match(log, /^skiff-runtime: listening$/m);
      assert.match(log, /^ {4}at default \(host_paths\.ts:\d+:\d+\)$/m);
      assert.match(log, /^ {4}at handler \(<runtime>\/main\.ts:\d+:\d+\)$/m);
      assert.match(log, /stray from host_paths\.ts$/m);
    },
  );
});

Deno.test("load failures name the module and its lines without host paths", async () => {
  const failures: [StartOptions, RegExp][] = [
    [
      { source: "export default () => {\n  return new Response(;\n" },
      /^skiff-runtime: cannot load function module fn\.ts: SyntaxError: .* at fn\.ts:2:\d+$/m,
    ],
    [
      { fixture: "import_error.ts" },
      /^skiff-runtime: cannot load function module import_error\.ts: Module not found "does_not_exist\.ts"\.; at import_error\.ts:1:\d+$/m,
    ],
    [
      {
        source: "const f = () => {\n  throw new Error('at load');\n};\nf();\n",
      },
      /^skiff-runtime: cannot load function module fn\.ts: at load$/m,
    ],
    [
      {
        source: "await import(import.meta.resolve('./missing.ts'));\n" +
          "export default () => new Response('x');\n",
      },
      /^skiff-runtime: cannot load function module fn\.ts: Module not found "missing\.ts"\./m,
    ],
  ];
  await Promise.all(failures.map(async ([opts, line]) => {
    const rt = await start({ ...opts, dirPrefix: ODD_DIRS, noWait: true });
    const status = await exitOf(rt);
    await rt.stop();
    assert.equal(status.code, 78, rt.stderr);
    assert.match(rt.stderr, line);
    assertNoHostPaths(rt, rt.stderr, "a load failure");
  }));
});
