// End-to-end tests for the Skiff client runtime.
//
// Every test spawns the REAL runtime (main.ts) as a subprocess with the Deno
// command line taken from ../deno-flags.txt, and talks to it over its unix
// socket. Run from the repo root:  deno test -A client-runtime/tests/

import assert from "node:assert/strict";

import {
  assertFunctionError,
  decoder,
  DENO,
  DENY_NET,
  DENY_NET_HEALTH,
  exists,
  exitOf,
  FIXTURES,
  freePort,
  Runtime,
  RUNTIME_DIR,
  sleep,
  start,
  StartOptions,
  withRuntime,
} from "./harness.ts";

// ---------------------------------------------------------------------------
// Handler shapes

Deno.test("shape (a): object with fetch() answers 200, `this` bound", async () => {
  await withRuntime({ fixture: "object_fetch.ts" }, async (rt) => {
    const res = await rt.fetch("/a/b");
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("x-shape"), "object");
    assert.equal(await res.text(), "hello from an object: /a/b");
    assert.match(rt.stderr, /^skiff-runtime: listening$/m);
    assert.equal(
      rt.stdout,
      "",
      "Deno's default 'Listening on' must not be printed",
    );
  });
});

Deno.test("shape (b): plain function returning a Response answers 200", async () => {
  await withRuntime({ fixture: "plain_function.ts" }, async (rt) => {
    const res = await rt.fetch("/b");
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("x-shape"), "function");
    assert.equal(await res.text(), "hello from a function: /b");
  });
});

Deno.test("shape (c): svrless handler answering via req.respondWith() gets 200", async () => {
  await withRuntime({ fixture: "svrless.ts" }, async (rt) => {
    const res = await rt.fetch("/c");
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("x-shape"), "svrless");
    assert.equal(await res.text(), "hello from svrless: /c (remote unix)");
  });
});

Deno.test("shape (c): respondWith() called after the handler returned, with a promise", async () => {
  await withRuntime({ fixture: "svrless_late.ts" }, async (rt) => {
    assert.deepEqual(await rt.text("/"), [200, "late svrless answer"]);
    assert.deepEqual(await rt.text("/again"), [200, "late svrless answer"]);
  });
});

// ---------------------------------------------------------------------------
// Pass-through

Deno.test("method, path, query, headers and a binary body pass through intact", async () => {
  await withRuntime({ fixture: "echo.ts" }, async (rt) => {
    const body = new Uint8Array(70_000);
    for (let i = 0; i < body.length; i++) body[i] = (i * 7 + (i >> 8)) & 0xff;
    const res = await rt.fetch(
      "/some/deep%20path/%C3%BC?x=1&y=%2F&x=2&empty=",
      {
        method: "PUT",
        headers: {
          "content-type": "application/x-skiff-test",
          "x-custom": "Hello, World",
          "x-multi": "a, b",
        },
        body,
      },
    );
    assert.equal(res.status, 200);
    const got = new Uint8Array(await res.arrayBuffer());
    assert.equal(got.length, body.length);
    assert.deepEqual(got, body);
    const meta = JSON.parse(decodeURIComponent(res.headers.get("x-echo")!));
    assert.equal(meta.method, "PUT");
    assert.equal(meta.path, "/some/deep%20path/%C3%BC");
    assert.equal(meta.query, "?x=1&y=%2F&x=2&empty=");
    assert.equal(meta.bodyLength, body.length);
    assert.equal(meta.headers["content-type"], "application/x-skiff-test");
    assert.equal(meta.headers["x-custom"], "Hello, World");
    assert.equal(meta.headers["x-multi"], "a, b");

    const res2 = await rt.fetch("/", { method: "DELETE" });
    const meta2 = JSON.parse(decodeURIComponent(res2.headers.get("x-echo")!));
    assert.equal(await res2.text(), "");
    assert.equal(meta2.method, "DELETE");
  });
});

// ---------------------------------------------------------------------------
// Errors

Deno.test("handler errors answer 500 function_error; the instance keeps serving", async () => {
  await withRuntime({ fixture: "errors.ts" }, async (rt) => {
    await assertFunctionError(
      await rt.fetch("/throw"),
      "boom: thrown by the handler",
    );
    assert.deepEqual(await rt.text("/"), [200, "fine"]);
    await assertFunctionError(
      await rt.fetch("/reject"),
      "boom: async rejection",
    );
    assert.deepEqual(await rt.text("/"), [200, "fine"]);
    await assertFunctionError(
      await rt.fetch("/string"),
      "handler returned string, expected a Response",
    );
    assert.deepEqual(await rt.text("/"), [200, "fine"]);
    // The error is logged with its stack.
    assert.match(
      rt.stderr,
      /function error: Error: boom: thrown by the handler\n\s+at .*errors\.ts/,
    );
    assert.ok(rt.running);
  });
});

