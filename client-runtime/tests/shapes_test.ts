// End-to-end tests of the handler shapes other platforms use (Cloudflare's
// fetch(req, env, ctx), Deno.serve(), service-worker fetch listeners, named
// method exports), their precedence, and the deploy-time --probe mode. Each
// spawns the real runtime, like runtime_test.ts.

import assert from "node:assert/strict";

import {
  assertFunctionError,
  exitOf,
  probe,
  start,
  StartOptions,
  withRuntime,
} from "./harness.ts";

// ---------------------------------------------------------------------------
// export default { fetch(req, env, ctx) }

Deno.test("fetch(req, env, ctx): answers with its status, headers and a streamed body; a throw is a 500", async () => {
  await withRuntime({ fixture: "cf_object.ts" }, async (rt) => {
    const res = await rt.fetch("/hello");
    assert.equal(res.status, 201);
    assert.equal(res.headers.get("x-shape"), "cf-object");
    assert.equal(await res.text(), "hello from fetch(req, env, ctx): /hello");

    const stream = await rt.fetch("/stream");
    assert.equal(stream.headers.get("x-shape"), "cf-object");
    assert.equal(
      await stream.text(),
      "chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n",
    );

    await assertFunctionError(
      await rt.fetch("/throw"),
      "boom from fetch(req, env, ctx)",
    );
    assert.deepEqual(await rt.text("/x"), [
      201,
      "hello from fetch(req, env, ctx): /x",
    ]);
  });
});

Deno.test("env holds exactly the function's variables from --env-file, and still carries info.remoteAddr", async () => {
  await withRuntime({
    fixture: "cf_object.ts",
    fnEnv: { API_KEY: "k-123", GREETING: "hi there" },
    otherEnv: { NOT_THE_FUNCTIONS: "secret of the host" },
  }, async (rt) => {
    const body = await (await rt.fetch("/env")).json();
    assert.deepEqual(body.keys.sort(), ["API_KEY", "GREETING"]);
    assert.deepEqual(body.env, { API_KEY: "k-123", GREETING: "hi there" });
    assert.equal(body.remote, "unix");
  });
});

Deno.test("--env-file - takes the env from stdin's first line, then the go byte, and stdin stays the lifeline", async () => {
  await withRuntime({
    fixture: "cf_object.ts",
    fnEnv: { API_KEY: "k-\n-1", GREETING: "hi" },
    envOnStdin: true,
    exitWithParent: true,
    noWait: true,
    waitForGo: true,
    otherEnv: { HOME: "/root" },
  }, async (rt) => {
    await rt.writeStdin("g");
    await rt.waitForStderr(/^skiff-runtime: listening$/m);
    const body = await (await rt.fetch("/env")).json();
    assert.deepEqual(body.env, { API_KEY: "k-\n-1", GREETING: "hi" });
  });
});

Deno.test("without an env (--deny-env) env is an empty object and the host's is unreadable", async () => {
  await withRuntime({
    fixture: "cf_object.ts",
    otherEnv: { HOME: "/root" },
  }, async (rt) => {
    const body = await (await rt.fetch("/env")).json();
    assert.deepEqual(body.keys, []);
    assert.equal(body.remote, "unix");
  });
});

Deno.test("ctx.waitUntil(): the work goes on after the response was sent", async () => {
  await withRuntime({ fixture: "cf_object.ts" }, async (rt) => {
    // The work can only finish after /release: its response came first.
    assert.deepEqual(await rt.text("/wait"), [200, "accepted"]);
    assert.deepEqual(await rt.text("/state"), [200, "working"]);
    assert.deepEqual(await rt.text("/release"), [200, "released"]);
    assert.deepEqual(await rt.text("/state"), [200, "done"]);
  });
});

Deno.test("ctx.waitUntil(): a rejection is logged, not fatal", async () => {
  await withRuntime({ fixture: "cf_object.ts" }, async (rt) => {
    assert.deepEqual(await rt.text("/wait-reject"), [200, "ok"]);
    await rt.waitForStderr(
      /waitUntil\(\) promise rejected: Error: background failure/,
    );
    assert.ok(rt.running);
    assert.deepEqual(await rt.text("/state"), [200, "idle"]);
  });
});

