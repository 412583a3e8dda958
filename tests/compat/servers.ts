// The compatibility suite's local registries, all on loopback:
//   - Verdaccio (npm), with tests/compat/packages/* and the cached hono/zod tarballs published;
//   - a JSR-like static server built from tests/compat/jsr/ (what Deno reads from JSR_URL);
//   - a TLS module server for https: imports, serving tests/compat/https/, with a test CA
//     made here by openssl (trusted by Deno through DENO_CERT=<ca.pem>).
//
// Usage: deno run -A tests/compat/servers.ts --cache DIR --work DIR
// (run tests/compat/prepare.sh first; it fills DIR of --cache). Prints ONE JSON line
// on stdout once everything answers:
//   {"npm":"http://127.0.0.1:P/","jsr":"http://127.0.0.1:Q/","https_port":R,"ca":"<work>/tls/ca.pem"}
// and serves until stdin closes or SIGTERM/SIGINT; Verdaccio is stopped with it. The test
// harness also starts it in its own process group and kills the group when it is done.

import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

function arg(name: string): string {
  const i = Deno.args.indexOf(name);
  if (i < 0 || i + 1 >= Deno.args.length) {
    console.error(`usage: servers.ts --cache DIR --work DIR (missing ${name})`);
    Deno.exit(2);
  }
  return Deno.args[i + 1];
}

const cache = arg("--cache");
const work = arg("--work");
await Deno.mkdir(work, { recursive: true });

function log(msg: string) {
  console.error(`[compat-servers] ${msg}`);
}

async function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: Record<string, string> } = {},
) {
  const out = await new Deno.Command(cmd, {
    args,
    cwd: opts.cwd,
    env: opts.env,
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  if (!out.success) {
    const dec = new TextDecoder();
    throw new Error(
      `${cmd} ${args.join(" ")} failed:\n${dec.decode(out.stdout)}\n${dec.decode(out.stderr)}`,
    );
  }
}

async function* walk(dir: string): AsyncGenerator<string> {
  const entries = [];
  for await (const e of Deno.readDir(dir)) entries.push(e);
  entries.sort((a, b) => a.name.localeCompare(b.name));
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory) yield* walk(p);
    else if (e.isFile) yield p;
  }
}

async function sha256Hex(data: Uint8Array): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