Deno.test("svrless respondWith() given a rejecting promise answers 500", async () => {
  await withRuntime({ fixture: "svrless_reject.ts" }, async (rt) => {
    await assertFunctionError(
      await rt.fetch("/"),
      "respondWith promise rejected",
    );
    await assertFunctionError(
      await rt.fetch("/"),
      "respondWith promise rejected",
    );
    assert.ok(rt.running);
  });
});

Deno.test("stray async errors outside the handler do not kill the instance", async () => {
  await withRuntime({ fixture: "errors.ts" }, async (rt) => {
    assert.deepEqual(await rt.text("/stray"), [200, "stray errors scheduled"]);
    await rt.waitForStderr(/uncaught exception: Error: stray timer exception/);
    await rt.waitForStderr(
      /unhandled promise rejection: Error: stray rejection/,
    );
    await sleep(50);
    assert.ok(rt.running);
    assert.deepEqual(await rt.text("/"), [200, "fine"]);
    assert.deepEqual(await rt.text("/stray"), [200, "stray errors scheduled"]);
    assert.deepEqual(await rt.text("/"), [200, "fine"]);
  });
});

// ---------------------------------------------------------------------------
// Load failures

const LOAD_FAILURES: [string, StartOptions, RegExp][] = [
  ["syntax error", {
    source: "export default (req: Request) => {\n  return new Response(;\n",
  }, /SyntaxError: .*fn\.ts:2:/],
  ["missing import", { fixture: "import_error.ts" }, /does_not_exist\.ts/],
  ["remote import", { fixture: "remote_import.ts" }, /example\.com/],
  ["no default export", { fixture: "no_default.ts" }, /no handler: expected/],
  [
    "unsupported default export",
    { fixture: "bad_default.ts" },
    /default export is object/,
  ],
  [
    "sandbox error at top level",
    { fixture: "top_level_throw.ts" },
    /read access/,
  ],
];

Deno.test("a module that fails to load exits 78 with one skiff-runtime: line and no socket", async () => {
  await Promise.all(LOAD_FAILURES.map(async ([what, opts, detail]) => {
    const rt = await start({ ...opts, noWait: true });
    const status = await exitOf(rt);
    const socketExisted = await exists(rt.socket);
    await rt.stop();
    assert.equal(status.code, 78, `${what}: exit code; stderr:\n${rt.stderr}`);
    const lines = rt.stderr.split("\n").filter((l) =>
      l.startsWith("skiff-runtime: ")
    );
    assert.equal(lines.length, 1, `${what}: stderr:\n${rt.stderr}`);
    assert.match(
      lines[0],
      /^skiff-runtime: cannot load function module \w+\.ts: /,
      what,
    );
    assert.match(lines[0], detail, what);
    assert.equal(socketExisted, false, `${what}: socket must not be created`);
  }));
});

// ---------------------------------------------------------------------------
// Sandbox

function isPermissionError(
  o: { ok: boolean; name?: string; message?: string; cause?: string },
) {
  if (o.ok) return false;
  // Most APIs throw Deno.errors.NotCapable; fetch("http://localhost") wraps
  // the refusal in a TypeError whose cause says "Requires net access".
  return o.name === "NotCapable" ||
    /Requires \w+ access/.test(`${o.message} ${o.cause}`);
}

Deno.test("sandbox refuses files, env, subprocesses, sys and private networks", async () => {
  let hits = 0;
  const target = () => {
    hits++;
    return new Response("you should not see this");
  };
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    // Dual-stack, so 127.0.0.1 and [::1] would both reach it.
    server = Deno.serve({ hostname: "::", port: 0, onListen() {} }, target);
  } catch {
    server = Deno.serve(
      { hostname: "0.0.0.0", port: 0, onListen() {} },
      target,
    );
  }
  try {
    const port = server.addr.port;
    // Sanity: the target really is reachable from outside the sandbox.
    const probe = await fetch(`http://127.0.0.1:${port}/`);
    await probe.body?.cancel();
    assert.equal(probe.status, 200);
    hits = 0;

    await withRuntime({ fixture: "sandbox.ts" }, async (rt) => {
      const res = await rt.fetch(`/?port=${port}`);
      assert.equal(res.status, 200);
      const results = await res.json();
      const mustBeDenied = [
        "readPasswd",
        "writeCodeDir",
        "env",
        "envSet",
        "run",
        "sys",
        "listen",
        "fetch 127.0.0.1",
        "fetch 0.0.0.0",
        "fetch localhost",
        "fetch [::1]",
      ];
      for (const k of mustBeDenied) {
        assert.ok(
          isPermissionError(results[k]),
          `${k} must be a permission error: ${JSON.stringify(results[k])}`,
        );
      }
      assert.equal(
        results.readOwnModule.ok,
        true,
        "reading its own code dir is allowed",
      );
      assert.equal(hits, 0, "no request may reach the test's server");
      // The instance still answers the next request.
      const again = await rt.fetch(`/?port=${port}`);
      assert.equal(again.status, 200);
      await again.body?.cancel();
      assert.ok(rt.running);
    });
  } finally {
    await server.shutdown();
  }
});

