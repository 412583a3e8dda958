// The runtime as a Kubernetes pod runs it: a TCP listener on every address
// of both families, a probe port, and a drain after SIGTERM (--drain-secs)
// during which it says "not ready" but keeps serving, each answer closing
// its connection. Run from the repo root:  deno test -A client-runtime/tests/

import assert from "node:assert/strict";

import {
  decoder,
  DENY_NET_HEALTH,
  exitOf,
  freePort,
  start,
} from "./harness.ts";

/** One HTTP/1.1 exchange on a fresh TCP connection, read to the end. */
async function rawGet(
  hostname: string,
  port: number,
  path: string,
): Promise<string> {
  const conn = await Deno.connect({ hostname, port });
  try {
    await conn.write(
      new TextEncoder().encode(
        `GET ${path} HTTP/1.1\r\nhost: fn\r\n\r\n`,
      ),
    );
    let text = "";
    const buf = new Uint8Array(4096);
    // The runtime answers, then (draining) closes: read until EOF or the
    // whole body of a kept-alive answer arrived.
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += decoder.decode(buf.subarray(0, n));
      const end = text.indexOf("\r\n\r\n");
      const m = /content-length: (\d+)/i.exec(text);
      if (end >= 0 && m && text.length >= end + 4 + Number(m[1])) break;
    }
    return text;
  } finally {
    try {
      conn.close();
    } catch { /* closed */ }
  }
}

function hostHasIpv6(): boolean {
  try {
    Deno.listen({ hostname: "::1", port: 0 }).close();
    return true;
  } catch {
    return false;
  }
}

async function status(url: string): Promise<number> {
  const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  await res.body?.cancel();
  return res.status;
}

Deno.test("after SIGTERM with --drain-secs: not ready, still serving new connections (closing each), then exit 0", async () => {
  const port = freePort();
  const health = freePort();
  const rt = await start({
    fixture: "plain_function.ts",
    listen: `tcp:[::]:${port}`,
    healthPort: health,
    denyNet: DENY_NET_HEALTH,
    drainSecs: 2,
  });
  try {
    assert.equal(await status(`http://127.0.0.1:${health}/ready`), 200);
    const before = await rawGet("127.0.0.1", port, "/");
    assert.match(before, /^HTTP\/1\.1 200/);
    assert.doesNotMatch(before, /connection: close/i);

    rt.proc.kill("SIGTERM");
    await rt.waitForStderr(/SIGTERM: not ready; serving 2 s more/);
    // The kubelet's readiness probe fails at once...
    assert.equal(await status(`http://127.0.0.1:${health}/ready`), 503);
    // ...while a caller that still routes here is served, on a NEW
    // connection (the one kube-proxy would open), told to close it.
    const during = await rawGet("127.0.0.1", port, "/");
    assert.match(during, /^HTTP\/1\.1 200/);
    assert.match(during, /connection: close/i);
    assert.equal(rt.running, true, rt.stderr);

    const exit = await exitOf(rt);
    assert.equal(exit.code, 0, rt.stderr);
    assert.match(rt.stderr, /draining in-flight requests/);
    // Closed now: refused.
    await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port }));
  } finally {
    await rt.stop();
  }
});

Deno.test("without --drain-secs SIGTERM closes the listener at once (the process runtime's stop)", async () => {
  const port = freePort();
  const rt = await start({
    fixture: "plain_function.ts",
    listen: `tcp:[::]:${port}`,
    denyNet: DENY_NET_HEALTH,
  });
  try {
    rt.proc.kill("SIGTERM");
    const exit = await exitOf(rt);
    assert.equal(exit.code, 0, rt.stderr);
    assert.doesNotMatch(rt.stderr, /serving \d+ s more/);
  } finally {
    await rt.stop();
  }
});

Deno.test("--drain-secs out of range or not a number exits 64", async () => {
  for (const bad of ["601", "-1", "2s", ""]) {
    const rt = await start({
      fixture: "plain_function.ts",
      drainSecs: bad as unknown as number,
      noWait: true,
    });
    const exit = await exitOf(rt);
    await rt.stop();
    assert.equal(exit.code, 64, `${bad}: ${rt.stderr}`);
    assert.match(rt.stderr, /invalid --drain-secs/);
  }
});

Deno.test("tcp:[::] and the probe port answer on IPv4 and IPv6", async () => {
  const port = freePort();
  const health = freePort();
  const rt = await start({
    fixture: "plain_function.ts",
    listen: `tcp:[::]:${port}`,
    healthPort: health,
    denyNet: DENY_NET_HEALTH,
  });
  try {
    const hosts = ["127.0.0.1"];
    if (hostHasIpv6()) {
      assert.match(rt.stderr, /listening on tcp:\[::\]:\d+/);
      assert.match(rt.stderr, /health on \[::\]:\d+/);
      hosts.push("[::1]");
    } else {
      assert.match(rt.stderr, /no IPv6 here/);
    }
    for (const host of hosts) {
      assert.equal(await status(`http://${host}:${port}/`), 200, host);
      assert.equal(await status(`http://${host}:${health}/ready`), 200, host);
      assert.equal(await status(`http://${host}:${health}/healthz`), 200, host);
    }
  } finally {
    await rt.stop();
  }
});