// ---------------------------------------------------------------- TLS material
async function makeCerts(): Promise<{ ca: string; cert: string; key: string }> {
  const d = join(work, "tls");
  await Deno.mkdir(d, { recursive: true });
  const p = (f: string) => join(d, f);
  await run("openssl", [
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-days",
    "2",
    "-keyout",
    p("ca.key"),
    "-out",
    p("ca.pem"),
    "-subj",
    "/CN=skiff compat test CA",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  await run("openssl", [
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    p("server.key"),
    "-out",
    p("server.csr"),
    "-subj",
    "/CN=localhost",
  ]);
  await Deno.writeTextFile(
    p("ext.cnf"),
    "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n" +
      "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
  );
  await run("openssl", [
    "x509",
    "-req",
    "-in",
    p("server.csr"),
    "-CA",
    p("ca.pem"),
    "-CAkey",
    p("ca.key"),
    "-CAcreateserial",
    "-days",
    "2",
    "-out",
    p("server.pem"),
    "-extfile",
    p("ext.cnf"),
  ]);
  return { ca: p("ca.pem"), cert: p("server.pem"), key: p("server.key") };
}

// ---------------------------------------------------------------- JSR layout
// Deno reads, relative to JSR_URL: @scope/name/meta.json (versions), then
// @scope/name/<ver>_meta.json (manifest with sha256 checksums, exports), then the files
// at @scope/name/<ver>/<path>. Each version dir of tests/compat/jsr holds a jsr.json.
async function buildJsr(): Promise<Map<string, Uint8Array>> {
  const files = new Map<string, Uint8Array>();
  const root = join(here, "jsr");
  const enc = new TextEncoder();
  for await (const scope of Deno.readDir(root)) {
    if (!scope.isDirectory || !scope.name.startsWith("@")) continue;
    for await (const pkg of Deno.readDir(join(root, scope.name))) {
      if (!pkg.isDirectory) continue;
      const versions: Record<string, Record<string, never>> = {};
      const names: string[] = [];
      for await (const ver of Deno.readDir(join(root, scope.name, pkg.name))) {
        if (!ver.isDirectory) continue;
        const vdir = join(root, scope.name, pkg.name, ver.name);
        const cfg = JSON.parse(await Deno.readTextFile(join(vdir, "jsr.json")));
        const exports = typeof cfg.exports === "string" ? { ".": cfg.exports } : cfg.exports;
        const manifest: Record<string, { size: number; checksum: string }> = {};
        for await (const f of walk(vdir)) {
          const rel = "/" + relative(vdir, f);
          const bytes = await Deno.readFile(f);
          manifest[rel] = { size: bytes.length, checksum: `sha256-${await sha256Hex(bytes)}` };
          files.set(`/${scope.name}/${pkg.name}/${ver.name}${rel}`, bytes);
        }
        files.set(
          `/${scope.name}/${pkg.name}/${ver.name}_meta.json`,
          enc.encode(JSON.stringify({ manifest, exports })),
        );
        versions[ver.name] = {};
        names.push(ver.name);
      }
      names.sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
      files.set(
        `/${scope.name}/${pkg.name}/meta.json`,
        enc.encode(JSON.stringify({
          scope: scope.name.slice(1),
          name: pkg.name,
          latest: names[names.length - 1],
          versions,
        })),
      );
    }
  }
  return files;
}

function contentType(path: string): string {
  if (path.endsWith(".json")) return "application/json";
  if (path.endsWith(".ts") || path.endsWith(".mts")) return "application/typescript";
  if (path.endsWith(".js") || path.endsWith(".mjs")) return "application/javascript";
  return "application/octet-stream";
}

const requestLog: string[] = [];

function staticHandler(name: string, lookup: (path: string) => Promise<Uint8Array | undefined>) {
  return async (req: Request): Promise<Response> => {
    const path = decodeURIComponent(new URL(req.url).pathname);
    requestLog.push(`${name} ${req.method} ${path}`);
    if (Deno.env.get("COMPAT_SERVERS_VERBOSE")) log(`${name} ${req.method} ${path}`);
    const body = path.includes("..") ? undefined : await lookup(path);
    if (!body) return new Response("not found", { status: 404 });
    return new Response(req.method === "HEAD" ? null : body as Uint8Array<ArrayBuffer>, {
      headers: { "content-type": contentType(path) },
    });
  };
}

// ---------------------------------------------------------------- Verdaccio
async function packagesKey(): Promise<string> {
  // The published state depends on the package sources and the cached tarballs.
  const parts: string[] = [PUBLISHED_AT];
  for await (const f of walk(join(here, "packages"))) {
    parts.push(relative(here, f), await sha256Hex(await Deno.readFile(f)));
  }
  for await (const f of walk(join(cache, "tarballs"))) parts.push(relative(cache, f));
  return (await sha256Hex(new TextEncoder().encode(parts.join("\n")))).slice(0, 16);
}

// Deno (2.9) refuses npm versions younger than its minimum dependency age (24 h by
// default), and what was just published here is seconds old: the packuments' publish
// times are set back to a fixed old date, as a real registry's packages would be.
// Verdaccio reads these files on each request.
const PUBLISHED_AT = "2025-01-15T12:00:00.000Z";

async function backdate(storage: string) {
  for await (const f of walk(storage)) {
    if (!f.endsWith("/package.json")) continue;
    const doc = JSON.parse(await Deno.readTextFile(f));
    if (!doc.time) continue;
    for (const k of Object.keys(doc.time)) doc.time[k] = PUBLISHED_AT;
    await Deno.writeTextFile(f, JSON.stringify(doc));
  }
}

async function startVerdaccio(): Promise<{ url: string; child: Deno.ChildProcess }> {
  const bin = join(cache, "verdaccio/node_modules/verdaccio/bin/verdaccio");
  const storage = join(work, "storage");
  const key = await packagesKey();
  const snapshot = join(cache, `storage-${key}`);
  let warm = false;
  try {
    await Deno.stat(snapshot);
    await run("cp", ["-a", snapshot, storage]);
    warm = true;
  } catch {
    await Deno.mkdir(storage, { recursive: true });
  }
  const config = join(work, "verdaccio.yaml");
  // No uplinks: nothing is proxied, every package comes from what is published here.
  await Deno.writeTextFile(
    config,
    `storage: ${JSON.stringify(storage)}
auth:
  htpasswd:
    file: ${JSON.stringify(join(work, "htpasswd"))}
    max_users: 10
uplinks: {}
packages:
  '@*/*':
    access: $all
    publish: $authenticated
  '**':
    access: $all
    publish: $authenticated
web:
  enable: false
max_body_size: 100mb
log: { type: stdout, format: pretty, level: error }
`,
  );
  const port = freePort();
  const url = `http://127.0.0.1:${port}/`;
  const child = new Deno.Command("node", {
    args: [bin, "--config", config, "--listen", `127.0.0.1:${port}`],
    // Quiet about running as root (the test machines are root).
    env: { NODE_NO_WARNINGS: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  // Our stdout carries only the one JSON line: Verdaccio's log goes to stderr.
  child.stdout.pipeTo(Deno.stderr.writable, { preventClose: true }).catch(() => {});
  let exited = false;
  child.status.then(() => exited = true);
  for (let i = 0;; i++) {
    if (exited) throw new Error("verdaccio exited at start (its output is above)");
    try {
      const r = await fetch(`${url}-/ping`);
      await r.body?.cancel();
      if (r.ok) break;
    } catch { /* not listening yet */ }
    if (i > 600) throw new Error("verdaccio did not start within 60 s");
    await new Promise((r) => setTimeout(r, 100));
  }
  if (warm) {
    log(`verdaccio on ${url} (storage from the cache)`);
    return { url, child };
  }
  // A user to publish as: what `npm adduser` does.
  const r = await fetch(`${url}-/user/org.couchdb.user:compat`, {
    method: "PUT",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name: "compat", password: "compat-password" }),
  });
  const { token } = await r.json();
  if (!token) throw new Error(`verdaccio adduser: ${r.status}`);
  const npmrc = join(work, "npmrc");
  await Deno.writeTextFile(npmrc, `registry=${url}\n//127.0.0.1:${port}/:_authToken=${token}\n`);
  const env = { NPM_CONFIG_USERCONFIG: npmrc, NPM_CONFIG_REGISTRY: url };
  const targets: string[] = [];
  for await (const d of Deno.readDir(join(here, "packages"))) {
    if (d.isDirectory) targets.push(join(here, "packages", d.name));
  }
  for await (const t of Deno.readDir(join(cache, "tarballs"))) {
    if (t.name.endsWith(".tgz")) targets.push(join(cache, "tarballs", t.name));
  }
  // Published one by one: concurrent publishes race on verdaccio's package db.
  for (const t of targets) {
    await run("npm", [
      "publish",
      t,
      "--registry",
      url,
      "--access",
      "public",
      "--loglevel=error",
      "--tag",
      "latest",
    ], {
      env,
    });
  }
  await backdate(storage);
  // Another run may be making the same snapshot: each copies to its own name first.
  const tmp = `${snapshot}.tmp-${Deno.pid}`;
  await run("cp", ["-a", storage, tmp]);
  await Deno.rename(tmp, snapshot).catch(() => Deno.remove(tmp, { recursive: true }));
  log(`verdaccio on ${url} (published ${targets.length} packages)`);
  return { url, child };
}

// ---------------------------------------------------------------- main
const [tls, jsrFiles, verdaccio] = await Promise.all([makeCerts(), buildJsr(), startVerdaccio()]);

const jsrServer = Deno.serve(
  { hostname: "127.0.0.1", port: 0, onListen: () => {} },
  staticHandler("jsr", (p) => Promise.resolve(jsrFiles.get(p))),
);
const httpsRoot = join(here, "https");
const tlsServer = Deno.serve(
  {
    hostname: "127.0.0.1",
    port: 0,
    cert: await Deno.readTextFile(tls.cert),
    key: await Deno.readTextFile(tls.key),
    onListen: () => {},
  },
  staticHandler("https", (p) => Deno.readFile(join(httpsRoot, p)).catch(() => undefined)),
);

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  try {
    verdaccio.child.kill("SIGTERM");
  } catch { /* already gone */ }
  await Promise.allSettled([jsrServer.shutdown(), tlsServer.shutdown(), verdaccio.child.status]);
  Deno.exit(0);
}
Deno.addSignalListener("SIGTERM", stop);
Deno.addSignalListener("SIGINT", stop);
verdaccio.child.status.then((s) => {
  if (!stopping) {
    log(`verdaccio exited (${s.code})`);
    stop();
  }
});

console.log(JSON.stringify({
  npm: verdaccio.url,
  jsr: `http://127.0.0.1:${jsrServer.addr.port}/`,
  https_port: tlsServer.addr.port,
  ca: tls.ca,
}));

// Until stdin closes (the harness holds it open), then stop.
if (!Deno.args.includes("--no-stdin")) {
  const buf = new Uint8Array(64);
  while ((await Deno.stdin.read(buf)) !== null) { /* ignore input */ }
  await stop();
}