Deno.test("canary: Deno 2.9.8 rejects IPv6 CIDRs in --deny-net", async () => {
  const rt = await start({
    fixture: "plain_function.ts",
    denyNet: `${DENY_NET},[fc00::]/7,[fe80::]/10`,
    noWait: true,
  });
  const status = await exitOf(rt);
  await rt.stop();
  assert.notEqual(status.code, 0);
  assert.match(rt.stderr, /invalid host: '\[fc00::\]\/7'/);
});

// ---------------------------------------------------------------------------
// Health listener, shutdown

Deno.test("--health-port serves /healthz at once and /ready only once loaded", async () => {
  const port = freePort();
  const health = async (path: string): Promise<[number, string]> => {
    const res = await fetch(`http://127.0.0.1:${port}${path}`);
    return [res.status, await res.text()];
  };
  const rt = await start({
    fixture: "slow_load.ts",
    healthPort: port,
    denyNet: DENY_NET_HEALTH,
    noWait: true,
  });
  try {
    await rt.waitForStderr(/skiff-runtime: health on \[::\]:\d+/);
    assert.deepEqual(await health("/healthz"), [200, "ok\n"]);
    // slow_load.ts takes 1.5 s to load: not ready, and no socket yet.
    assert.deepEqual(await health("/ready"), [503, "not ready\n"]);
    assert.equal(await exists(rt.socket), false);

    await rt.waitForStderr(/^skiff-runtime: listening$/m);
    assert.deepEqual(await health("/ready"), [200, "ready\n"]);
    assert.deepEqual(await health("/healthz"), [200, "ok\n"]);
    assert.equal((await health("/user-path"))[0], 404);
    // The user's own /ready goes to the function, not to the probe.
    assert.deepEqual(await rt.text("/ready"), [200, "loaded"]);
  } finally {
    await rt.stop();
  }
});

Deno.test("--health-port with [::] denied exits 71 with a clear error", async () => {
  const rt = await start({
    fixture: "plain_function.ts",
    healthPort: freePort(),
    noWait: true,
  });
  const status = await exitOf(rt);
  await rt.stop();
  assert.equal(status.code, 71, rt.stderr);
  assert.match(
    rt.stderr,
    /^skiff-runtime: cannot listen on health \[::\]:\d+: .*deny-net/m,
  );
});

Deno.test("SIGTERM drains, exits 0 and removes the socket", async () => {
  const rt = await start({ fixture: "plain_function.ts" });
  try {
    assert.equal(await exists(rt.socket), true);
    rt.proc.kill("SIGTERM");
    const status = await rt.status;
    assert.equal(status.code, 0, rt.stderr);
    assert.equal(await exists(rt.socket), false);
  } finally {
    await rt.stop();
  }
});