Deno.test("ctx.waitUntil(): SIGTERM waits for the pending work before exiting 0", async () => {
  const rt = await start({ fixture: "cf_object.ts" });
  try {
    assert.deepEqual(await rt.text("/wait-slow"), [200, "accepted"]);
    rt.proc.kill("SIGTERM");
    const status = await exitOf(rt);
    assert.equal(status.code, 0, rt.stderr);
    assert.match(rt.stderr, /waiting for 1 waitUntil\(\) promise/);
    assert.match(rt.stderr, /background work finished/);
  } finally {
    await rt.stop();
  }
});

Deno.test("a default-exported function gets (req, env, ctx) too", async () => {
  await withRuntime({
    fixture: "default_fn_env.ts",
    fnEnv: { GREETING: "hello" },
  }, async (rt) => {
    const body = await (await rt.fetch("/f")).json();
    assert.deepEqual(body, {
      path: "/f",
      keys: ["GREETING"],
      greeting: "hello",
      remote: "unix",
      waitedYet: false,
    });
  });
});

// ---------------------------------------------------------------------------
// Deno.serve(...)

Deno.test("Deno.serve(options, handler): served on the platform's socket; onListen once; the server object works", async () => {
  await withRuntime({ fixture: "deno_serve.ts" }, async (rt) => {
    const res = await rt.fetch("/p");
    assert.equal(res.headers.get("x-shape"), "deno-serve");
    assert.equal(await res.text(), "hello from Deno.serve: /p (remote unix)");
    const stream = await rt.fetch("/stream");
    assert.equal(await stream.text(), "part 0;part 1;part 2;");
    await assertFunctionError(
      await rt.fetch("/throw"),
      "boom from a Deno.serve handler",
    );
    assert.match(
      rt.stderr,
      /server\.addr is \{"transport":"tcp","hostname":"127\.0\.0\.1","port":8123\}/,
    );
    assert.equal(rt.stderr.match(/onListen called with/g)?.length, 1);
    assert.match(rt.stderr, /onListen called with \{"transport":"tcp"/);
    assert.equal(rt.stdout, "");
  });
});

const SERVE_VARIANTS: [string, string][] = [
  [
    "Deno.serve(handler)",
    `Deno.serve((req) => new Response("v1 " + new URL(req.url).pathname));`,
  ],
  [
    "Deno.serve({ handler, ...options })",
    `Deno.serve({ port: 0, handler: (req, info) =>
       new Response("v2 " + new URL(req.url).pathname + " " + info.remoteAddr.transport) });`,
  ],
  [
    "await Deno.serve(handler).finished at the top level",
    `const server = Deno.serve((req) => new Response("v3 " + new URL(req.url).pathname));
     await server.finished;
     export default () => new Response("never reached: the module is still loading");`,
  ],
];

Deno.test("Deno.serve: every call form serves, even one that awaits server.finished", async () => {
  for (const [what, source] of SERVE_VARIANTS) {
    await withRuntime({ source }, async (rt) => {
      const [status, body] = await rt.text("/q");
      assert.equal(status, 200, what);
      assert.match(body, /^v\d \/q/, what);
      if (body.startsWith("v2")) assert.equal(body, "v2 /q unix");
    });
  }
});

Deno.test("Deno.serve without a handler fails to load with exit 78", async () => {
  const rt = await start({
    source: `Deno.serve({ port: 8000 });`,
    noWait: true,
  });
  const status = await exitOf(rt);
  await rt.stop();
  assert.equal(status.code, 78, rt.stderr);
  assert.match(rt.stderr, /Deno\.serve\(\) needs a handler/);
});

// ---------------------------------------------------------------------------
// addEventListener("fetch", ...)

Deno.test('addEventListener("fetch"): respondWith a Response or a promise, streaming, errors, waitUntil', async () => {
  await withRuntime({ fixture: "fetch_listener.ts" }, async (rt) => {
    const res = await rt.fetch("/a", { method: "POST", body: "x" });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("x-shape"), "fetch-listener");
    assert.equal(
      await res.text(),
      "hello from a fetch listener: /a POST custom=true background=not started",
    );
    assert.deepEqual(await rt.text("/async"), [200, "later"]);
    assert.deepEqual(await rt.text("/stream"), [200, "ab"]);
    await assertFunctionError(
      await rt.fetch("/throw"),
      "boom from a fetch listener",
    );
    await assertFunctionError(
      await rt.fetch("/skip"),
      /no "fetch" listener called event\.respondWith\(\)/,
    );
    await (await rt.fetch("/wait")).text();
    assert.match((await rt.text("/b"))[1], /background=done$/);
  });
});