Deno.test("run.sh builds the same command line from deno-flags.txt and serves", async () => {
  const codeDir = await Deno.makeTempDir({ prefix: "skiff-code-" });
  const tmpDir = await Deno.makeTempDir({ prefix: "skiff-tmp-" });
  const socket = `${tmpDir}/fn.sock`;
  await Deno.copyFile(new URL("svrless.ts", FIXTURES), `${codeDir}/fn.ts`);
  const proc = new Deno.Command("/bin/sh", {
    args: [
      new URL("run.sh", RUNTIME_DIR).pathname,
      "--module",
      `${codeDir}/fn.ts`,
      "--listen",
      `unix:${socket}`,
    ],
    env: {
      SKIFF_DENO: DENO,
      SKIFF_CODE_DIR: codeDir,
      SKIFF_TMP_DIR: tmpDir,
      SKIFF_DENY_NET: DENY_NET,
      SKIFF_HEAP_MB: "64",
      NO_COLOR: "1",
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // Reuse the Runtime plumbing (it owns and removes the two dirs).
  const rt = new Runtime(proc, socket, [codeDir, tmpDir]);
  try {
    await rt.waitForStderr(/^skiff-runtime: listening$/m);
    assert.deepEqual(await rt.text("/via-run-sh"), [
      200,
      "hello from svrless: /via-run-sh (remote unix)",
    ]);
  } finally {
    await rt.stop();
  }
});

// ---------------------------------------------------------------------------
// Deploy-time type check recipe for svrless-era handlers

async function deployCheck(
  source: string,
  withEnv = true,
): Promise<[number, string]> {
  const dir = await Deno.makeTempDir({ prefix: "skiff-check-" });
  try {
    await Deno.writeTextFile(`${dir}/fn.ts`, source);
    if (withEnv) {
      await Deno.copyFile(
        new URL("svrless-env.d.ts", RUNTIME_DIR),
        `${dir}/skiff-env.d.ts`,
      );
      await Deno.writeTextFile(
        `${dir}/deno.json`,
        JSON.stringify({ compilerOptions: { types: ["./skiff-env.d.ts"] } }),
      );
    }
    const out = await new Deno.Command(DENO, {
      args: [
        "check",
        "--no-remote",
        "--no-npm",
        ...(withEnv ? ["--config", "deno.json"] : ["--no-config"]),
        "fn.ts",
      ],
      cwd: dir,
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    return [out.code, decoder.decode(out.stdout) + decoder.decode(out.stderr)];
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("deploy-time check: svrless and modern shapes pass, type errors fail", async () => {
  const fixture = (n: string) => Deno.readTextFile(new URL(n, FIXTURES));
  const typeError = `export default async function handler(
  { req }: { req: Deno.RequestEvent; conn?: Deno.Conn },
) {
  const n: number = req.request.url;
  await req.respondWith("not a response");
}
`;
  const [svr, late, obj, fn, bad, svrNoEnv] = await Promise.all([
    deployCheck(await fixture("svrless.ts")),
    deployCheck(await fixture("svrless_late.ts")),
    deployCheck(await fixture("object_fetch.ts")),
    deployCheck(await fixture("plain_function.ts")),
    deployCheck(typeError),
    deployCheck(await fixture("svrless.ts"), false),
  ]);
  assert.equal(svr[0], 0, svr[1]);
  assert.equal(late[0], 0, late[1]);
  assert.equal(obj[0], 0, obj[1]);
  assert.equal(fn[0], 0, fn[1]);
  assert.notEqual(bad[0], 0);
  assert.match(bad[1], /TS2322/); // string is not assignable to number
  assert.match(bad[1], /TS2345/); // respondWith("...") is not a Response
  // Without skiff-env.d.ts, Deno 2 has no Deno.RequestEvent.
  assert.notEqual(svrNoEnv[0], 0);
  assert.match(svrNoEnv[1], /RequestEvent/);
});

Deno.test("deploy-time check: the other platforms' shapes pass, a wrong respondWith fails", async () => {
  const fixture = (n: string) => Deno.readTextFile(new URL(n, FIXTURES));
  const listener = `addEventListener("fetch", (e) => {
  e.waitUntil(Promise.resolve());
  e.respondWith(new Response(e.request.url));
});
`;
  const results = await Promise.all([
    ...[
      "cf_object.ts",
      "default_fn_env.ts",
      "deno_serve.ts",
      "fetch_listener.ts",
      "methods.ts",
    ].map(async (n) => deployCheck(await fixture(n))),
    deployCheck(listener),
  ]);
  for (const [code, out] of results) assert.equal(code, 0, out);
  const bad = await deployCheck(listener.replace(
    "new Response(e.request.url)",
    "e.request.url",
  ));
  assert.notEqual(bad[0], 0);
  assert.match(bad[1], /TS2345/);
});

Deno.test("with --wait-for-go the function's module runs only after the platform's go on stdin", async () => {
  const rt = await start({
    source: 'console.log("module ran");\n' +
      'export default () => new Response("after go");\n',
    exitWithParent: true,
    waitForGo: true,
    healthSocket: true,
    noWait: true,
  });
  try {
    // The platform is still placing the process in its cgroup: nothing of
    // the function may run yet, and it does not listen.
    await sleep(700);
    assert.equal(rt.exited, undefined, rt.stderr);
    assert.ok(!rt.stdout.includes("module ran"), rt.stdout);
    assert.ok(!(await exists(rt.socket)), "listening before the go");
    await rt.writeStdin("g");
    await rt.waitForStderr(/^skiff-runtime: listening$/m);
    assert.ok(rt.stdout.includes("module ran"));
    assert.deepEqual(await rt.text("/"), [200, "after go"]);
  } finally {
    await rt.stop();
  }
});

Deno.test("with --wait-for-go a platform gone before the go ends the runtime without running the module", async () => {
  const rt = await start({
    source:
      'console.log("module ran");\nexport default () => new Response("x");\n',
    exitWithParent: true,
    waitForGo: true,
    noWait: true,
  });
  await rt.closeStdin();
  const status = await exitOf(rt);
  assert.equal(status.code, 0, rt.stderr);
  assert.ok(!rt.stdout.includes("module ran"), rt.stdout);
});