// ---------------------------------------------------------------------------
// Named method exports

Deno.test("named method exports: GET, POST, HEAD from GET, OPTIONS, 405 with Allow", async () => {
  await withRuntime({ fixture: "methods.ts" }, async (rt) => {
    const get = await rt.fetch("/g");
    assert.equal(get.headers.get("x-handler"), "GET");
    assert.equal(await get.text(), "GET /g");
    assert.deepEqual(await rt.text("/stream"), [200, "xyz"]);

    const post = await rt.fetch("/p", { method: "POST", body: "data" });
    assert.equal(post.status, 201);
    assert.equal(await post.text(), "POST got data");
    await assertFunctionError(
      await rt.fetch("/p", { method: "POST", body: "throw" }),
      "boom from POST",
    );

    const head = await rt.fetch("/g", { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get("x-handler"), "GET");
    assert.equal(head.headers.get("content-length"), "6");
    assert.equal(await head.text(), "");
    // A streamed GET body is dropped for HEAD.
    const headStream = await rt.fetch("/stream", { method: "HEAD" });
    assert.equal(await headStream.text(), "");

    const allow = "GET, POST, DELETE, HEAD, OPTIONS";
    const options = await rt.fetch("/g", { method: "OPTIONS" });
    assert.equal(options.status, 204);
    assert.equal(options.headers.get("allow"), allow);
    await options.body?.cancel();

    const put = await rt.fetch("/g", { method: "PUT", body: "x" });
    assert.equal(put.status, 405);
    assert.equal(put.headers.get("allow"), allow);
    const err = await put.json();
    assert.equal(err.error.code, "method_not_allowed");
    assert.match(err.error.message, /PUT is not allowed/);

    // DELETE is exported but returns a string: the usual 500.
    await assertFunctionError(
      await rt.fetch("/d", { method: "DELETE" }),
      "handler returned string, expected a Response",
    );
  });
});

// ---------------------------------------------------------------------------
// Precedence and no handler

const ALL_SHAPES = {
  def: `export default () => new Response("default");`,
  get: `export const GET = () => new Response("methods");`,
  listener:
    `addEventListener("fetch", (e) => e.respondWith(new Response("listener")));`,
  serve: `Deno.serve(() => new Response("serve"));`,
  // Only attaches a callback to `finished`: the module still loads.
  serveThen: `Deno.serve(() => new Response("serve"))
    .finished.then(() => console.error("finished"));`,
};

Deno.test("precedence: default export > named methods > fetch listener > Deno.serve", async () => {
  const cases: [string[], string][] = [
    [["def", "get", "listener", "serve"], "default"],
    [["get", "listener", "serve"], "methods"],
    [["listener", "serve"], "listener"],
    [["serve"], "serve"],
    [["def", "serveThen"], "default"],
    [["get", "serveThen"], "methods"],
  ];
  for (const [parts, winner] of cases) {
    const source = parts
      .map((p) => ALL_SHAPES[p as keyof typeof ALL_SHAPES])
      .join("\n");
    await withRuntime({ source }, async (rt) => {
      assert.deepEqual(await rt.text("/"), [200, winner], parts.join("+"));
      // The losers are named in the log.
      const ignored = rt.stderr.match(/: ignored, the .* takes precedence/g);
      assert.equal(ignored?.length ?? 0, parts.length - 1, rt.stderr);
    });
  }
});

Deno.test("an unsupported default export gives way to another shape, saying so", async () => {
  await withRuntime({
    source: `export default 42;\n${ALL_SHAPES.get}`,
  }, async (rt) => {
    assert.deepEqual(await rt.text("/"), [200, "methods"]);
    assert.match(
      rt.stderr,
      /the default export is number; .*: ignored, serving the named method exports/,
    );
  });
});

Deno.test("a module with no handler exits 78 naming every shape looked for", async () => {
  for (
    const opts of [
      { fixture: "no_default.ts" },
      { source: "export const get = () => new Response('lowercase');" },
    ] as StartOptions[]
  ) {
    const rt = await start({ ...opts, noWait: true });
    const status = await exitOf(rt);
    await rt.stop();
    assert.equal(status.code, 78, rt.stderr);
    assert.match(
      rt.stderr,
      /^skiff-runtime: cannot load function module \w+\.ts: no handler: expected a default export \(function or \{fetch\}\), named method exports \(GET, POST, …\), addEventListener\("fetch", …\) or a Deno\.serve\(…\) call at the top level$/m,
    );
  }
});

// ---------------------------------------------------------------------------
// /tmp

Deno.test("a function writes and reads back a file under /tmp when /tmp is one of its write dirs", async () => {
  const name = `skiff-shapes-${crypto.randomUUID()}`;
  await withRuntime(
    { fixture: "tmp_write.ts", extraWriteDirs: "/tmp" },
    async (rt) => {
      assert.deepEqual(await rt.text(`/?name=${name}`), [
        200,
        `written by the function: ${name}`,
      ]);
    },
  );
});

// ---------------------------------------------------------------------------
// --probe

Deno.test("--probe names each shape with one JSON line and exits 0 without listening", async () => {
  const cases: [StartOptions, string][] = [
    [{ fixture: "plain_function.ts" }, "default-function"],
    [{ fixture: "object_fetch.ts" }, "default-object"],
    [{ fixture: "cf_object.ts" }, "default-object"],
    [{ fixture: "svrless.ts" }, "svrless"],
    [{ fixture: "svrless_late.ts" }, "svrless"],
    [{ fixture: "methods.ts" }, "methods"],
    [{ fixture: "fetch_listener.ts" }, "fetch-listener"],
    [{ fixture: "deno_serve.ts" }, "deno-serve"],
    [{ source: SERVE_VARIANTS[2][1] }, "deno-serve"],
    [{ source: Object.values(ALL_SHAPES).join("\n") }, "default-function"],
    // Its console output must not mix with the JSON line.
    [{
      source: `console.log("hello from the top level");
               console.info({ a: 1 });
               ${ALL_SHAPES.get}`,
    }, "methods"],
  ];
  await Promise.all(cases.map(async ([opts, shape]) => {
    const out = await probe(opts);
    const what = `${opts.fixture ?? opts.source}: ${out.stdout}${out.stderr}`;
    assert.equal(out.code, 0, what);
    assert.equal(out.stdout, `{"ok":true,"shape":"${shape}"}\n`, what);
    assert.doesNotMatch(out.stderr, /listening/, what);
  }));
});

Deno.test("--probe reports no_handler and module_failed, without host paths", async () => {
  const [none, threw, syntax] = await Promise.all([
    probe({ fixture: "no_default.ts" }),
    probe({ fixture: "top_level_throw.ts" }),
    probe({ source: "export default (req) => {\n  return new Response(;\n" }),
  ]);
  for (const out of [none, threw, syntax]) {
    assert.equal(out.code, 0, out.stderr);
    assert.equal(out.stdout.split("\n").filter((l) => l).length, 1);
    assert.equal(out.json.ok, false);
    assert.doesNotMatch(out.stdout, /skiff-(code|runtime|tmp)-/);
  }
  assert.equal(none.json.code, "no_handler");
  assert.match(String(none.json.message), /^no handler: expected a default/);
  assert.equal(threw.json.code, "module_failed");
  assert.match(String(threw.json.message), /read access/);
  assert.equal(syntax.json.code, "module_failed");
  assert.match(String(syntax.json.message), /SyntaxError: .*fn\.ts:2:/);
});

Deno.test("--probe loads a module that reads its env at the top level (it sees none)", async () => {
  const out = await probe({
    source:
      'const api = Deno.env.get("API_URL") ?? "none";\nexport default () => new Response(api);\n',
  });
  assert.equal(out.code, 0, out.stderr);
  assert.deepEqual(out.json, { ok: true, shape: "default-function" });
});
